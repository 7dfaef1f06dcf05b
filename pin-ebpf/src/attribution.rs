//! Who made each outermost call (its kernel call site) and, with
//! `--lifetimes`, how long the pages it pinned stay pinned.
//!
//! The caller is read at the outermost entry: the traced function's return
//! address, straight from its frame (trampoline or kprobe registers), or
//! from a short stack walk when the frame does not look as expected.
//! Lifetimes remember each pinned folio at the call's return and match it
//! at `gup_put_folio`, where every FOLL_PIN release ends up.

#[cfg(not(feature = "baseline"))]
use core::ffi::c_void;

// Helpers and types of the full object only (see the `baseline` feature).
#[cfg(not(feature = "baseline"))]
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_get_func_arg_cnt, bpf_get_func_ip, bpf_loop},
};
#[cfg(not(feature = "baseline"))]
use pin_common::{PinRecord, attribution::LIFETIME_PAGES_PER_CALL};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_get_stack},
    programs::{FEntryContext, ProbeContext},
};
use pin_common::{
    CallerKey, CallerStats, FuncId, Health, INSERTS_CALLERS, TaskState,
    attribution::{
        CALLER_FRAMES, SETTING_CALLERS, SETTING_LIFETIMES, SETTING_RETURN_TRAMPOLINE,
        SETTING_TASK_STACK_OFFSET, SETTING_TASK_STACK_SIZE, hold_bucket,
    },
};

use crate::{
    account::{EEXIST, add_health, add_to, bump_health, count_insert},
    maps::{CALLER_ZERO, CALLERS, PIN_LIFETIMES, SETTINGS},
};

/// How far past the traced function's address its own frame may point:
/// the return address into it from the trampoline call (fentry) or the
/// probed instruction pointer (kprobe), after an optional `endbr64`.
const ENTRY_WINDOW: u64 = 32;

#[inline(always)]
pub(crate) fn setting(index: u32) -> u64 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

/// Where the current task's kernel stack pointer sits in `task_struct`
/// (offset + 1, 0 when unknown) and how big the stack is.
#[inline(always)]
pub fn task_stack_layout() -> (u64, u64) {
    (
        setting(SETTING_TASK_STACK_OFFSET),
        setting(SETTING_TASK_STACK_SIZE),
    )
}

/// Whether callers are attributed.
#[inline(always)]
pub fn callers_on() -> bool {
    setting(SETTING_CALLERS) == 1
}

/// Lowest address of the kernel's text mapping (x86-64: the top 2 GiB,
/// modules included): a return address read from a frame must lie above.
const KERNEL_TEXT: u64 = 0xffff_ffff_8000_0000;

/// Start of the x86-64 module area (`MODULES_VADDR`), where BPF programs
/// and trampolines are JIT-compiled; the core kernel's text lies below.
const JIT_AREA: u64 = 0xffff_ffff_c000_0000;

/// How far above the trampoline's context a saved frame pointer of the
/// same task stack can be (x86-64 THREAD_SIZE, doubled by KASAN).
const STACK_SPAN: u64 = 32 * 1024;

/// What an entry program learns from the traced function's frame.
#[derive(Clone, Copy, Default)]
pub struct Frame {
    /// Address of a word of the frame that stays put while the call runs
    /// (0: unknown). Deeper frames have lower addresses.
    pub addr: u64,
    /// The word at `addr` at entry (0: do not check it later).
    pub mark: u64,
    /// The return address into the caller (0: not in the frame).
    pub caller: u64,
}

/// A program context that can read the traced function's frame: where it
/// is on the kernel stack and the return address into the caller, without
/// walking the stack.
pub trait EntryFrame: EbpfContext {
    /// The frame of traced function `id`.
    fn entry_frame(&self, id: FuncId) -> Frame;
}

/// The traced function's address: from the kernel where it tells
/// (`bpf_get_func_ip`, 5.15+), from the agent's kallsyms read in the
/// baseline object (0 when kallsyms hides addresses).
#[inline(always)]
fn func_ip(ctx: &impl EbpfContext, id: FuncId) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        let _ = id;
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_func_ip(ctx.as_ptr()) }
    }
    #[cfg(feature = "baseline")]
    {
        let _ = ctx;
        crate::account::config(id).map_or(0, |c| c.addr)
    }
}

/// How many arguments the fentry trampoline saved: from the kernel where
/// it tells (`bpf_get_func_arg_cnt`, 5.17+), from the function's BTF
/// prototype (the agent) in the baseline object.
#[inline(always)]
fn saved_args(ctx: &FEntryContext, id: FuncId) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        let _ = id;
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_func_arg_cnt(ctx.as_ptr()) as u64 }
    }
    #[cfg(feature = "baseline")]
    {
        let _ = ctx;
        crate::account::config(id).map_or(u64::MAX, |c| u64::from(c.arg_count))
    }
}

/// A kernel text address, or 0.
#[inline(always)]
fn text_or_zero(addr: u64) -> u64 {
    if addr >= KERNEL_TEXT { addr } else { 0 }
}

impl EntryFrame for FEntryContext {
    /// The BPF trampoline saves the traced function's register arguments
    /// at the context pointer, then (when it also calls the function for
    /// fexit) a return-value slot, then its saved frame pointer, the
    /// return address into the traced function (just past its fentry
    /// call) and, above that, the traced function's own return address.
    /// The return address into the traced function identifies which of
    /// the two layouts this trampoline has; its slot is the frame's mark:
    /// it holds that value for as long as the call runs.
    fn entry_frame(&self, id: FuncId) -> Frame {
        let (args, func_ip) = (saved_args(self, id), func_ip(self, id));
        // x86-64 passes at most 6 arguments in registers and the
        // trampoline saves at most 12.
        if args > 12 {
            return Frame::default();
        }
        let ctx_addr = crate::account::context_address(self);
        if ctx_addr == 0 {
            return Frame::default();
        }
        let above_args = ctx_addr + args * 8;
        // SAFETY: reads kernel memory through the checked helper.
        let Ok(words) = (unsafe { bpf_probe_read_kernel(above_args as *const [u64; 4]) }) else {
            return Frame::default();
        };
        let into_traced = |w: u64| func_ip != 0 && w.wrapping_sub(func_ip) < ENTRY_WINDOW;
        // A saved frame pointer: an address on this stack, above us.
        let on_stack = |w: u64| w > ctx_addr && w - ctx_addr < STACK_SPAN;
        if into_traced(words[1]) {
            Frame {
                addr: above_args + 8,
                mark: words[1],
                caller: text_or_zero(words[2]),
            }
        } else if into_traced(words[2]) {
            Frame {
                addr: above_args + 16,
                mark: words[2],
                caller: text_or_zero(words[3]),
            }
        } else if on_stack(words[0]) && text_or_zero(words[1]) != 0 {
            // Entered by a jump from the traced function's entry (Linux
            // 7.x): no return address into it; the saved frame pointer is
            // followed by the traced function's own return address, which
            // stays put while the call runs. Without a return slot...
            Frame {
                addr: above_args + 8,
                mark: words[1],
                caller: words[1],
            }
        } else if on_stack(words[1]) && text_or_zero(words[2]) != 0 {
            // ...and with one (fexit attached too).
            Frame {
                addr: above_args + 16,
                mark: words[2],
                caller: words[2],
            }
        } else {
            Frame {
                addr: ctx_addr,
                mark: 0,
                caller: 0,
            }
        }
    }
}

impl EntryFrame for ProbeContext {
    /// At a function-entry kprobe the stack pointer points at the
    /// function's return address. A kretprobe on the same function swaps
    /// that word for its trampoline's address while the call runs, so the
    /// word is a mark only where the agent told us that address.
    fn entry_frame(&self, _id: FuncId) -> Frame {
        // SAFETY: the context's registers, then kernel memory through the
        // checked helper.
        let (sp, word) = unsafe {
            let sp = (*self.regs).rsp;
            (sp, bpf_probe_read_kernel(sp as *const u64).unwrap_or(0))
        };
        Frame {
            addr: sp,
            mark: if return_trampoline() != 0 { word } else { 0 },
            caller: text_or_zero(word),
        }
    }
}

/// The address of the kernel's return-probe trampoline, which a kretprobe
/// writes over the return address of a call it watches (0: unknown).
#[inline(always)]
pub fn return_trampoline() -> u64 {
    setting(SETTING_RETURN_TRAMPOLINE)
}

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

/// This CPU's counters for a call site, created on first use.
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
    // would zero that CPU's first counts.
    match CALLERS.insert(key, unsafe { &*fresh }, u64::from(BPF_NOEXIST)) {
        Ok(()) => count_insert(INSERTS_CALLERS),
        Err(err) if i64::from(err) == -EEXIST => {}
        Err(_) => return None,
    }
    CALLERS.get_ptr_mut(key).map(|stats| unsafe { &mut *stats })
}

/// Folds one outermost call into its call site's counters.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn account_caller(
    state: &TaskState,
    ret: i64,
    ns: u64,
    fast_pages: u64,
    slow_pages: u64,
    fell_back: bool,
    latency_slot: usize,
) {
    let key = CallerKey::new(state.caller, state.outer);
    let Some(stats) = caller_stats(&key) else {
        return;
    };
    add_to(&mut stats.calls, 1);
    if ret > 0 {
        add_to(&mut stats.pages, ret as u64);
    } else if ret < 0 {
        add_to(&mut stats.errors, 1);
    }
    if fell_back {
        add_to(&mut stats.fallbacks, 1);
    }
    add_to(&mut stats.fast_pages, fast_pages);
    add_to(&mut stats.slow_pages, slow_pages);
    add_to(&mut stats.latency_sum_ns, ns);
    if let Some(calls) = stats.latency_log2.get_mut(latency_slot) {
        add_to(calls, 1);
    }
}

/// Whether pin lifetimes are recorded.
#[inline(always)]
pub fn lifetimes_on() -> bool {
    setting(SETTING_LIFETIMES) == 1
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
            // the sum its releases are timed from.
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
pub fn remember_pins(state: &TaskState, ret: i64, now: u64) {
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

/// The baseline object has no `bpf_loop` (5.17+), and the agent never
/// turns lifetimes on with it.
#[cfg(feature = "baseline")]
#[inline(always)]
pub fn remember_pins(_state: &TaskState, _ret: i64, _now: u64) {}

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
    let outstanding = record.refs;
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
    let start_sum = record.start_sum_ns;
    let starts = if released == outstanding {
        start_sum
    } else {
        start_sum / outstanding * released
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let hold_sum = (now * released).saturating_sub(starts);
    let held = hold_sum / released;
    let key = CallerKey::new(record.caller, record.func);
    // Atomic adds of the negated amounts, so that a pin of this folio on
    // another CPU, adding its own start and reference meanwhile, is kept.
    add_to(&mut record.start_sum_ns, starts.wrapping_neg());
    add_to(&mut record.refs, released.wrapping_neg());
    // SAFETY: a live map value; volatile, to read what the atomic add left
    // (with any other CPU's adds) rather than a value the compiler assumes.
    if unsafe { core::ptr::read_volatile(&record.refs) } == 0 {
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
