# In-kernel cost of every pinwatch program that runs during O_DIRECT I/O,
# per run, for builds one after the other in one boot (issue 20, goal 6:
# the per-page release path):
#   cargo xtask vm --kernel debian-6.12 --with /tmp/pw-a --with /tmp/pw-b \
#     --with docs/bench/perpage.sh 'BINS="pw-a pw-b pw-a pw-b" sh /bin/perpage.sh'
# By default N=200 reads of 256 pages from the ramdisk (brd), whose
# completions release the pages in the reading task; for completions in a
# timer interrupt, as real disks complete, write to null_blk (irqmode=2,
# loaded so by the VM's init) in two bios a call:
#   N=50 WL="odirect-write --file /dev/nullb0 --pages 512" BINS=... sh /bin/perpage.sh
# FLAGS are `stat`'s (e.g. FLAGS="--attach kprobe-multi"). For each build:
# start `stat`, read run_time_ns and run_cnt of every program descriptor it
# holds (kernel.bpf_stats_enabled), run the workload, read again; print each
# program that ran: runs, ns per run, ns per call.
sysctl -q kernel.bpf_stats_enabled=1
N=${N:-200}
snap() { for f in /proc/$1/fdinfo/*; do awk '/prog_tag/ {t=$2} /run_time_ns/ {r=$2} /run_cnt/ {c=$2} END {if (t != "") print t, r, c}' $f 2>/dev/null; done; }
for b in $BINS; do
  sleep ${SETTLE:-5}
  rm -f /tmp/e
  $b stat --interval 60s $FLAGS > /tmp/o 2>/tmp/e & P=$!
  until grep -q attached /tmp/e 2>/dev/null; do kill -0 $P 2>/dev/null || { cat /tmp/e; break; }; sleep 0.1; done
  snap $P > /tmp/s0
  pinwatch workload ${WL:-odirect-read --pages 256 --file /dev/ram0} --calls $N > /dev/null 2>&1 || echo workload failed
  snap $P > /tmp/s1
  awk 'NR==FNR {t[$1]=$2; c[$1]=$3; next} { dt=$2-t[$1]; dc=$3-c[$1]; if (dc > 0) print $1, dc, int(dt/dc), dt }' /tmp/s0 /tmp/s1 > /tmp/d
  echo "== $b"
  while read tag dc per dt; do nm=$(grep -m1 "bpf_prog_${tag}_" /proc/kallsyms | awk '{print $3}' | sed 's/bpf_prog_[0-9a-f]*_//'); echo "$nm runs=$dc ns/run=$per total/call=$((dt / N))"; done < /tmp/d
  kill -INT $P; wait $P
done
