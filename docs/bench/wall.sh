# Wall clock per call of one workload under builds side by side in one
# boot, alternating (issue 20, goal 6), e.g. the per-page release path:
#   cargo xtask vm --kernel debian-6.12 --with /tmp/pw-a --with /tmp/pw-b \
#     --with docs/bench/wall.sh 'WORKLOAD="odirect-read --pages 256 --file /dev/ram0" \
#     BINS="none pw-a:--attach,kprobe-multi pw-b:--attach,kprobe-multi pw-b" sh /bin/wall.sh'
# BINS as in progcost.sh (builds on the guest's PATH, `stat` flags after a
# colon, commas for spaces); `none` runs the workload untraced. For each
# round (the order reverses every other round) and build: start `stat`,
# wait for "attached", run N calls of WORKLOAD (pinwatch workload's name
# and flags) and print the nanoseconds per call it reports. What a tracer
# adds is its figure less the untraced one of the same round; rounds
# scatter by 10-20 % under TCG, so compare medians over rounds.
N=${N:-2000}
for round in ${ROUNDS:-1 2 3}; do
  order="$BINS"; [ $((round % 2)) = 0 ] && order=$(echo $BINS | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}')
  for b in $order; do
    name=$(echo $b | cut -d: -f1); flags=$(echo $b | cut -d: -f2- | tr ',' ' '); [ "$flags" = "$name" ] && flags=""
    sleep ${SETTLE:-5}
    P=""
    if [ "$name" != none ]; then
      rm -f /tmp/e
      $name stat --interval 60s $flags > /tmp/o 2>/tmp/e & P=$!
      until grep -q attached /tmp/e 2>/dev/null; do kill -0 $P 2>/dev/null || { cat /tmp/e; break; }; sleep 0.1; done
    fi
    out=$(pinwatch workload ${WORKLOAD:-futex-wake --pages 1} --calls $N --json 2>/dev/null | tail -1)
    ns=$(echo "$out" | sed -n 's/.*"elapsed_ns":\([0-9]*\).*/\1/p')
    echo "r$round $b: ns/call=$((${ns:-0} / N))"
    [ -n "$P" ] && { kill -INT $P; wait $P; }
  done
done
