#!/bin/sh
# Attach cost: one kprobe_multi link (bpftrace wildcard) vs one kprobe per
# function (explicit list) vs one trampoline per function (fentry wildcard).
funcs=$(grep -E ' [tT] [a-z_]*user_pages[a-z_]*$' /proc/kallsyms | awk '{print $3}' | sort -u | while read f; do grep -qx "$f" /sys/kernel/tracing/available_filter_functions 2>/dev/null && echo $f; done)
n=$(echo $funcs | wc -w)
echo "FUNCS $n:" $funcs
list_k=$(for f in $funcs; do printf 'kprobe:%s,' $f; done | sed 's/,$//')
list_r=$(for f in $funcs; do printf 'kretprobe:%s,' $f; done | sed 's/,$//')
list_fe=$(for f in $funcs; do printf 'kfunc:%s,' $f; done | sed 's/,$//')
list_fx=$(for f in $funcs; do printf 'kretfunc:%s,' $f; done | sed 's/,$//')
now() { cut -d' ' -f1 /proc/uptime; }
t() {
  label=$1; prog=$2
  s=$(now)
  bpftrace -e "$prog BEGIN { printf(\"up\\n\"); exit(); }" > /tmp/bt.out 2>&1
  e=$(now)
  echo "RESULT $label $(echo "$e - $s" | bc) s; $(grep -c . /tmp/bt.out) lines; $(head -1 /tmp/bt.out)"
}
mount -t debugfs none /sys/kernel/debug 2>/dev/null
for i in 1 2 3; do
  t none "kprobe:get_user_pages_fast { @a = count(); }"; t kfunc_one "kfunc:get_user_pages_fast { @a = count(); }"
  t kprobe_multi "kprobe:*user_pages* { @a = count(); } kretprobe:*user_pages* { @b = count(); }"
  t kprobe_each "$list_k { @a = count(); } $list_r { @b = count(); }"
  t fentry_each "$list_fe { @a = count(); } $list_fx { @b = count(); }"
done
