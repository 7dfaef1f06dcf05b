//! Who made each outermost call (its kernel call site) and, with
//! `--lifetimes`, how long the pages it pinned stay pinned.
//!
//! The caller is read at the outermost entry: the traced function's return
//! address, straight from its frame (see `frame`), or from a short stack
//! walk when the frame does not look as expected. Lifetimes remember each
//! pinned folio at the call's return and match it at `gup_put_folio`,
//! where every FOLL_PIN release ends up.

#[cfg(not(feature = "baseline"))]
use core::ffi::c_void;

// Helpers and types of the full object only (see the `baseline` feature).
#[cfg(not(feature = "baseline"))]
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_loop};
#[cfg(not(feature = "baseline"))]
use pin_common::{PinRecord, attribution::LIFETIME_PAGES_PER_CALL};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, generated::bpf_get_stack},
};
use pin_common::{
    CallerKey, CallerStats, FuncId, Health, INSERTS_CALLERS, TaskState,
    attribution::{CALLER_FRAMES, hold_bucket},
};

use crate::{
    counters::{EEXIST, add_health, add_to, bump_health, count_insert},
    frame::{ENTRY_WINDOW, Frame, JIT_AREA, KERNEL_TEXT, func_ip},
    maps::{CALLER_ZERO, CALLERS, PIN_LIFETIMES},
    outcome::Outcome,
    settings::lifetimes_on,
};

/// The return address into whoever called the traced function: read from
/// its frame where the layout is known, else found on a stack walk; 0 (and
/// counted) when neither shows it.
#[inline(always)]
pub fn find_caller(ctx: &impl EbpfContext, id: FuncId, frame: &Frame) -> u64 {
    if frame.caller != 0 {
        return frame.caller;
    }
    walk_for_caller(ctx, id)
}

/// The frame above the traced function's own on a short stack walk
/// (`bpf_get_stack`, several times the cost of a direct read).
#[inline(always)]
fn walk_for_caller(ctx: &impl EbpfContext, id: FuncId) -> u64 {
    let mut frames = [0u64; CALLER_FRAMES];
    let func_ip = func_ip(ctx, id);
    // SAFETY: the helper given the program's own context and a stack
    // buffer of the size passed.
    let len = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr() as *mut _,
            (CALLER_FRAMES * 8) as u32,
            0,
        )
    };
    let count = if len > 0 { len as usize / 8 } else { 0 };
    for i in 0..CALLER_FRAMES - 1 {
        if i + 1 >= count {
            break;
        }
        let frame = frames[i];
        if frame >= func_ip && frame < func_ip + ENTRY_WINDOW {
            return frames[i + 1];
        }
    }
    // A trampoline entered by a jump (7.x) leaves the traced function no
    // frame: the walk shows the program, the trampoline (both JIT code, in
    // the module area) and then the caller.
    if count >= 3 && frames[0] >= JIT_AREA && frames[1] >= JIT_AREA && frames[2] >= KERNEL_TEXT {
        return frames[2];
    }
    bump_health(Health::CallerUnknown);
    0
}

/// The counters of a call site, created on first use.
#[inline(always)]
fn caller_stats(key: &CallerKey) -> Option<&'static mut CallerStats> {
    if let Some(stats) = CALLERS.get_ptr_mut(key) {
        return Some(unsafe { &mut *stats });
    }
    // The template is this CPU's zero value (too big for the stack); only
    // its creation time changes.
    let fresh = CALLER_ZERO.get_ptr_mut(0)?;
    unsafe { (*fresh).first_ns = bpf_ktime_get_ns() };
    // The map is LRU: inserting evicts the coldest call site when full.
    // NOEXIST: another CPU may create the entry first; overwriting it
    // would zero the counts it added since.
    match CALLERS.insert(key, unsafe { &*fresh }, u64::from(BPF_NOEXIST)) {
        Ok(()) => count_insert(INSERTS_CALLERS),
        Err(err) if i64::from(err) == -EEXIST => {}
        Err(_) => return None,
    }
    CALLERS.get_ptr_mut(key).map(|stats| unsafe { &mut *stats })
}

/// [`account_caller`], which the verifier checks once per program: a
/// global BPF function in the full object (see the crate's doc), inline in
/// the baseline one.
#[inline(always)]
pub fn account_caller_once(state: &TaskState, call: &Outcome) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_account_caller(state, call);
    #[cfg(feature = "baseline")]
    account_caller(state, call);
}

/// [`account_caller`] as a global BPF function; its pointers may be null
/// as far as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_account_caller(state: *const TaskState, call: *const Outcome) -> u32 {
    // SAFETY: the caller's task state and outcome.
    if let (Some(state), Some(call)) = unsafe { (state.as_ref(), call.as_ref()) } {
        account_caller(state, call);
    }
    0
}

/// Folds one outermost call into its call site's counters.
#[inline(always)]
fn account_caller(state: &TaskState, call: &Outcome) {
    let key = CallerKey::new(state.caller, state.outer);
    let Some(stats) = caller_stats(&key) else {
        return;
    };
    add_to(&mut stats.calls, 1);
    if call.ret > 0 {
        add_to(&mut stats.pages, call.ret as u64);
    } else if call.ret < 0 {
        add_to(&mut stats.errors, 1);
    }
    if call.paths.fell_back {
        add_to(&mut stats.fallbacks, 1);
    }
    add_to(&mut stats.fast_pages, call.paths.fast_pages);
    add_to(&mut stats.slow_pages, call.paths.slow_pages);
    add_to(&mut stats.latency_sum_ns, call.ns);
    if let Some(calls) = stats.latency_log2.get_mut(call.latency_slot) {
        add_to(calls, 1);
    }
}

/// Calls of one call site and variant added up elsewhere (a thread's
/// pending counts, see `pending`), all of them full calls.
#[cfg(not(feature = "baseline"))]
pub struct Deltas<'a> {
    /// Calls.
    pub calls: u64,
    /// Pages returned.
    pub pages: u64,
    /// Calls whose fast path fell back.
    pub fallbacks: u64,
    /// Pages by path.
    pub fast_pages: u64,
    /// Pages by path.
    pub slow_pages: u64,
    /// Latency sum.
    pub latency_sum_ns: u64,
    /// Latency histogram.
    pub latency_log2: &'a [u64; pin_common::LATENCY_BUCKETS],
}

/// Adds `deltas` to the counters of call site `caller`, variant `outer`.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn add_deltas(caller: u64, outer: u32, deltas: &Deltas) {
    // Not made anew if evicted: see `account::add_to_process`.
    let Some(stats) = CALLERS.get_ptr_mut(&CallerKey::new(caller, outer)) else {
        return;
    };
    let stats = unsafe { &mut *stats };
    add_to(&mut stats.calls, deltas.calls);
    add_to(&mut stats.pages, deltas.pages);
    add_to(&mut stats.fallbacks, deltas.fallbacks);
    add_to(&mut stats.fast_pages, deltas.fast_pages);
    add_to(&mut stats.slow_pages, deltas.slow_pages);
    add_to(&mut stats.latency_sum_ns, deltas.latency_sum_ns);
    for (into, from) in stats
        .latency_log2
        .iter_mut()
        .zip(deltas.latency_log2.iter())
    {
        add_to(into, *from);
    }
}

/// The folio a `struct page *` belongs to: a tail page's `compound_head`
/// (the word after `flags`) holds the head's address with bit 0 set.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
fn folio_of(page: u64) -> Option<u64> {
    let head: u64 = unsafe { bpf_probe_read_kernel((page + 8) as *const u64) }.ok()?;
    Some(if head & 1 != 0 { head - 1 } else { page })
}

/// What [`remember_one`] needs about the call, on the caller's stack.
#[cfg(not(feature = "baseline"))]
#[repr(C)]
struct PinBatch {
    pages: u64,
    start_ns: u64,
    caller: u64,
    tgid: u32,
    func: u32,
    tracked: u64,
}

/// `bpf_loop` body: remembers the folio of page `index` of the batch.
/// A callback, so the verifier checks it once rather than per page.
#[cfg(not(feature = "baseline"))]
#[inline(never)]
extern "C" fn remember_one(index: u64, ctx: *mut c_void) -> i64 {
    let batch = unsafe { &mut *(ctx as *mut PinBatch) };
    let slot = (batch.pages + index * 8) as *const u64;
    let Ok(page) = (unsafe { bpf_probe_read_kernel(slot) }) else {
        return 1;
    };
    let Some(folio) = folio_of(page) else {
        return 0;
    };
    let record = PinRecord {
        start_sum_ns: batch.start_ns,
        caller: batch.caller,
        refs: 1,
        tgid: batch.tgid,
        func: batch.func,
    };
    // Insert only if absent (BPF_NOEXIST), so that two CPUs pinning one
    // new folio at once cannot overwrite each other's reference: the loser
    // finds the winner's record and adds to it. Twice, because the record
    // can also vanish between the two steps (its last pin released).
    for _ in 0..2 {
        if PIN_LIFETIMES
            .insert(&folio, &record, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            batch.tracked += 1;
            return 0;
        }
        if let Some(held) = PIN_LIFETIMES.get_ptr_mut(&folio) {
            // Another pin of a folio already held: one more start time in
            // the sum its releases are timed from. The start first, then
            // the reference: a release meanwhile on another CPU tells a
            // joining pin by a start sum its references cannot explain
            // (`folio_released`).
            let held = unsafe { &mut *held };
            add_to(&mut held.start_sum_ns, batch.start_ns);
            add_to(&mut held.refs, 1);
            batch.tracked += 1;
            return 0;
        }
    }
    bump_health(Health::LifetimesFull);
    0
}

/// Remembers the folios an outermost pin call returned (`ret` pages in
/// its `pages` array), for [`folio_released`] to time.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
fn remember_pins(state: &TaskState, ret: i64, now: u64) {
    if state.pages == 0 || ret <= 0 {
        return;
    }
    let returned = ret as u64;
    let limit = LIFETIME_PAGES_PER_CALL as u64;
    if returned > limit {
        add_health(Health::LifetimesTruncated, returned - limit);
    }
    let mut batch = PinBatch {
        pages: state.pages,
        start_ns: now,
        caller: state.caller,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        func: state.outer,
        tracked: 0,
    };
    let count = if returned > limit { limit } else { returned };
    // SAFETY: bpf_loop calls `remember_one` with the batch on our stack.
    unsafe {
        bpf_loop(
            count as u32,
            remember_one as *mut c_void,
            &mut batch as *mut PinBatch as *mut c_void,
            0,
        )
    };
    let key = CallerKey::new(state.caller, state.outer);
    if let Some(stats) = caller_stats(&key) {
        add_to(&mut stats.pins_tracked, batch.tracked);
    }
}

/// [`remember_pins`], which the verifier checks once per program: a
/// global BPF function (see the crate's doc).
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn remember_pins_once(state: &TaskState, ret: i64, now: u64) {
    pinwatch_remember_pins(state, ret, now);
}

/// [`remember_pins`] as a global BPF function; its pointer may be null as
/// far as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_remember_pins(state: *const TaskState, ret: i64, now: u64) -> u32 {
    // SAFETY: the caller's task state.
    if let Some(state) = unsafe { state.as_ref() } {
        remember_pins(state, ret, now);
    }
    0
}

/// The baseline object has no `bpf_loop` (5.17+), and the agent never
/// turns lifetimes on with it.
#[cfg(feature = "baseline")]
#[inline(always)]
pub fn remember_pins_once(_state: &TaskState, _ret: i64, _now: u64) {}

/// A caller's release of `refs` FOLL_PIN pins of `folio` (at
/// `gup_put_folio`, GUP's own releases already told apart): ends their
/// hold, with `--lifetimes`.
#[inline(always)]
pub fn folio_released(folio: u64, refs: u64) {
    if !lifetimes_on() {
        return;
    }
    let Some(record) = PIN_LIFETIMES.get_ptr_mut(&folio) else {
        add_health(Health::UntrackedRelease, refs);
        return;
    };
    let record = unsafe { &mut *record };
    // The references, then the start sum, then the clock, in that order
    // (volatile: as written, not as the compiler would schedule them). A
    // pin joining this record on another CPU adds its start first and its
    // reference second (`remember_one`), so what is read can hold a start
    // whose reference is not visible yet, never the reverse (x86 orders
    // the atomic adds and the loads). Such a sum gives away the joining
    // pin: every start is at most `now`, so `outstanding` pins' sum is at
    // most `outstanding * now`, and a pin taken now exceeds it unless the
    // others have been held for about the whole uptime.
    // SAFETY: live map value fields; volatile reads of plain integers.
    let outstanding = unsafe { core::ptr::read_volatile(&record.refs) };
    let start_sum = unsafe { core::ptr::read_volatile(&record.start_sum_ns) };
    let now = unsafe { bpf_ktime_get_ns() };
    // checked_div: no divide-by-zero panic path, which the verifier
    // would refuse (a program must end in an exit).
    let joining = start_sum
        .checked_div(outstanding)
        .is_some_and(|mean| mean > now);
    let released = if refs < outstanding {
        refs
    } else {
        outstanding
    };
    if refs > released {
        add_health(Health::UntrackedRelease, refs - released);
    }
    if released == 0 {
        return;
    }
    // Which of the folio's pins this release ends is unknown: it ends
    // `released` pins of mean start, so that over a folio's tracked life
    // the hold times sum exactly to releases' times minus pins' starts.
    // The last release takes whatever the sum still holds (the rounding).
    // A joining pin counts among the folio's pins: taking its start as
    // this release's would time the release from the sum of two starts
    // (a hold of 0) and leave the joining pin a sum of 0 to be timed from
    // (a hold of the whole uptime).
    let pins = outstanding.saturating_add(u64::from(joining));
    let starts = match start_sum.checked_div(pins) {
        Some(mean) if released != pins => mean * released,
        _ => start_sum,
    };
    let hold_sum = (now * released).saturating_sub(starts);
    let held = hold_sum / released;
    let key = CallerKey::new(record.caller, record.func);
    // Atomic adds of the negated amounts, so that a pin of this folio on
    // another CPU, adding its own start and reference meanwhile, is kept.
    add_to(&mut record.start_sum_ns, starts.wrapping_neg());
    add_to(&mut record.refs, released.wrapping_neg());
    // SAFETY: a live map value; volatile, to read what the atomic add left
    // (with any other CPU's adds) rather than a value the compiler assumes.
    // A joining pin's reference is on its way: the record stays for it.
    if !joining && unsafe { core::ptr::read_volatile(&record.refs) } == 0 {
        // A pin taken between the add above and this removal loses its
        // record: its release then counts as `release_of_untracked_pin`,
        // never as a silent wrong hold time.
        let _ = PIN_LIFETIMES.remove(&folio);
    }
    if let Some(stats) = caller_stats(&key) {
        add_to(&mut stats.pins_released, released);
        add_to(&mut stats.hold_sum_ns, hold_sum);
        if let Some(pins) = stats.hold_log2.get_mut(hold_bucket(held)) {
            add_to(pins, released);
        }
    }
}
