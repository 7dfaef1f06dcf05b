//! The kernel's memlock verdicts (`LIMIT_DENIALS`): at the return of a
//! function that decides whether a charge fits RLIMIT_MEMLOCK
//! (`__io_account_mem`, `io_account_mem`, `__account_locked_vm`,
//! `do_mlock`), a refusal is recorded with what the kernel compared: the
//! pages asked for, the charged counter (unchanged by a refused charge)
//! and the soft limit of the task whose limit applies. Refusals are rare, so the map is a shared hash, not a
//! per-CPU one.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
};
use pin_common::limits::{
    CHECK_ACCOUNT_LOCKED_VM, CHECK_IO_URING, CHECK_MLOCK, CheckArgs, Denial, DenialKey, ENOMEM,
    PAGE_SHIFT, RLIMIT_MEMLOCK, RLIMIT_SIZE, SHAPE_CTX_NR, SHAPE_MLOCK, SHAPE_MM_TASK,
};

use crate::{
    comm::current_comm,
    counters::add_to,
    frame::read_u64,
    maps::{CHECK_ARGS, LIMIT_DENIALS},
    settings::{LimitLayout, limit_layout},
};

/// The soft RLIMIT_MEMLOCK of `task`, in bytes, as `rlimit()` reads it
/// (`task->signal->rlim[RLIMIT_MEMLOCK].rlim_cur`).
#[inline(always)]
fn memlock_limit(task: u64, signal_off: u64, rlim_off: u64) -> u64 {
    let signal = read_u64(task + signal_off);
    if signal == 0 {
        return 0;
    }
    read_u64(signal + rlim_off + RLIMIT_MEMLOCK * RLIMIT_SIZE)
}

/// The arguments of a check at entry, from the probed function's first
/// argument `object` read as `shape` (`pin_common::limits::SHAPE_*`): the
/// address of the counter it charges and the task whose limit applies.
/// For `do_mlock` `object` is `start` and `pages` its `len` in bytes,
/// rounded out to whole pages as the kernel does.
/// `None` when there is nothing to charge (a NULL user: CAP_IPC_LOCK at
/// ring creation) or BTF did not give the layout (the agent then does
/// not attach the check).
#[inline(always)]
pub fn args(shape: u32, object: u64, pages: u64, task: u64) -> Option<CheckArgs> {
    let layout = limit_layout();
    let mut pages = pages;
    let (check, base, counter_off) = match shape {
        SHAPE_MM_TASK => (CHECK_ACCOUNT_LOCKED_VM, object, layout.mm_locked_vm),
        SHAPE_MLOCK => {
            if layout.task_mm == 0 {
                return None;
            }
            let page = (1u64 << PAGE_SHIFT) - 1;
            pages = ((object & page) + pages + page) >> PAGE_SHIFT;
            let mm = read_u64(task + layout.task_mm - 1);
            (CHECK_MLOCK, mm, layout.mm_locked_vm)
        }
        SHAPE_CTX_NR => {
            if layout.ctx_user == 0 || object == 0 {
                return None;
            }
            let user = read_u64(object + layout.ctx_user - 1);
            (CHECK_IO_URING, user, layout.user_locked_vm)
        }
        _ => (CHECK_IO_URING, object, layout.user_locked_vm),
    };
    if counter_off == 0 || base == 0 {
        return None;
    }
    Some(CheckArgs {
        counter: base + counter_off - 1,
        pages,
        task,
        check,
        _pad: 0,
    })
}

/// The check of `args` returned `ret`: a refusal (negative errno) is
/// recorded under (current process, check). `do_mlock`'s -ENOMEM is one
/// only when its pages on top of `mm->locked_vm` pass the limit: it also
/// returns -ENOMEM for a range with holes.
#[inline(always)]
pub fn returned(args: &CheckArgs, ret: i64) {
    if ret >= 0 {
        return;
    }
    let layout = limit_layout();
    let limit_bytes = if layout.task_signal == 0 || layout.signal_rlim == 0 {
        0
    } else {
        memlock_limit(args.task, layout.task_signal - 1, layout.signal_rlim - 1)
    };
    let counter = read_u64(args.counter);
    if args.check == CHECK_MLOCK
        && (ret != -ENOMEM
            || counter + args.pages <= limit_bytes >> PAGE_SHIFT
            || ipc_lock_capable(args.task, &layout))
    {
        return;
    }
    let key = DenialKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        check: args.check,
    };
    if LIMIT_DENIALS.get_ptr_mut(&key).is_none() {
        // NOEXIST: a refusal on another CPU may have created it first.
        let _ = LIMIT_DENIALS.insert(&key, &Denial::default(), u64::from(BPF_NOEXIST));
    }
    let Some(row) = LIMIT_DENIALS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a live entry of the map; the count is added atomically, the
    // rest describes the latest refusal (two refusals of one process at
    // the same instant may mix their fields, which the count still shows).
    let row = unsafe { &mut *row };
    add_to(&mut row.denials, 1);
    row.pages = args.pages;
    row.counter = counter;
    row.limit_bytes = limit_bytes;
    row.ret = ret;
    row.last_ns = unsafe { bpf_ktime_get_ns() };
    let (vm_pinned, vm_locked) = current_vm_counters(&layout);
    row.vm_pinned = vm_pinned;
    row.vm_locked = vm_locked;
    row.uid = bpf_get_current_uid_gid() as u32;
    row.comm = current_comm();
}

/// `CAP_IPC_LOCK`'s bit in `cred.cap_effective` (include/uapi/linux/capability.h).
const CAP_IPC_LOCK_BIT: u64 = 1 << 14;

/// Whether `task` holds CAP_IPC_LOCK, which lets `do_mlock` pass the
/// limit (its -ENOMEM is then an unmapped range). `kernel_cap_t` is one
/// `u64` from 6.3 and two `u32`s before, so the bit is in the first
/// eight bytes either way. A task with the bit in a user namespace is
/// not capable in the initial one: its refusals are missed, never made up.
#[inline(always)]
fn ipc_lock_capable(task: u64, layout: &LimitLayout) -> bool {
    if layout.task_cred == 0 || layout.cred_cap_effective == 0 {
        return true;
    }
    let cred = read_u64(task + layout.task_cred - 1);
    cred == 0 || read_u64(cred + layout.cred_cap_effective - 1) & CAP_IPC_LOCK_BIT != 0
}

/// The current task's `mm->pinned_vm` and `mm->locked_vm` (VmPin, VmLck),
/// in pages; 0 where BTF did not give the layout.
#[inline(always)]
fn current_vm_counters(layout: &LimitLayout) -> (u64, u64) {
    if layout.task_mm == 0 {
        return (0, 0);
    }
    // SAFETY: only its address is used, through the checked helper.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_u64(task + layout.task_mm - 1);
    if mm == 0 {
        return (0, 0);
    }
    let at = |offset: u64| {
        if offset == 0 {
            0
        } else {
            read_u64(mm + offset - 1)
        }
    };
    (at(layout.mm_pinned_vm), at(layout.mm_locked_vm))
}

/// kprobe half: keeps `args` for this thread until the kretprobe.
#[inline(always)]
pub fn stash(args: &CheckArgs) {
    let _ = CHECK_ARGS.insert(&bpf_get_current_pid_tgid(), args, 0);
}

/// kretprobe half: the arguments the kprobe kept, taken out.
#[inline(always)]
pub fn take_stashed() -> Option<CheckArgs> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out before the entry is deleted.
    let args = unsafe { CHECK_ARGS.get(&id) }.copied();
    if args.is_some() {
        let _ = CHECK_ARGS.remove(&id);
    }
    args
}
