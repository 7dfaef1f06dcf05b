# Where a start's kernel time goes, by kernel function (issue 20, goal 1):
#   cargo xtask vm --kernel debian-6.12 --with /tmp/pw-a --with /usr/bin/bpftrace \
#     --with docs/bench/loadcost.sh 'BINS="pw-a" sh /bin/loadcost.sh'
# For each round and build in BINS (`probes` flags after a colon, commas
# for spaces; default `--attach fentry`): bpftrace times every function in
# FUNCS the kernel can trace (a kprobe and a kretprobe each) while the
# build runs `probes` once, and prints the build's start-up phases, then
# calls and summed time per function. The window (WINDOW seconds) holds the
# start and the stop, so code patches and grace periods of both count.
# The probes add their own cost to every call they time: compare calls,
# and time only of functions called a few hundred times or less.
FUNCS=${FUNCS:-"bpf_check do_misc_fixups bpf_patch_insn_single vzalloc_noprof bpf_int_jit_compile text_poke_copy text_poke_bp_batch synchronize_rcu_tasks bpf_trampoline_link_prog"}
[ -e /sys/kernel/tracing/available_filter_functions ] || mount -t tracefs none /sys/kernel/tracing
i=0; : > /tmp/loadcost.bt
for f in $FUNCS; do
  if grep -qx "$f" /sys/kernel/tracing/available_filter_functions; then
    echo "kprobe:$f { @s$i[tid] = nsecs; }" >> /tmp/loadcost.bt
    echo "kretprobe:$f /@s$i[tid]/ { @us[\"$f\"] = stats((nsecs - @s$i[tid]) / 1000); delete(@s$i[tid]); }" >> /tmp/loadcost.bt
    i=$((i + 1))
  else
    echo "not traceable here: $f"
  fi
done
echo "interval:s:${WINDOW:-20} { exit(); }" >> /tmp/loadcost.bt
for round in ${ROUNDS:-1 2}; do
  for b in $BINS; do
    name=$(echo $b | cut -d: -f1); flags=$(echo $b | cut -d: -f2- | tr ',' ' ')
    [ "$flags" = "$name" ] && flags="--attach fentry"
    sleep ${SETTLE:-6}
    timeout $((${WINDOW:-20} + 20)) bpftrace /tmp/loadcost.bt > /tmp/loadcost.out 2>&1 &
    sleep 8 # bpftrace's own attach
    echo "== round $round: $name $flags"
    $name probes $flags 2>&1 | grep 'start-up'
    wait
    grep '^@us' /tmp/loadcost.out | sed 's/^@us\[\(.*\)\]: count \([0-9]*\), average \([0-9]*\), total \([0-9]*\)/\1: \2 calls, \4 us summed/'
  done
done
