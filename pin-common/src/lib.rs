//! Types shared by pinwatch's eBPF programs (`pin-ebpf`) and its agent
//! (`pin-user`): the catalogue of traced kernel functions, map value
//! layouts, the per-task bookkeeping the probes keep, the names of the
//! maps the agent opens ([`maps`]) and of the settings it gives the probes
//! ([`settings`]).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel side writes
//! these structures into BPF maps and the agent reads the same bytes back.
//! The `user` feature adds `aya::Pod` impls for the agent.
#![no_std]

pub mod attribution;
pub mod catalog;
pub mod counts;
pub mod failures;
pub mod limits;
pub mod maps;
pub mod release_hook;
pub mod settings;

pub use attribution::{CallerKey, CallerStats, PinRecord};
pub use catalog::{FUNC_COUNT, FUNCS, FuncId, FuncKind, GUP_FUNC_COUNT, NO_ARG};
pub use counts::{
    HEALTH_COUNT, Health, INSERTS_CALLERS, INSERTS_CGROUPS, INSERTS_FAILURES, INSERTS_LEN,
    INSERTS_PROCS, ProbeCounts,
};

/// Capacity of the per-process map (`PROCS`).
pub const PROCS_CAPACITY: u32 = 8192;

/// Capacity of the per-cgroup map (`CGROUPS`): cgroups that made a GUP
/// call or a release (a host runs hundreds of containers at most; the
/// coldest are evicted, and counted, beyond this).
pub const CGROUPS_CAPACITY: u32 = 1024;

/// Capacity of the per-thread state map of the baseline object (an LRU hash
/// by thread id where task local storage is missing): threads that ever
/// entered the GUP family and have not exited. Only a thread idle for the
/// longest is evicted, and its state then is that of no call.
pub const THREADS_CAPACITY: u32 = 16384;

/// Number of log2 latency buckets. Bucket `i` counts calls whose latency in
/// nanoseconds has its highest set bit at position `i` (bucket 0 also holds
/// 0 ns); the last bucket also takes everything slower (2^39 ns ≈ 9 min).
pub const LATENCY_BUCKETS: usize = 40;

/// Number of errno slots kept per variant. Linux errnos used by GUP are
/// below 134 (EHWPOISON is 133); anything larger lands in the last slot.
pub const ERRNO_SLOTS: usize = 136;

/// Returns the latency bucket for a duration in nanoseconds.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> usize {
    if ns == 0 {
        return 0;
    }
    let bit = 63 - ns.leading_zeros() as usize;
    if bit >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        bit
    }
}

/// Returns the errno slot for a positive errno value.
#[inline(always)]
pub fn errno_slot(errno: u64) -> usize {
    if errno >= ERRNO_SLOTS as u64 {
        ERRNO_SLOTS - 1
    } else {
        errno as usize
    }
}

/// Per-variant counters for outermost GUP calls, one per CPU in the
/// `GUP_STATS` per-CPU array (index = [`FuncId`] of the outermost function).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GupStats {
    /// Outermost calls that returned.
    pub calls: u64,
    /// Sum of `nr_pages` over calls with `nr_pages > 0`.
    pub pages_requested: u64,
    /// Sum of positive return values (pages returned).
    pub pages_returned: u64,
    /// Calls that returned `0 < ret < nr_pages`.
    pub partial: u64,
    /// Calls that returned exactly 0.
    pub zero: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    /// Fast-path calls that fell back to the slow path.
    pub fallbacks: u64,
    /// Pages taken by the lockless fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path after a fallback.
    pub slow_pages: u64,
    /// Sum of latencies in nanoseconds (for means).
    pub latency_sum_ns: u64,
    /// Largest latency seen on this CPU, in nanoseconds.
    pub latency_max_ns: u64,
    /// Outermost calls of this variant that were never counted because
    /// their return was not seen (a kretprobe out of instances, an exit
    /// program skipped by the kernel's recursion guard): found when the
    /// thread's next GUP call shows the state left behind to be stale.
    pub missed_returns: u64,
    /// log2 latency histogram, see [`latency_bucket`].
    pub latency_log2: [u64; LATENCY_BUCKETS],
    /// Error returns by errno, see [`errno_slot`].
    pub errno: [u64; ERRNO_SLOTS],
}

impl GupStats {
    /// All counters at zero.
    pub const ZERO: GupStats = GupStats {
        calls: 0,
        pages_requested: 0,
        pages_returned: 0,
        partial: 0,
        zero: 0,
        errors: 0,
        fallbacks: 0,
        fast_pages: 0,
        slow_pages: 0,
        latency_sum_ns: 0,
        latency_max_ns: 0,
        missed_returns: 0,
        latency_log2: [0; LATENCY_BUCKETS],
        errno: [0; ERRNO_SLOTS],
    };
}

/// Per-function counters for the release (unpin) family, one per CPU in the
/// `RELEASE_STATS` per-CPU array (index = [`FuncId`] minus [`GUP_FUNC_COUNT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReleaseStats {
    /// Outermost release calls made by callers of GUP.
    pub calls: u64,
    /// Pages released by them.
    pub pages: u64,
}

/// FOLL_PIN pages taken (outermost pin calls) and released (by callers,
/// not GUP itself), together in the one-element per-CPU `PIN_BALANCE` so
/// that a single read sees both at one instant per CPU. Taken from
/// `GUP_STATS` and `RELEASE_STATS`, two maps read many system calls apart,
/// their difference is off by whatever was pinned and released in between
/// (a phantom of hundreds of pages "held" when read under load).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinBalance {
    /// Pages returned by outermost FOLL_PIN calls.
    pub pinned: u64,
    /// Pages released by the unpin family, GUP's own releases excepted.
    pub released: u64,
    /// FOLL_PIN pages GUP released itself inside a get/pin call, undoing a
    /// grab it does not return (a rollback, a FOLL_LONGTERM migration
    /// retry), seen at `gup_put_folio`: the unpin functions GUP calls for
    /// them are inlined on 6.1 and 6.12. vmstat's `nr_foll_pin_acquired`
    /// is `pinned` plus these, `nr_foll_pin_released` is `released` plus
    /// these.
    pub gup_released: u64,
    /// Of `released`, the pages released in interrupt context (an O_DIRECT
    /// completion on a disk that completes from its interrupt): no process
    /// or cgroup made them, and the agent shows them as the `[irq]` rows.
    /// Counted here rather than in `PROCS` and `CGROUPS` rows of their own:
    /// two hash lookups fewer per page released that way.
    pub irq_released: u64,
}

impl PinBalance {
    /// FOLL_PIN pages taken and not yet released.
    pub fn outstanding(&self) -> i64 {
        self.pinned as i64 - self.released as i64
    }
}

/// Per-process counters in the `PROCS` LRU hash, keyed by tgid. One
/// entry shared by all CPUs, updated with atomic adds: a per-CPU entry
/// would cost capacity x possible CPUs of kernel memory (128 MiB at 256
/// CPUs) for what is contended only among one process's threads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// Outermost GUP calls made by the process.
    pub calls: u64,
    /// Pages returned to it by any GUP variant.
    pub pages: u64,
    /// Pages returned by FOLL_PIN variants (`pin_user_pages*`).
    pub pinned: u64,
    /// Pages released by the unpin family while running in the process.
    pub released: u64,
    /// The process's name: its thread group leader's comm, read when the
    /// entry is made and rewritten by the `task_rename` hook when the
    /// leader is renamed (exec, `PR_SET_NAME`, /proc/PID/comm).
    pub comm: [u8; 16],
    /// When the entry was created (ns, monotonic): tells the agent which
    /// entries a count of [`ProbeCounts::inserts`] already includes.
    pub first_ns: u64,
}

/// Per-cgroup counters in the `CGROUPS` LRU hash (shared by all CPUs,
/// atomic adds, as `PROCS`), keyed by the
/// cgroup v2 id of the task that made the call (`bpf_get_current_cgroup_id`).
/// Releases made in interrupt context have no row here: the agent shows
/// [`PinBalance::irq_released`] under [`IRQ_CGROUP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupStats {
    /// Outermost GUP calls made by tasks of the cgroup.
    pub calls: u64,
    /// Pages returned to them by any GUP variant.
    pub pages: u64,
    /// Pages returned by FOLL_PIN variants (`pin_user_pages*`).
    pub pinned: u64,
    /// Pages released by the unpin family while running in the cgroup.
    pub released: u64,
    /// Outermost calls that returned an errno.
    pub errors: u64,
    /// When the entry was created (ns, monotonic): as
    /// [`ProcStats::first_ns`].
    pub first_ns: u64,
}

/// The agent's cgroup key of releases made in interrupt context, shown as
/// `[irq]` (cgroup v2 ids start at 1, the root).
pub const IRQ_CGROUP: u64 = 0;

/// How the probes must interpret one traced function on the running
/// kernel, filled by the agent from the kernel's BTF into the
/// [`settings::GLOBAL_FUNC_CONFIGS`] table before the object is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuncConfig {
    /// 1 when the page count is a 32-bit `int` (sign-extend it).
    pub nr_is_int: u8,
    /// 1 when the return value is a 32-bit `int` (sign-extend it).
    pub ret_is_int: u8,
    /// 1 when this function takes FOLL_PIN references.
    pub is_pin: u8,
    /// 1 once the agent filled this entry (probes ignore unfilled ones).
    pub valid: u8,
    /// 1 when BTF confirms the start address and `gup_flags` sit where
    /// [`catalog::FuncInfo`] says: per-call events carry them only then.
    pub args_known: u8,
    /// 1 when BTF confirms the `pages` output array sits at
    /// [`catalog::FuncInfo::pages_arg`] (pin lifetimes need it).
    pub pages_known: u8,
    /// How many parameters the function has (BTF): where the fentry
    /// trampoline's frame starts, for the baseline object, which cannot
    /// ask `bpf_get_func_arg_cnt`.
    pub arg_count: u8,
    /// Explicit padding (keeps the layout free of uninitialised bytes).
    pub _pad: u8,
    /// The function's address (/proc/kallsyms; 0 when hidden): the frame
    /// and stack-walk checks of the baseline object, which cannot ask
    /// `bpf_get_func_ip`.
    pub addr: u64,
}

impl FuncConfig {
    /// A function not configured (`valid` 0: the probes ignore it).
    pub const UNSET: Self = Self {
        nr_is_int: 0,
        ret_is_int: 0,
        is_pin: 0,
        valid: 0,
        args_known: 0,
        pages_known: 0,
        arg_count: 0,
        _pad: 0,
        addr: 0,
    };
}

/// What a task is doing inside the GUP family, kept per thread in task
/// local storage (`TASK_STATES`). Only the kernel side uses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskState {
    /// How many traced GUP functions the task is inside.
    pub depth: u32,
    /// [`FuncId`] of the outermost GUP function.
    pub outer: u32,
    /// Entry time of the outermost call (ns, monotonic).
    pub start_ns: u64,
    /// `nr_pages` of the outermost call.
    pub nr: i64,
    /// Start address of the outermost call (0 when unknown).
    pub addr: u64,
    /// `gup_flags` of the outermost call as passed by its caller.
    pub flags: u64,
    /// Where the outermost call's frame sits on the kernel stack (the
    /// trampoline's context pointer for fentry, the stack pointer at entry
    /// for kprobes): a truly nested call always enters from deeper (a lower
    /// address), so an entry at or above it proves the state stale.
    pub outer_frame: u64,
    /// The word at `outer_frame` when the outermost call entered (0: not
    /// checked): while that call runs the word stays; once the stack is
    /// reused it changes, which proves the state stale even when a later
    /// call enters from deeper (the kernel randomises each system call's
    /// stack offset).
    pub outer_mark: u64,
    /// Return address of the outermost call (0 when unknown or off).
    pub caller: u64,
    /// The outermost call's `pages` output array (0 when unknown).
    pub pages: u64,
    /// Level (depth before entry, plus one) of the innermost fast-path
    /// function, 0 when not inside one.
    pub fast_level: u32,
    /// Level (plus one) of the slow call nested in the fast path, 0 if none.
    pub fallback_level: u32,
    /// `nr_pages` passed to the fast-path function.
    pub fast_nr: i64,
    /// Return value of the fast-path function.
    pub fast_ret: i64,
    /// `nr_pages` passed to the nested slow call (the fallback).
    pub fallback_nr: i64,
    /// Return value of the nested slow call.
    pub slow_ret: i64,
    /// Return value of the outermost call, once it returned: kept only for
    /// the probes' own use (a value the verifier does not track, see the
    /// return accounting).
    pub ret: i64,
    /// Where an fentry program's entry turns its context pointer into a
    /// plain number (see the probes' `frame::context_number`).
    pub ctx_number: u64,
    /// Whether the task is inside `unpin_user_pages_dirty_lock` (whose
    /// nested `unpin_user_pages` is part of the same release).
    pub release_depth: u32,
    /// Explicit padding.
    pub _release_pad: u32,
    /// The folio whose pins the thread's last folio release
    /// (`unpin_user_folio`, `unpin_folio`) ended at its entry (0: none):
    /// the release hook, where the compiler did not inline it into that
    /// function (6.12 did, 6.18 does not), must not end them again.
    pub direct_folio: u64,
    /// Where the thread's last release counted at the entry of a function
    /// that jumps to the release hook (`unpin_user_page`, `unpin_folio`)
    /// left its return address, in task context: the stack slot and the
    /// address (0s: none). The hook, entered by that jump with the same
    /// slot and address, does not count it again (see [`release_hook::ReleaseAtHook`];
    /// an interrupt's marks are the CPU's, `ReleaseAtHook::irq_marks`).
    pub hook_mark: [u64; 2],
}

/// The agent's process key of releases made in interrupt context, shown
/// as `[irq]` (no real tgid: pid_max is at most 2^22).
pub const IRQ_TGID: u32 = u32::MAX;

/// The name releases made in interrupt context go by: their row's and
/// their events' comm.
pub const IRQ_COMM: [u8; 16] = *b"[irq]\0\0\0\0\0\0\0\0\0\0\0";

/// Size of the per-call `EVENTS` ring buffer in bytes (a power of two and
/// a multiple of the page size); about 2700 [`CallEvent`]s.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Index in the `EVENT_FILTER` array: 1 when per-call events are wanted.
pub const EVENTS_ON: u32 = 0;
/// Index in the `EVENT_FILTER` array: only this thread id (0: any).
pub const EVENTS_TID: u32 = 1;
/// Index in the `EVENT_FILTER` array: only this process id (0: any).
pub const EVENTS_TGID: u32 = 2;
/// Number of `EVENT_FILTER` entries.
pub const EVENT_FILTER_LEN: u32 = 3;

/// [`CallEvent::kind`] of an outermost get/pin call.
pub const EVENT_GUP: u32 = 0;
/// [`CallEvent::latency_ns`] of a call whose return is not traced.
pub const LATENCY_UNMEASURED: u64 = u64::MAX;

/// [`CallEvent::kind`] of an outermost release (unpin) call.
pub const EVENT_RELEASE: u32 = 1;

/// One outermost call, sent through the `EVENTS` ring buffer when a
/// feature needs per-call data (`validate`, `trace`); never on by default.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvent {
    /// Entry time (ns, monotonic clock).
    pub start_ns: u64,
    /// Entry to return, in nanoseconds ([`LATENCY_UNMEASURED`] for
    /// releases, which are traced at entry only).
    pub latency_ns: u64,
    /// Caller's `pid_tgid` (thread id in the low half).
    pub pid_tgid: u64,
    /// Start address (get/pin calls whose arguments BTF confirmed, else 0).
    pub addr: u64,
    /// `nr_pages` as passed (get/pin), or pages released (release).
    pub nr: i64,
    /// `gup_flags` as passed by the caller ([`u64::MAX`] when unknown).
    pub flags: u64,
    /// Return value (get/pin; 0 for releases).
    pub ret: i64,
    /// Pages taken by the lockless fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path (the whole return for slow variants).
    pub slow_pages: u64,
    /// Return address in the caller (get/pin calls; 0 when unknown).
    pub caller: u64,
    /// The caller's cgroup v2 id ([`IRQ_CGROUP`] for releases made in
    /// interrupt context).
    pub cgroup: u64,
    /// [`FuncId`] of the outermost function.
    pub func: u32,
    /// [`EVENT_GUP`] or [`EVENT_RELEASE`].
    pub kind: u32,
    /// 1 when a fast-path call fell back to the slow path.
    pub fell_back: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The caller's comm.
    pub comm: [u8; 16],
}

/// Capacity of the followed-process set (`TRACKED`).
pub const TRACKED_CAPACITY: u32 = 65536;

/// Offset of `child_pid` in the `sched:sched_process_fork` tracepoint record
/// (stable since 2.6; checked on Debian 6.1 and 6.12).
pub const FORK_CHILD_PID_OFFSET: usize = 44;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] structs of integers and integer
    // arrays with no padding holes that could hold uninitialised bytes.
    unsafe impl aya::Pod for super::GupStats {}
    unsafe impl aya::Pod for super::ReleaseStats {}
    unsafe impl aya::Pod for super::PinBalance {}
    unsafe impl aya::Pod for super::ProbeCounts {}
    unsafe impl aya::Pod for super::release_hook::ReleaseAtHook {}
    unsafe impl aya::Pod for super::ProcStats {}
    unsafe impl aya::Pod for super::CgroupStats {}
    unsafe impl aya::Pod for super::FuncConfig {}
    unsafe impl aya::Pod for super::TaskState {}
    unsafe impl aya::Pod for super::CallEvent {}
    unsafe impl aya::Pod for super::CallerKey {}
    unsafe impl aya::Pod for super::CallerStats {}
    unsafe impl aya::Pod for super::PinRecord {}
    unsafe impl aya::Pod for super::failures::FailureKey {}
    unsafe impl aya::Pod for super::failures::FailureStats {}
    unsafe impl aya::Pod for super::limits::DenialKey {}
    unsafe impl aya::Pod for super::limits::Denial {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_log2() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(3), 1);
        assert_eq!(latency_bucket(1024), 10);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn errno_slots_clamp() {
        assert_eq!(errno_slot(14), 14);
        assert_eq!(errno_slot(133), 133);
        assert_eq!(errno_slot(4095), ERRNO_SLOTS - 1);
    }

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<FuncConfig>(), 16);
        assert_eq!(core::mem::size_of::<CallEvent>(), 8 * 11 + 4 * 4 + 16);
        assert_eq!(core::mem::size_of::<CgroupStats>(), 8 * 6);
        assert_eq!(
            core::mem::size_of::<GupStats>(),
            8 * (12 + LATENCY_BUCKETS + ERRNO_SLOTS)
        );
        assert_eq!(
            core::mem::size_of::<TaskState>(),
            4 * 2 + 8 * 8 + 4 * 2 + 8 * 6 + 4 * 2 + 8 + 8 * 2
        );
        assert_eq!(
            core::mem::size_of::<release_hook::ReleaseAtHook>(),
            8 + 16 * release_hook::RELEASE_RANGES + 16 * 2
        );
    }
}
