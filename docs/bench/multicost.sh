# Start-up and cost per call of --attach kprobe-multi beside fentry and
# kprobe, in one boot (issue 20, goal 1):
#   cargo xtask vm --kernel debian-6.12 --with docs/bench/multicost.sh "sh /bin/multicost.sh"
# For each round and mechanism: seconds from exec to `stat`'s "attached"
# line, then the time of 20 000 one-page futex wakes (get_user_pages_fast,
# one page each) with that agent attached; "none" is the same workload
# untraced. Ratios only: this runs under qemu's TCG.
ROUNDS=${ROUNDS:-3}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
work() {
    pinwatch workload futex-wake --calls 20000 --pages 1 2>&1 | sed -n 's/.*, \([0-9.]* ms\)$/\1/p'
}
for round in $(seq "$ROUNDS"); do
    echo "round $round none: work $(work)"
    for m in fentry kprobe kprobe-multi; do
        s=$(uptime_s)
        pinwatch stat --attach "$m" --interval 60s > /tmp/out 2> /tmp/err &
        pid=$!
        until grep -q "attached" /tmp/err 2>/dev/null; do
            kill -0 $pid 2>/dev/null || break
            sleep 0.05
        done
        t=$(uptime_s)
        w=$(work)
        kill -INT $pid
        wait $pid
        echo "round $round $m: start $(echo "$t - $s" | bc) s, work $w"
    done
done
RUST_LOG=info pinwatch probes --attach kprobe-multi 2>&1 | grep -E "kprobe_multi programs|start-up"
