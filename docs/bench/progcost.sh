# In-kernel cost of each of pinwatch's BPF programs on the one-page futex
# wake, for builds side by side in one boot (issue 20, goal 6):
#   cargo xtask vm --kernel debian-6.12 --with /tmp/pw-a --with /tmp/pw-b \
#     --with docs/bench/progcost.sh 'BINS="pw-a pw-b pw-b:--no-callers" sh /bin/progcost.sh'
# BINS lists builds on the guest's PATH, each with `stat` flags after a
# colon (commas for spaces). For each round (the order reverses every other
# round) and build: start `stat`, read run_time_ns and run_cnt of every
# program descriptor the agent holds (kernel.bpf_stats_enabled), make N
# one-page futex wakes, read again; print ns per run of each program that
# ran at least N/2 times, and their sum. Each start waits SETTLE seconds
# first, so that the links the previous agent handed over are freed.
# An entry `fl:FUNCTION` runs libbpf-tools' funclatency on FUNCTION instead
# (carry it in with `--with /usr/sbin/funclatency`), measured the same way:
#   BINS="pw-a fl:get_user_pages_fast"
sysctl -q kernel.bpf_stats_enabled=1
N=${N:-20000}
snap() { for f in /proc/$1/fdinfo/*; do awk '/prog_tag/ {t=$2} /run_time_ns/ {r=$2} /run_cnt/ {c=$2} END {if (t != "") print t, r, c}' $f 2>/dev/null; done; }
for round in ${ROUNDS:-1 2 3}; do
  order="$BINS"; [ $((round % 2)) = 0 ] && order=$(echo $BINS | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}')
  [ -n "$order" ] || order="$BINS"
  for b in $order; do
    name=$(echo $b | cut -d: -f1); flags=$(echo $b | cut -d: -f2- | tr ',' ' '); [ "$flags" = "$name" ] && flags=""
    sleep ${SETTLE:-5}
    rm -f /tmp/e /tmp/o
    if [ "$name" = fl ]; then
      # Its "Tracing" line sits in a pipe's buffer: wait instead.
      funclatency -i 1 $(echo $b | cut -d: -f2-) > /tmp/e 2>&1 & P=$!
      sleep 4
    else
      $name stat --interval 60s $flags > /tmp/o 2>/tmp/e & P=$!
      until grep -q attached /tmp/e 2>/dev/null; do kill -0 $P 2>/dev/null || { cat /tmp/e; break; }; sleep 0.1; done
    fi
    snap $P > /tmp/s0
    pinwatch workload futex-wake --calls $N --pages 1 > /dev/null 2>&1
    snap $P > /tmp/s1
    awk -v n=$N 'NR==FNR {t[$1]=$2; c[$1]=$3; next} { dt=$2-t[$1]; dc=$3-c[$1]; if (dc > n/2) print $1, dc, int(dt/dc) }' /tmp/s0 /tmp/s1 > /tmp/d
    line="r$round $b:"; sum=0
    while read tag dc per; do nm=$(grep -m1 "bpf_prog_${tag}_" /proc/kallsyms | awk '{print $3}' | sed 's/bpf_prog_[0-9a-f]*_//'); line="$line $nm=$per"; sum=$((sum + per)); done < /tmp/d
    echo "$line sum=$sum"
    kill -INT $P; wait $P
  done
done
