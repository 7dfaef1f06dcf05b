#!/bin/sh
# `pinwatch top` with default settings beside short-lived processes, side
# by side: the base build (/bin/pw-base) and this one (pinwatch), each in
# a tmux session of its own, both seeing the same children (one pinning
# call each). Per number of processes seen: each dashboard's CPU (utime +
# stime ticks over WINDOW s, 100 ticks = one CPU for 1 s) and VmRSS.
WINDOW=${WINDOW:-10}
export TERM=xterm
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
rss() { awk '/^VmRSS/ {print $2 " KiB"}' /proc/$1/status; }
tmux -L base new-session -d -s pw -x 160 -y 48 "/bin/pw-base top"
tmux -L new new-session -d -s pw -x 160 -y 48 "pinwatch top"
sleep 15
base=$(pidof pw-base); new=$(pidof pinwatch)
echo "dashboards: base $base, new $new"
seen=0
for level in 0 1000 10000 100000; do
  [ $level -gt $seen ] && pinwatch workload fork-writev --pages 1 --calls $((level - seen)) > /dev/null
  seen=$level
  sleep 3
  b0=$(ticks $base); n0=$(ticks $new)
  sleep $WINDOW
  b1=$(ticks $base); n1=$(ticks $new)
  echo "RESULT seen=$level base: ticks=$((b1 - b0)) rss=$(rss $base) | new: ticks=$((n1 - n0)) rss=$(rss $new)"
done
tmux -L new capture-pane -p -t pw | head -4
tmux -L base send-keys -t pw q; tmux -L new send-keys -t pw q
sleep 5
