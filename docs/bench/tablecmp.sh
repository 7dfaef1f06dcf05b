#!/bin/sh
# The agent's cost per per-process table entry, side by side: the base
# build (/bin/pw-base) and this one (pinwatch) run at once, each with its
# own PROCS table, and see the same short-lived children (one entry each).
# Per fill level: each agent's CPU (utime + stime ticks over WINDOW s of
# idle samples, 100 ticks = one CPU for 1 s), VmRSS and VmHWM. MAXPROCS
# sizes both tables (8192 is the default), LEVELS lists the fill levels.
WINDOW=${WINDOW:-10}
MAXPROCS=${MAXPROCS:-131072}
LEVELS=${LEVELS:-0 1000 10000 100000}
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
mem() { awk '/^VmRSS|^VmHWM/ {printf "%s=%s KiB ", $1, $2}' /proc/$1/status; }
/bin/pw-base stat --json --interval 1s --max-procs $MAXPROCS > /dev/null 2>/tmp/base.err & base=$!
pinwatch stat --json --interval 1s --max-procs $MAXPROCS > /dev/null 2>/tmp/new.err & new=$!
for f in /tmp/base.err /tmp/new.err; do
  while ! grep -q "pinwatch: kernel" $f 2>/dev/null; do sleep 0.1; done
done
filled=0
for level in $LEVELS; do
  [ $level -gt $filled ] && pinwatch workload fork-writev --pages 1 --calls $((level - filled)) > /dev/null
  filled=$level
  sleep 2
  b0=$(ticks $base); n0=$(ticks $new)
  sleep $WINDOW
  b1=$(ticks $base); n1=$(ticks $new)
  echo "RESULT entries=$level base: ticks=$((b1 - b0)) $(mem $base)| new: ticks=$((n1 - n0)) $(mem $new)"
done
kill -INT $base $new; wait
