//! The followed process tree (`record -- CMD`, `--pid`): whether the
//! current task is counted at all (`FILTER`, `TRACKED`), and the fork and
//! exit hooks that keep the tree current.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use aya_log_ebpf::warn;
use pin_common::Health;

use crate::{
    cgroup::in_chosen_cgroup,
    counters::bump_health,
    frame::context_address,
    maps::{FILTER, TRACKED},
    settings::{cgroup_filter_on, follow_on, fork_child_pid_offset},
};

/// Whether a process tree is being followed (`record -- CMD`): never
/// where the agent loaded the object not to (no lookup then).
#[inline(always)]
pub(crate) fn following() -> bool {
    follow_on() && matches!(FILTER.get(0), Some(&1))
}

/// Whether counting is limited to some tasks: a followed process tree, or
/// one cgroup (`--cgroup`).
#[inline(always)]
pub(crate) fn filtering() -> bool {
    following() || cgroup_filter_on()
}

/// Whether the current task is counted: always, unless a process tree is
/// being followed and this task is outside it, or one cgroup is chosen
/// and this task is outside it.
#[inline(always)]
pub(crate) fn counted() -> bool {
    if following() {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if unsafe { TRACKED.get(&tgid) }.is_none() {
            return false;
        }
    }
    in_chosen_cgroup()
}

/// `sched_process_fork`, in the parent: follow the child when the parent
/// is followed. A child of a parent outside the tree takes a pid that may
/// still be in `TRACKED` from a followed process that died (entries of
/// dead processes are pruned by the agent, not at exit): drop it, so a
/// reused pid is never counted.
#[inline(always)]
pub fn on_fork(ctx: &aya_ebpf::programs::TracePointContext) {
    if !following() {
        return;
    }
    let offset = fork_child_pid_offset();
    // The verifier allows only constant offsets into a tracepoint's
    // context: read the record through the helper from a plain address.
    let record = context_address(ctx);
    // SAFETY: reads kernel memory through the checked helper.
    let Ok(child) = (unsafe { bpf_probe_read_kernel((record + offset as u64) as *const u32) })
    else {
        return;
    };
    if !counted() {
        let _ = TRACKED.remove(&child);
        return;
    }
    if let Err(err) = TRACKED.insert(&child, &1, 0) {
        // Named here, once per lost child: the fork hook is small and
        // verified once, unlike the get/pin programs, whose table insert
        // failures are only counted (`account::proc_entry`).
        warn!(
            ctx,
            "pinwatch: cannot follow child {}: TRACKED insert failed ({})", child, err
        );
        bump_health(Health::TrackLost);
    }
}

/// `sched_process_exit`: forget an exiting thread that is not its
/// process's leader. A leader's exit does not end its process (the other
/// threads go on; a thread that execs takes over the leader's pid), so the
/// process stays followed until the agent sees it gone from /proc.
#[inline(always)]
pub fn on_exit() {
    if following() {
        let pid_tgid = bpf_get_current_pid_tgid();
        let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
        if tid != tgid {
            let _ = TRACKED.remove(&tid);
        }
    }
}
