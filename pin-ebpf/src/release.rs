//! What every release probe does: count a release of pinned pages (the
//! unpin family), charge it to the process that made it, or to the
//! `[irq]` row when an interrupt made it (an O_DIRECT completion), and tell
//! GUP's own releases inside a get/pin call apart: those are counted at
//! `gup_put_folio`, where every FOLL_PIN release ends.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
};
use pin_common::{
    CallEvent, EVENT_RELEASE, FuncId, GUP_FUNC_COUNT, Health, IRQ_COMM, IRQ_TGID,
    LATENCY_UNMEASURED,
    catalog::{RELEASE_AT_HOOK_CANDIDATE, RELEASE_NESTED, RELEASE_NESTING, may_jump_to_hook},
    release_hook::ReleaseAtHook,
};

use crate::{
    account::{forget_missed_call, inside_gup_call, outer_call_returned, proc_stats},
    attribution, cgroup,
    comm::current_comm,
    counters::{add_health, add_to, bump_health},
    events::{emit, event_wanted},
    follow::{counted, filtering},
    maps::{PIN_BALANCE, RELEASE_AT_HOOK, RELEASE_STATS},
    settings::{config, foll_pin, lifetimes_on, task_stack_layout},
    task_storage::task_state,
};

/// Whether code at `frame` runs in interrupt context: on another stack than
/// the current task's kernel stack (x86-64 runs hard and soft interrupts on
/// per-CPU interrupt stacks), where the current task is merely the one
/// interrupted. False when unknown (no `task_struct.stack` in BTF, no
/// frame): then releases are charged to the current task, as before.
#[inline(always)]
fn in_interrupt(frame: u64) -> bool {
    let (offset, size) = task_stack_layout();
    if offset == 0 || frame == 0 {
        return false;
    }
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: reads kernel memory through the checked helper.
    match unsafe { bpf_probe_read_kernel((task + offset - 1) as *const u64) } {
        Ok(stack) if stack != 0 => frame.wrapping_sub(stack) >= size,
        _ => false,
    }
}

/// Entry into release function `id` releasing `pages` pages: counted here,
/// since releases (but one) are traced at entry only; their cost grows
/// with every page an O_DIRECT completion releases one by one.
///
/// `folio` (0 for the others) is the folio `unpin_folio` or
/// `unpin_user_folio` releases: its pin lifetimes end here, and the thread
/// remembers it for [`folio_put`] not to end them twice.
///
/// `frame` gives where the probe's frame is (see [`in_interrupt`]),
/// `return_slot` the function's return address and its stack slot from
/// that: where the hook counts a release function ([`ReleaseAtHook`]), a
/// release that jumps to the hook leaves them there as a mark.
#[inline(always)]
pub fn entry(
    id: FuncId,
    pages: u64,
    folio: u64,
    frame: impl FnOnce() -> u64,
    return_slot: impl FnOnce(u64) -> [u64; 2],
) {
    if config(id).is_none() {
        return;
    }
    let frame = frame();
    // An interrupt (an O_DIRECT completion, 6.3+) releases pins of whoever
    // started the I/O: not the task it happened to interrupt.
    let irq = in_interrupt(frame);
    // The mark this release leaves for the hook, if it jumps there while
    // the hook counts another release function.
    let hook = if may_jump_to_hook(id) {
        release_at_hook()
    } else {
        None
    };
    let mark = match hook {
        Some(_) => return_slot(frame),
        None => [0; 2],
    };
    if irq {
        if let Some(hook) = hook {
            // The first free of the CPU's two, or the second: an
            // interrupt that interrupted another's release between its
            // entry and the hook takes the other slot.
            let at = usize::from(hook.irq_marks[0][0] != 0);
            hook.irq_marks[at] = mark;
        }
        if filtering() {
            // Whose they are is unknown here: not the followed tree's,
            // nor the chosen cgroup's.
            add_health(Health::IrqReleaseNotFollowed, pages);
            return;
        }
    } else if !counted() {
        return;
    }
    let index = id.wrapping_sub(GUP_FUNC_COUNT as u32);
    if !callers_release(id, folio, irq, frame, if irq { [0; 2] } else { mark }) {
        return;
    }
    if folio != 0 {
        attribution::folio_released(folio, pages);
    }
    count_release(index, pages, irq);
    emit_release(id, pages, irq);
}

/// Whether a release entry is the caller's to count, marking the thread's
/// nesting on the way: not when GUP makes it inside a get/pin call, nor
/// when it is part of an `unpin_user_pages_dirty_lock` already counted.
/// A counted release leaves `mark` (when not zeros) on the thread's state
/// for the hook ([`pin_common::TaskState::hook_mark`]).
#[inline(always)]
fn callers_release(id: FuncId, folio: u64, irq: bool, frame: u64, mark: [u64; 2]) -> bool {
    let nesting = id == RELEASE_NESTING || id == RELEASE_NESTED;
    // The folio is remembered for the release hook only for it not to end
    // the folio's pin lifetimes twice: only with `--lifetimes`.
    let remember_folio = folio != 0 && lifetimes_on();
    let marks = mark[0] != 0;
    if irq && !nesting && !remember_folio {
        // Nothing to read or mark on the interrupted thread's state: an
        // interrupt's release is never GUP's own. This is how an O_DIRECT
        // completion releases every page (`unpin_user_folio`), so the
        // lookup (and the state it used to create for whichever task the
        // interrupt hit) was paid per page.
        return true;
    }
    // One lookup of the thread's state (created only where the nesting
    // release or the folio must be marked). An interrupt's release is not
    // the interrupted thread's, but its nesting is marked on that thread's
    // state all the same: the nested call and the exit run there too.
    let Some(state) = task_state(id == RELEASE_NESTING || remember_folio || marks) else {
        return true;
    };
    if !irq && state.depth != 0 {
        if outer_call_returned(state) {
            // The get/pin call this thread seemed to be in has returned
            // unseen: this release is the caller's, not GUP's own.
            forget_missed_call(state);
        } else if inside_gup_call(state, frame) {
            // GUP undoing its own grab (a rollback, a FOLL_LONGTERM
            // migration retry): not a release by the caller. Counted at
            // `gup_put_folio` ([`folio_put`]), where the many such
            // releases whose unpin call the compiler inlined are seen
            // too.
            return false;
        }
    }
    if id == RELEASE_NESTED && state.release_depth != 0 {
        // Part of an `unpin_user_pages_dirty_lock` already counted.
        return false;
    }
    if id == RELEASE_NESTING {
        state.release_depth = 1;
    }
    state.direct_folio = if remember_folio { folio } else { 0 };
    if marks {
        state.hook_mark = mark;
    }
    true
}

/// A release of `pages` pages in the release function's counters (by
/// `index` in `RELEASE_STATS`), the pin balance and the releasing
/// process's and cgroup's rows (for an interrupt's, the balance's
/// `irq_released`, which the agent shows as the `[irq]` rows).
#[inline(always)]
fn count_release(index: u32, pages: u64, irq: bool) {
    if let Some(stats) = RELEASE_STATS.get_ptr_mut(index) {
        let stats = unsafe { &mut *stats };
        add_to(&mut stats.calls, 1);
        add_to(&mut stats.pages, pages);
    }
    if let Some(balance) = PIN_BALANCE.get_ptr_mut(0) {
        let balance = unsafe { &mut *balance };
        add_to(&mut balance.released, pages);
        if irq {
            // The `[irq]` rows, from this one counter (see
            // `PinBalance::irq_released`): no hash lookups per page.
            add_to(&mut balance.irq_released, pages);
        }
    }
    if irq {
        return;
    }
    if let Some(proc) = proc_stats() {
        add_to(&mut proc.released, pages);
    }
    cgroup::count_release(pages);
}

/// Sends the per-call event of a release, when one is wanted.
#[inline(always)]
fn emit_release(id: FuncId, pages: u64, irq: bool) {
    let pid_tgid = if irq {
        (u64::from(IRQ_TGID) << 32) | u64::from(IRQ_TGID)
    } else {
        bpf_get_current_pid_tgid()
    };
    if event_wanted(pid_tgid) {
        let mut event = CallEvent {
            start_ns: unsafe { bpf_ktime_get_ns() },
            latency_ns: LATENCY_UNMEASURED,
            pid_tgid,
            nr: pages as i64,
            func: id,
            kind: EVENT_RELEASE,
            cgroup: cgroup::current_cgroup(irq),
            ..CallEvent::default()
        };
        if irq {
            event.comm = IRQ_COMM;
        } else {
            event.comm = current_comm();
        }
        emit(event);
    }
}

/// Return from `unpin_user_pages_dirty_lock`, the one release function
/// traced at its return.
#[inline(always)]
pub fn exit() {
    if !counted() {
        return;
    }
    match task_state(false) {
        Some(state) if state.release_depth != 0 => state.release_depth = 0,
        _ => bump_health(Health::UnmatchedExit),
    }
}

/// `gup_put_folio(folio, refs, flags)`, where every FOLL_PIN release ends:
/// counts GUP's own releases inside a get/pin call (6.1
/// `__gup_longterm_locked` and 6.12 `migrate_longterm_unpinnable_folios`
/// inline the unpin they make for a FOLL_LONGTERM migration, so the unpin
/// probes never see it), the releases of the function it counts
/// ([`ReleaseAtHook`]: `unpin_user_folio`, where that is only a jump
/// here), and with `--lifetimes` ends the hold of the callers' pins.
///
/// `frame` and `return_slot` as for [`entry`].
#[inline(always)]
pub fn folio_put(
    folio: u64,
    refs: i64,
    flags: u64,
    frame: impl Fn() -> u64,
    return_slot: impl FnOnce(u64) -> [u64; 2],
) {
    if flags & foll_pin() == 0 || refs <= 0 {
        return;
    }
    let refs = refs as u64;
    let hook = release_at_hook();
    let (at, mark) = match hook {
        Some(_) => {
            let at = frame();
            (at, return_slot(at))
        }
        None => (0, [0; 2]),
    };
    // Whether a release function's entry counted this release already.
    let mut counted_at_entry = hook.is_none();
    // Most releases come from a thread in no get/pin call: decided by the
    // one task-storage lookup, before reading where the release runs.
    if let Some(state) = task_state(false) {
        if state.depth != 0
            && !outer_call_returned(state)
            && inside_gup_call(state, if at != 0 { at } else { frame() })
        {
            if counted()
                && let Some(balance) = PIN_BALANCE.get_ptr_mut(0)
            {
                add_to(unsafe { &mut (*balance).gup_released }, refs);
            }
            return;
        }
        if !counted_at_entry && mark[0] != 0 && state.hook_mark == mark {
            // `unpin_user_page` or `unpin_folio` counted it and jumped here.
            state.hook_mark = [0; 2];
            counted_at_entry = true;
        }
        if state.direct_folio == folio {
            // Its folio release's entry ended these pins already (and
            // counted the release: it is no release the hook counts).
            state.direct_folio = 0;
            return;
        }
    }
    if let Some(hook) = hook
        && !counted_at_entry
        && !hook_release_counted_elsewhere(hook, mark)
    {
        count_at_hook(RELEASE_AT_HOOK_CANDIDATE, refs, at);
    }
    attribution::folio_released(folio, refs);
}

/// What the release hook counts, when it counts a release function
/// (`RELEASE_AT_HOOK`, this CPU's entry).
#[inline(always)]
fn release_at_hook() -> Option<&'static mut ReleaseAtHook> {
    let hook = RELEASE_AT_HOOK.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a live map.
    let hook = unsafe { &mut *hook };
    if hook.on == 0 { None } else { Some(hook) }
}

/// Whether a release that reached the hook with return address and slot
/// `mark`, outside any get/pin call and not marked by the thread, was
/// counted by a release function's entry all the same: one that calls the
/// hook from its own code (`unpin_user_pages`, ...), or one that jumped
/// here from an interrupt (the CPU's marks, taken here). An unknown
/// return address (no known trampoline layout) is the hook's to count.
#[inline(always)]
fn hook_release_counted_elsewhere(hook: &mut ReleaseAtHook, mark: [u64; 2]) -> bool {
    let caller = mark[1];
    if caller == 0 {
        return false;
    }
    for range in &hook.entry_counted {
        if caller >= range[0] && caller < range[1] {
            return true;
        }
    }
    for at in 0..2 {
        if hook.irq_marks[at] == mark {
            hook.irq_marks[at] = [0; 2];
            return true;
        }
    }
    false
}

/// A release of `pages` pages by the function `id` the hook counts
/// (`unpin_user_folio`), as
/// [`entry`] counts those of the functions probed at their own entry; `at`
/// is the hook's frame.
#[inline(always)]
fn count_at_hook(id: FuncId, pages: u64, at: u64) {
    let irq = in_interrupt(at);
    if irq {
        if filtering() {
            add_health(Health::IrqReleaseNotFollowed, pages);
            return;
        }
    } else if !counted() {
        return;
    }
    count_release(id.wrapping_sub(GUP_FUNC_COUNT as u32), pages, irq);
    emit_release(id, pages, irq);
}
