//! What every probe does, independent of the attach mechanism: track each
//! thread's nesting inside the GUP family, and on the outermost return fold
//! the call into the per-CPU counters.
//!
//! The fentry/fexit and kprobe/kretprobe programs in `main.rs` only read
//! arguments and return values and call into here.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use aya_log_ebpf::warn;
use pin_common::{
    CallEvent, EVENT_GUP, EVENT_RELEASE, EVENTS_ON, EVENTS_TGID, EVENTS_TID, FuncConfig, FuncId,
    GUP_FUNC_COUNT, Health, LATENCY_UNMEASURED, ProcStats, TaskState,
    catalog::{RELEASE_NESTED, RELEASE_NESTING, is_fast},
    errno_slot, latency_bucket,
};

use crate::attribution;
use crate::maps::{
    CONFIG, EVENT_FILTER, EVENTS, FILTER, GUP_STATS, HEALTH, PROCS, RELEASE_STATS, TASK_STATES,
    TRACKED,
};

/// Deeper nesting than this means the state is stale (a return was missed);
/// real GUP nesting is at most four traced functions deep.
const MAX_DEPTH: u32 = 8;

/// Sign-extends a register that held a 32-bit `int`.
#[inline(always)]
fn widen(raw: u64, is_int: u8) -> i64 {
    if is_int != 0 {
        raw as u32 as i32 as i64
    } else {
        raw as i64
    }
}

#[inline(always)]
fn config(id: FuncId) -> Option<FuncConfig> {
    match CONFIG.get(id) {
        Some(l) if l.valid != 0 => Some(*l),
        _ => None,
    }
}

/// Counts one event the probes could not account.
#[inline(always)]
pub fn bump_health(which: Health) {
    add_health(which, 1);
}

/// Counts `by` events the probes could not account.
#[inline(always)]
pub fn add_health(which: Health, by: u64) {
    if let Some(counter) = HEALTH.get_ptr_mut(which as u32) {
        unsafe { *counter += by };
    }
}

/// The current thread's nesting state, created on first use when `create`.
#[inline(always)]
fn task_state(create: bool) -> Option<&'static mut TaskState> {
    let state = TASK_STATES.current(create);
    if state.is_none() && create {
        // Allocation failed or the kernel refused a recursive use of the
        // storage (a probe firing inside another probe's lookup).
        bump_health(Health::TaskStateLost);
    }
    state
}

#[inline(always)]
fn proc_stats(ctx: &impl EbpfContext) -> Option<&'static mut ProcStats> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(stats) = PROCS.get_ptr_mut(tgid) {
        return Some(unsafe { &mut *stats });
    }
    let mut fresh = ProcStats::default();
    if let Ok(comm) = bpf_get_current_comm() {
        fresh.comm = comm;
    }
    if let Err(err) = PROCS.insert(tgid, fresh, 0) {
        warn!(
            ctx,
            "pinwatch: cannot track process {}: PROCS insert failed ({})", tgid, err
        );
        bump_health(Health::ProcStateLost);
        return None;
    }
    PROCS.get_ptr_mut(tgid).map(|stats| unsafe { &mut *stats })
}

/// Whether the current task is counted: always, unless a process tree is
/// being followed and this task is outside it.
#[inline(always)]
fn counted() -> bool {
    match FILTER.get(0) {
        Some(&1) => {
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            unsafe { TRACKED.get(&tgid) }.is_some()
        }
        _ => true,
    }
}

/// `sched_process_fork`, in the parent: follow the child when the parent
/// is followed.
#[inline(always)]
pub fn on_fork(ctx: &aya_ebpf::programs::TracePointContext) {
    if !matches!(FILTER.get(0), Some(&1)) || !counted() {
        return;
    }
    let Ok(child) = (unsafe { ctx.read_at::<u32>(pin_common::FORK_CHILD_PID_OFFSET) }) else {
        return;
    };
    if TRACKED.insert(&child, &1, 0).is_err() {
        bump_health(Health::TrackLost);
    }
}

/// `sched_process_exit`: forget the exiting task.
#[inline(always)]
pub fn on_exit() {
    if matches!(FILTER.get(0), Some(&1)) {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = TRACKED.remove(&tid);
    }
}

/// Whether the current outermost call must also become a per-call event.
#[inline(always)]
fn event_wanted(pid_tgid: u64) -> bool {
    if !matches!(EVENT_FILTER.get(EVENTS_ON), Some(&1)) {
        return false;
    }
    let tid = EVENT_FILTER.get(EVENTS_TID).copied().unwrap_or(0);
    let tgid = EVENT_FILTER.get(EVENTS_TGID).copied().unwrap_or(0);
    (tid == 0 || tid == pid_tgid as u32) && (tgid == 0 || tgid == (pid_tgid >> 32) as u32)
}

/// Sends one per-call event, counting it in `HEALTH` when the ring is full.
#[inline(always)]
fn emit(event: CallEvent) {
    match EVENTS.reserve::<CallEvent>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => bump_health(Health::EventsLost),
    }
}

/// The argument registers of a get/pin call the probes read.
pub struct GupArgs {
    /// Page count.
    pub nr: u64,
    /// Start address.
    pub addr: u64,
    /// `gup_flags`.
    pub flags: u64,
    /// The `pages` output array (0 when the function has none).
    pub pages: u64,
}

/// Entry into get/pin function `id` with its argument registers.
#[inline(always)]
pub fn gup_entry(ctx: &impl attribution::DirectCaller, id: FuncId, args: GupArgs) {
    let GupArgs {
        nr: raw_nr,
        addr,
        flags,
        pages,
    } = args;
    if !counted() {
        return;
    }
    let Some(config) = config(id) else { return };
    let nr = widen(raw_nr, config.nr_is_int);
    let Some(state) = task_state(true) else {
        return;
    };
    if state.depth >= MAX_DEPTH {
        bump_health(Health::UnmatchedExit);
        state.depth = 0;
    }
    let level = state.depth + 1;
    if state.depth == 0 {
        state.outer = id;
        state.start_ns = unsafe { bpf_ktime_get_ns() };
        state.nr = nr;
        if config.args_known != 0 {
            state.addr = addr;
            state.flags = flags;
        } else {
            state.addr = 0;
            state.flags = u64::MAX;
        }
        state.pages = if config.pages_known != 0 { pages } else { 0 };
        state.caller = if attribution::callers_on() {
            attribution::find_caller(ctx)
        } else {
            0
        };
        state.fast_level = 0;
        state.fallback_level = 0;
        state.fast_ret = 0;
        state.slow_ret = 0;
    }
    if is_fast(id) {
        // The innermost fast function wins: the internal one nests in the
        // exported variant and is the one whose child is the fallback.
        state.fast_level = level;
        state.fast_nr = nr;
        state.fallback_level = 0;
    } else if state.fast_level != 0 && state.fallback_level == 0 && level == state.fast_level + 1 {
        state.fallback_level = level;
        state.fallback_nr = nr;
    }
    state.depth = level;
}

/// Return from get/pin function `id` with raw return register `raw_ret`.
#[inline(always)]
pub fn gup_exit(ctx: &impl EbpfContext, id: FuncId, raw_ret: u64) {
    if !counted() {
        return;
    }
    let Some(config) = config(id) else { return };
    let ret = widen(raw_ret, config.ret_is_int);
    let Some(state) = task_state(false) else {
        bump_health(Health::UnmatchedExit);
        return;
    };
    if state.depth == 0 {
        bump_health(Health::UnmatchedExit);
        return;
    }
    let level = state.depth;
    state.depth = level - 1;
    if level == state.fallback_level {
        state.slow_ret = ret;
    }
    if level == state.fast_level {
        state.fast_ret = ret;
    }
    if state.depth == 0 {
        account_call(ctx, state, ret);
    }
}

/// Pages taken by the fast and the slow path, and whether the call fell
/// back, for a call that went through the fast path (zeros otherwise).
#[inline(always)]
fn path_split(state: &TaskState) -> (u64, u64, bool) {
    if state.fast_level == 0 {
        return (0, 0, false);
    }
    if state.fallback_level != 0 {
        let fast = state.fast_nr - state.fallback_nr;
        let fast = if fast > 0 { fast as u64 } else { 0 };
        let slow = if state.slow_ret > 0 {
            state.slow_ret as u64
        } else {
            0
        };
        (fast, slow, true)
    } else if state.fast_ret > 0 {
        (state.fast_ret as u64, 0, false)
    } else {
        (0, 0, false)
    }
}

#[inline(always)]
fn account_call(ctx: &impl EbpfContext, state: &TaskState, ret: i64) {
    let outer = state.outer;
    if outer as usize >= GUP_FUNC_COUNT {
        return;
    }
    let Some(stats) = GUP_STATS.get_ptr_mut(outer) else {
        return;
    };
    let stats = unsafe { &mut *stats };
    let nr = state.nr;
    stats.calls += 1;
    if nr > 0 {
        stats.pages_requested += nr as u64;
    }
    if ret > 0 {
        stats.pages_returned += ret as u64;
        if ret < nr {
            stats.partial += 1;
        }
    } else if ret == 0 {
        stats.zero += 1;
    } else {
        stats.errors += 1;
        let slot = errno_slot(ret.unsigned_abs());
        if let Some(count) = stats.errno.get_mut(slot) {
            *count += 1;
        }
    }
    let (fast_pages, slow_pages, fell_back) = path_split(state);
    if fell_back {
        stats.fallbacks += 1;
    }
    stats.fast_pages += fast_pages;
    stats.slow_pages += slow_pages;
    let now = unsafe { bpf_ktime_get_ns() };
    let ns = now.saturating_sub(state.start_ns);
    let pid_tgid = bpf_get_current_pid_tgid();
    if event_wanted(pid_tgid) {
        // A slow variant's pages all come from the slow path.
        let slow_pages = if state.fast_level == 0 && ret > 0 {
            ret as u64
        } else {
            slow_pages
        };
        emit(CallEvent {
            start_ns: state.start_ns,
            latency_ns: ns,
            pid_tgid,
            addr: state.addr,
            nr: state.nr,
            flags: state.flags,
            ret,
            fast_pages,
            slow_pages,
            func: outer,
            kind: EVENT_GUP,
            caller: state.caller,
            fell_back: fell_back as u32,
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or_default(),
        });
    }
    stats.latency_sum_ns += ns;
    if ns > stats.latency_max_ns {
        stats.latency_max_ns = ns;
    }
    let latency_slot = latency_bucket(ns);
    if let Some(count) = stats.latency_log2.get_mut(latency_slot) {
        *count += 1;
    }
    let is_pin = config(outer).is_some_and(|l| l.is_pin != 0);
    if attribution::callers_on() {
        attribution::account_caller(
            state,
            ret,
            ns,
            fast_pages,
            slow_pages,
            fell_back,
            latency_slot,
        );
    }
    if is_pin && attribution::lifetimes_on() {
        attribution::remember_pins(state, ret, now);
    }

    if let Some(proc) = proc_stats(ctx) {
        // Refreshed on every call: a process's first GUP calls are often
        // exec copying its arguments, under the parent's comm.
        if let Ok(comm) = bpf_get_current_comm() {
            proc.comm = comm;
        }
        proc.last_ns = now;
        proc.calls += 1;
        if ret > 0 {
            proc.pages += ret as u64;
            if is_pin {
                proc.pinned += ret as u64;
            }
        }
    }
}

/// Entry into release function `id` releasing `pages` pages: counted here,
/// since releases (but one) are traced at entry only; their cost grows
/// with every page an O_DIRECT completion releases one by one.
#[inline(always)]
pub fn release_entry(ctx: &impl EbpfContext, id: FuncId, pages: u64) {
    if !counted() {
        return;
    }
    if config(id).is_none() {
        return;
    }
    if id == RELEASE_NESTED {
        // Part of an `unpin_user_pages_dirty_lock` already counted.
        if task_state(false).is_some_and(|state| state.release_depth != 0) {
            return;
        }
    } else if id == RELEASE_NESTING
        && let Some(state) = task_state(true)
    {
        state.release_depth = 1;
    }
    let index = id.wrapping_sub(GUP_FUNC_COUNT as u32);
    if let Some(stats) = RELEASE_STATS.get_ptr_mut(index) {
        let stats = unsafe { &mut *stats };
        stats.calls += 1;
        stats.pages += pages;
    }
    if let Some(proc) = proc_stats(ctx) {
        proc.released += pages;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if event_wanted(pid_tgid) {
        emit(CallEvent {
            start_ns: unsafe { bpf_ktime_get_ns() },
            latency_ns: LATENCY_UNMEASURED,
            pid_tgid,
            nr: pages as i64,
            func: id,
            kind: EVENT_RELEASE,
            comm: bpf_get_current_comm().unwrap_or_default(),
            ..CallEvent::default()
        });
    }
}

/// Return from `unpin_user_pages_dirty_lock`, the one release function
/// traced at its return.
#[inline(always)]
pub fn release_exit() {
    if !counted() {
        return;
    }
    match task_state(false) {
        Some(state) if state.release_depth != 0 => state.release_depth = 0,
        _ => bump_health(Health::UnmatchedExit),
    }
}
