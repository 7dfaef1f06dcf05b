//! What every get/pin probe does, independent of the attach mechanism:
//! track each thread's nesting inside the GUP family, and on the outermost
//! return fold the call into the per-CPU counters; the per-process rows
//! and the nesting checks the release probes (`release`) share.
//!
//! The fentry/fexit and kprobe/kretprobe programs in `main.rs` only read
//! arguments and return values and call into here.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
};
use pin_common::{
    CallEvent, EVENT_GUP, FuncId, GUP_FUNC_COUNT, Health, INSERTS_PROCS, ProcStats, TaskState,
    catalog::is_fast,
};

use crate::{
    attribution, cgroup,
    comm::current_comm,
    counters::{EEXIST, add_to, bump_health, count_insert},
    events::{emit, event_wanted},
    failures,
    follow::counted,
    frame::{EntryFrame, Frame, STACK_SPAN, return_address},
    maps::{GUP_STATS, PIN_BALANCE, PROCS},
    names::process_comm,
    outcome::{Outcome, PathSplit},
    settings::{callers_on, config, lifetimes_on, return_trampoline},
    task_storage::{self, TaskSlot, task_slot, task_state},
    variant::{count_latency_once, count_paths, count_return_once},
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

/// The current process's `PROCS` entry, created on first use.
#[inline(always)]
pub(crate) fn proc_stats() -> Option<&'static mut ProcStats> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    proc_entry(tgid)
}

/// The `PROCS` entry of `tgid`, created on first use with the process's
/// name (see `names`, which keeps it current). A failed insert is counted
/// (`proc_state_lost`), not logged: a log line here, on every get/pin
/// program's return path, cost the verifier 0.1-0.2 s per program
/// (measured on the kprobe_multi return program: 528 ms with it, 305 ms
/// without), and the agent reports the count.
#[inline(always)]
fn proc_entry(tgid: u32) -> Option<&'static mut ProcStats> {
    if let Some(stats) = PROCS.get_ptr_mut(tgid) {
        return Some(unsafe { &mut *stats });
    }
    let fresh = ProcStats {
        first_ns: unsafe { bpf_ktime_get_ns() },
        comm: process_comm(),
        ..ProcStats::default()
    };
    // NOEXIST: a thread of the same process on another CPU may create the
    // entry first; overwriting it would zero the counts it added since.
    match PROCS.insert(tgid, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => count_insert(INSERTS_PROCS),
        Err(err) if i64::from(err) == -EEXIST => {}
        Err(_) => {
            bump_health(Health::ProcStateLost);
            return None;
        }
    }
    PROCS.get_ptr_mut(tgid).map(|stats| unsafe { &mut *stats })
}

/// A thread exits: a call it is still inside was never seen to return
/// (threads do not exit from inside GUP), so count it as missed.
#[inline(always)]
pub fn on_task_exit() {
    if let Some(slot) = task_storage::current_slot(false) {
        if slot.state.depth != 0 {
            forget_missed_call(&mut slot.state);
        }
        #[cfg(not(feature = "baseline"))]
        crate::pending::fold(&mut slot.pending);
    }
    task_storage::forget_current();
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

/// Entry into get/pin function `id` with its argument registers. The
/// traced function's frame is read only for a call that is counted, once
/// the task's state is at hand (an fentry program needs it for that).
#[inline(always)]
pub fn gup_entry(ctx: &impl EntryFrame, id: FuncId, args: GupArgs) {
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
    let frame = ctx.entry_frame(id, &mut state.ctx_number);
    if state.depth != 0 && state_is_stale(state, &frame) {
        forget_missed_call(state);
    }
    let level = state.depth + 1;
    if state.depth == 0 {
        state.outer = id;
        state.outer_frame = frame.addr;
        state.outer_mark = frame.mark;
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
        state.caller = if callers_on() {
            attribution::find_caller(ctx, id, &frame)
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

/// Whether a thread's nesting state, found at an entry from `frame`, was
/// left behind by a call whose return was never seen. Without this check
/// one missed return would leave the thread nested under a phantom call
/// for good, and none of its later calls would be counted.
///
/// A truly nested call enters from deeper on the same stack (a lower
/// address) than the outermost call it nests in, and the outermost call's
/// frame still holds the word it held at entry. An entry at or above that
/// frame, or a frame whose word changed, means the call has returned;
/// except an entry at that very frame that the call jumped to
/// ([`tail_called`]), which nests.
#[inline(always)]
fn state_is_stale(state: &TaskState, frame: &Frame) -> bool {
    if state.depth >= MAX_DEPTH {
        bump_health(Health::DepthOverflow);
        return true;
    }
    let (here, outer) = (frame.addr, state.outer_frame);
    // 0: a frame could not be read; no verdict then.
    if here == 0 || outer == 0 {
        return false;
    }
    if here == outer && tail_called(state, frame) {
        return false;
    }
    if here >= outer {
        // Farther than one stack's span: another stack (an interrupt's).
        return here - outer < STACK_SPAN;
    }
    if outer - here >= STACK_SPAN {
        return false;
    }
    outer_call_returned(state)
}

/// Whether a call entering at the outermost call's own return-address
/// slot was jumped to by that call (a tail call: same slot, same return
/// address, the outermost call still running under its return probe)
/// rather than made afresh from the same place after a return pinwatch
/// missed. The two are told apart by the trampoline in the slot
/// ([`Frame::rethooked`]); where the kernel does not say which address
/// it replaced (no instance layout, 5.10), the trampoline alone decides,
/// and the call is taken to be running, as it most likely is. The
/// kernel's return probes run the jumped-to call's return before its
/// caller's (newest instance first), so the nesting unwinds in order.
#[inline(always)]
fn tail_called(state: &TaskState, frame: &Frame) -> bool {
    frame.rethooked && (frame.mark == state.outer_mark || frame.mark == return_trampoline())
}

/// Whether the outermost call's frame no longer holds the word it held at
/// entry (the return address, or a kretprobe's trampoline in its place):
/// the call has returned, unseen. False when unknown.
#[inline(always)]
pub(crate) fn outer_call_returned(state: &TaskState) -> bool {
    if state.outer_mark == 0 || state.outer_frame == 0 {
        return false;
    }
    // SAFETY: reads kernel memory through the checked helper.
    let now = unsafe { bpf_probe_read_kernel(state.outer_frame as *const u64) }
        .unwrap_or(state.outer_mark);
    if now == state.outer_mark {
        return false;
    }
    // A trampoline in the slot: the call still runs under a kretprobe, or
    // a later call from the same place does (another tracer's kretprobe
    // on a release): the instance for the slot says which. Where none
    // tells, the call is taken to be running, as it most likely is.
    let now = return_address(state.outer_frame, now);
    now != state.outer_mark && now != return_trampoline()
}

/// Whether a task inside a get/pin call (`state.depth != 0`) runs, at
/// `frame`, within that call: deeper on the same stack than the call's
/// frame. Code on another stack (an interrupt's, e.g. an I/O completion
/// releasing pins) merely interrupted the call; code at or above the
/// frame runs after a call whose return was missed.
#[inline(always)]
pub fn inside_gup_call(state: &TaskState, frame: u64) -> bool {
    let outer = state.outer_frame;
    if frame == 0 || outer == 0 {
        // No position to compare: the depth alone says so.
        return true;
    }
    frame < outer && outer - frame < STACK_SPAN
}

/// Drops a stale state's unfinished call and counts it as missed, both in
/// its variant's counters and as a health event.
#[inline(always)]
pub(crate) fn forget_missed_call(state: &mut TaskState) {
    bump_health(Health::MissedReturn);
    if (state.outer as usize) < GUP_FUNC_COUNT
        && let Some(stats) = GUP_STATS.get_ptr_mut(state.outer)
    {
        add_to(unsafe { &mut (*stats).missed_returns }, 1);
    }
    state.depth = 0;
}

/// Return from get/pin function `id` with raw return register `raw_ret`.
#[inline(always)]
pub fn gup_exit(id: FuncId, raw_ret: u64) {
    if !counted() {
        return;
    }
    let Some(config) = config(id) else { return };
    let ret = widen(raw_ret, config.ret_is_int);
    let Some(slot) = task_slot(false) else {
        bump_health(Health::UnmatchedExit);
        return;
    };
    let state = &mut slot.state;
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
        account_call_once(slot, ret);
    }
}

/// [`account_call`], which the verifier checks once per program: a global
/// BPF function in the full object (see the crate's doc), inline in the
/// baseline one.
#[inline(always)]
fn account_call_once(slot: &mut TaskSlot, ret: i64) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_account_call(slot, ret);
    #[cfg(feature = "baseline")]
    account_call(slot, ret);
}

/// [`account_call`] as a global BPF function; its pointer may be null as
/// far as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_account_call(slot: *mut TaskSlot, ret: i64) -> u32 {
    // SAFETY: the caller's task state.
    if let Some(slot) = unsafe { slot.as_mut() } {
        account_call(slot, ret);
    }
    0
}

/// Folds an outermost call that returned `ret` into a per-call event when
/// one is wanted, its pins' lifetimes, and either the thread's pending
/// counts (a full call, in the full object: see `pending`) or directly
/// its variant's counters, its call site's counters, the pin balance and
/// its process's and cgroup's rows. In the full object it is a global
/// function, and so is each of its steps but the variant's counters and
/// the pin balance: checked once per program each.
#[inline(always)]
fn account_call(slot: &mut TaskSlot, ret: i64) {
    let state = &mut slot.state;
    let outer = state.outer;
    if outer as usize >= GUP_FUNC_COUNT {
        return;
    }
    // First, before the other steps fork the verifier's paths: in the
    // baseline object, where the step is a static function, the branch
    // is explored once per program here rather than once per path (at
    // the end it more than doubled the time to load the programs).
    if ret < 0 || ret < state.nr {
        failures::count_once(state, ret);
    }
    let paths = PathSplit::of(state);
    let ret = forget_range(state, ret);
    let now = unsafe { bpf_ktime_get_ns() };
    let ns = now.saturating_sub(state.start_ns);
    let pid_tgid = bpf_get_current_pid_tgid();
    if event_wanted(pid_tgid) {
        emit_call_once(state, ret, ns, pid_tgid, &paths);
    }
    let is_pin = config(outer).is_some_and(|l| l.is_pin != 0);
    if is_pin && lifetimes_on() {
        attribution::remember_pins_once(state, ret, now);
    }
    // Pins are counted at once, like their releases (see `pending`).
    #[cfg(not(feature = "baseline"))]
    if !is_pin && crate::pending::defer(&mut slot.pending, state, ret, ns, &paths) {
        return;
    }
    let Some(stats) = GUP_STATS.get_ptr_mut(outer) else {
        return;
    };
    let stats = unsafe { &mut *stats };
    count_return_once(stats, state.nr, ret);
    count_paths(stats, &paths);
    let outcome = Outcome {
        ret,
        ns,
        latency_slot: count_latency_once(stats, ns),
        paths,
    };
    if callers_on() {
        attribution::account_caller_once(state, &outcome);
    }
    if is_pin
        && ret > 0
        && let Some(balance) = PIN_BALANCE.get_ptr_mut(0)
    {
        add_to(unsafe { &mut (*balance).pinned }, ret as u64);
    }
    count_rows_once(ret, is_pin);
}

/// [`emit_call`], which the verifier checks once per program: a global BPF
/// function in the full object (see the crate's doc), inline in the
/// baseline one.
#[inline(always)]
fn emit_call_once(state: &TaskState, ret: i64, ns: u64, pid_tgid: u64, paths: &PathSplit) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_emit_call(state, ret, ns, pid_tgid, paths);
    #[cfg(feature = "baseline")]
    emit_call(state, ret, ns, pid_tgid, paths);
}

/// [`emit_call`] as a global BPF function; its pointers may be null as far
/// as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_emit_call(
    state: *const TaskState,
    ret: i64,
    ns: u64,
    pid_tgid: u64,
    paths: *const PathSplit,
) -> u32 {
    // SAFETY: the caller's task state and path split.
    if let (Some(state), Some(paths)) = unsafe { (state.as_ref(), paths.as_ref()) } {
        emit_call(state, ret, ns, pid_tgid, paths);
    }
    0
}

/// The call's process and cgroup rows ([`count_process`],
/// `cgroup::count_call`), which the verifier checks once per program: one
/// global BPF function for both in the full object (see the crate's doc;
/// one call fewer per return than two), inline in the baseline one.
#[inline(always)]
fn count_rows_once(ret: i64, is_pin: bool) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_count_rows(ret, is_pin);
    #[cfg(feature = "baseline")]
    {
        count_process(ret, is_pin);
        cgroup::count_call(ret, is_pin);
    }
}

/// [`count_rows_once`]'s global BPF function.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_count_rows(ret: i64, is_pin: bool) -> u32 {
    count_process(ret, is_pin);
    cgroup::count_call(ret, is_pin);
    0
}

/// `ret` as a value the verifier knows nothing about: stored in the
/// task's state (map memory, whose contents it does not track) and read
/// back. Why: the counting above splits the verifier's walk by the return
/// value's range (`> 0`, `== 0`, `< 0`, short or not), and each later test
/// of `ret` that the range decides marks it precise, so those paths never
/// merged again: the kprobe_multi return program walked 12 780
/// instructions with them, 3 798 without (Debian 6.12). Volatile, so that
/// the compiler neither drops the round trip nor reuses the register.
#[inline(always)]
fn forget_range(state: &mut TaskState, ret: i64) -> i64 {
    // SAFETY: a field of the live task state, written then read.
    unsafe {
        core::ptr::write_volatile(&mut state.ret, ret);
        core::ptr::read_volatile(&state.ret)
    }
}

/// Sends the per-call event of an outermost call that took `ns`.
#[inline(always)]
fn emit_call(state: &TaskState, ret: i64, ns: u64, pid_tgid: u64, paths: &PathSplit) {
    // A slow variant's pages all come from the slow path.
    let slow_pages = if state.fast_level == 0 && ret > 0 {
        ret as u64
    } else {
        paths.slow_pages
    };
    emit(CallEvent {
        start_ns: state.start_ns,
        latency_ns: ns,
        pid_tgid,
        addr: state.addr,
        nr: state.nr,
        flags: state.flags,
        ret,
        fast_pages: paths.fast_pages,
        slow_pages,
        func: state.outer,
        kind: EVENT_GUP,
        caller: state.caller,
        cgroup: cgroup::current_cgroup(false),
        fell_back: paths.fell_back as u32,
        _pad: 0,
        comm: current_comm(),
    });
}

/// The calling process's row: its calls and the pages it got (pinned
/// ones apart). Its name is not read here: `names` keeps it current.
#[inline(always)]
fn count_process(ret: i64, is_pin: bool) {
    if let Some(proc) = proc_stats() {
        add_to(&mut proc.calls, 1);
        if ret > 0 {
            add_to(&mut proc.pages, ret as u64);
            if is_pin {
                add_to(&mut proc.pinned, ret as u64);
            }
        }
    }
}
