#!/bin/sh
# Usage: cargo xtask vm --kernel debian-6.12 --with OLD --with NEW --with docs/bench/lifetime-race.sh "sh /bin/lifetime-race.sh /bin/NEW /bin/OLD" > log; python3 docs/bench/lifetime-race.py log
# Runs each given pinwatch build with --lifetimes beside two threads that
# pin and release the same 64 pages at once (stalled-readv), and prints
# its JSON intervals.
for round in 1 2; do
for pw in "$@"; do
  echo "== $pw round $round"
  $pw stat --lifetimes --json --interval 1s > /tmp/stat.json 2>/tmp/stat.err &
  P=$!
  i=0
  while ! grep -q "pinwatch: kernel" /tmp/stat.err; do
    sleep 0.5; i=$((i+1)); [ $i -gt 240 ] && break
  done
  /bin/pinwatch workload stalled-readv --threads 2 --calls 3000 --pages 64 --json
  sleep 2
  kill -INT $P; wait $P
  grep -c . /tmp/stat.json
  sed 's/^/JSON /' /tmp/stat.json
  tail -3 /tmp/stat.err
done
done
