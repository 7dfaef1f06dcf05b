# Start time and in-kernel cost per call of the current build against a
# baseline build, side by side in one boot (issue 20, goals 1 and 6):
#   git worktree add /tmp/base BASE && (cd /tmp/base && cargo build --release -p pin-user)
#   cp /tmp/base/target/release/pinwatch /tmp/pw-base
#   cargo xtask vm --kernel debian-6.12 --with /tmp/pw-base --with docs/bench/startcost.sh "sh /bin/startcost.sh"
# For each round, mechanism and build (the order alternates by round): the
# seconds from exec to `stat`'s "attached" line, then the run time of the
# agent's BPF programs (kernel.bpf_stats_enabled, summed over its program
# descriptors) over 20 000 one-page futex wakes, per wake. Each start waits
# SETTLE seconds first, so that the links the previous agent handed to the
# kernel are freed before it: freeing trampolines beside an attach slowed
# that attach by 3-4 s in a first version without the wait.
sysctl -q kernel.bpf_stats_enabled=1
uptime_s() { cut -d' ' -f1 /proc/uptime; }
runtime() { # sum of run_time_ns over the agent's programs
  for f in /proc/$1/fdinfo/*; do grep -h '^run_time_ns' $f 2>/dev/null; done | awk '{s+=$2} END {print s+0}'
}
for round in 1 2 3; do
  for m in ${MODES:-fentry kprobe-multi}; do
    if [ $((round % 2)) = 1 ]; then order="pw-base pinwatch"; else order="pinwatch pw-base"; fi
    for b in $order; do
      sleep ${SETTLE:-8}
      # A stale "attached" line (the previous start's) would end the
      # wait below before this agent has even opened the file.
      rm -f /tmp/err
      s=$(uptime_s)
      $b stat --attach $m --interval 60s > /tmp/out 2> /tmp/err &
      pid=$!
      until grep -q "attached" /tmp/err 2>/dev/null; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
      t=$(uptime_s)
      r0=$(runtime $pid)
      pinwatch workload futex-wake --calls 20000 --pages 1 > /dev/null 2>&1
      r1=$(runtime $pid)
      kill -INT $pid; wait $pid
      echo "round $round $m $b: start $(echo "$t - $s" | bc) s, in-kernel $(( (r1 - r0) / 20000 )) ns/call"
    done
  done
done
