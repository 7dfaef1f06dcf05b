//! Per-cgroup rows (`CGROUPS`, by the cgroup v2 id of the task that made
//! the call or release) and the `--cgroup` filter (`CGROUP_FILTER`): which
//! container pins how much, counted in the kernel like the per-process
//! rows, so a container's figures are exact however short-lived its
//! processes are.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
};
use pin_common::{CgroupStats, Health, INSERTS_CGROUPS, IRQ_CGROUP};

use crate::{
    counters::{EEXIST, add_to, bump_health, count_insert},
    maps::{CGROUP_FILTER, CGROUPS},
    settings::cgroup_filter_on,
};

/// Whether the current task is in the cgroup `--cgroup` chose or below
/// it; true when there is no such filter. The helper refuses to answer in
/// interrupt context (the interrupted task is not the caller): not in.
#[inline(always)]
pub(crate) fn in_chosen_cgroup() -> bool {
    !cgroup_filter_on() || matches!(CGROUP_FILTER.current_task_under_cgroup(0), Ok(true))
}

/// The cgroup id of the current task, or [`IRQ_CGROUP`] for `irq`.
#[inline(always)]
pub(crate) fn current_cgroup(irq: bool) -> u64 {
    if irq {
        IRQ_CGROUP
    } else {
        unsafe { bpf_get_current_cgroup_id() }
    }
}

/// The `CGROUPS` entry of cgroup `id`, created on first use; a failed
/// insert is counted (`cgroup_state_lost`), not logged, as in
/// `account::proc_entry`.
#[inline(always)]
fn entry(id: u64) -> Option<&'static mut CgroupStats> {
    if let Some(stats) = CGROUPS.get_ptr_mut(&id) {
        return Some(unsafe { &mut *stats });
    }
    let fresh = CgroupStats {
        first_ns: unsafe { bpf_ktime_get_ns() },
        ..CgroupStats::default()
    };
    // NOEXIST: another CPU may create the entry first; overwriting it
    // would zero the counts it added since.
    match CGROUPS.insert(&id, &fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => count_insert(INSERTS_CGROUPS),
        Err(err) if i64::from(err) == -EEXIST => {}
        Err(_) => {
            bump_health(Health::CgroupStateLost);
            return None;
        }
    }
    CGROUPS.get_ptr_mut(&id).map(|stats| unsafe { &mut *stats })
}

/// An outermost get/pin call that returned `ret`, in its cgroup's row.
#[inline(always)]
pub(crate) fn count_call(ret: i64, is_pin: bool) {
    if let Some(row) = entry(current_cgroup(false)) {
        add_to(&mut row.calls, 1);
        if ret > 0 {
            add_to(&mut row.pages, ret as u64);
            if is_pin {
                add_to(&mut row.pinned, ret as u64);
            }
        } else if ret < 0 {
            add_to(&mut row.errors, 1);
        }
    }
}

/// Full get calls added up elsewhere (a thread's pending counts, see
/// `pending`), in cgroup `id`'s row.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub(crate) fn add_calls(id: u64, calls: u64, pages: u64) {
    // Not made anew if evicted: see `account::add_to_process`.
    if let Some(row) = CGROUPS.get_ptr_mut(&id) {
        let row = unsafe { &mut *row };
        add_to(&mut row.calls, calls);
        add_to(&mut row.pages, pages);
    }
}

/// A release of `pages` pages, in the releasing cgroup's row (not for an
/// interrupt's: see `PinBalance::irq_released`).
#[inline(always)]
pub(crate) fn count_release(pages: u64) {
    if let Some(row) = entry(unsafe { bpf_get_current_cgroup_id() }) {
        add_to(&mut row.released, pages);
    }
}
