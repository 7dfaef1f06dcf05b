#!/bin/sh
# Start and stop side by side: the base build and this one, alternating.
now() { cut -d' ' -f1 /proc/uptime; }
detaching() { for f in /proc/[0-9]*/stat; do case "$(cat $f 2>/dev/null)" in *"(pinwatch-detach) "[!Z]*) return 0;; esac; done; return 1; }
run() {
  bin=$1
  rm -f /tmp/out /tmp/err; t0=$(now)
  $bin stat --interval 1s > /tmp/out 2>/tmp/err & pid=$!
  while ! grep -q "pinwatch: kernel" /tmp/err /tmp/out 2>/dev/null; do sleep 0.02; done
  t1=$(now)
  sleep 1
  t2=$(now); kill -INT $pid; wait $pid; t3=$(now)
  while detaching; do sleep 0.02; done
  t4=$(now)
  echo "RESULT $bin start $(awk "BEGIN{print $t1-$t0}") stop $(awk "BEGIN{print $t3-$t2}") child-done $(awk "BEGIN{print $t4-$t2}")"
  sleep 6
}
for i in 1 2 3 4; do run /bin/pw-base; run pinwatch; done
