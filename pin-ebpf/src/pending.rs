//! Per-thread pending counts (full object only): a thread's full get
//! calls (not pins) of one variant, from one call site, in one cgroup add
//! up in its own task state with plain adds, in one of two blocks (the
//! keys of the first two kinds of call it made since the last fold), and
//! reach the shared rows (the variant's, call site's, process's and
//! cgroup's) in one fold: when the thread exits, and at each of the
//! agent's reads of the maps, through the task iterator (`fold_tasks`)
//! the agent runs first. So the rows are exact at every read for every
//! call that had returned when it began, without three hash lookups and
//! 17 atomic adds on each call's return (BENCHMARKS.md, "Per-thread
//! pending counts: built").
//!
//! The thread and a fold on another CPU (the iterator's) never both move a
//! count: each takes the lock word with a compare-and-exchange first, and
//! the one that finds it taken leaves the blocks alone (the thread then
//! accounts its call directly, the iterator skips the thread until the
//! next read). Calls that fail or come back short, calls under a third
//! key, and the first call under each key since a fold (which creates the
//! rows as ever, with its process's name and its time) are accounted
//! directly. So are pins: each has a release counted at its own moment,
//! and the pins held (pages pinned minus released, per host, process and
//! cgroup) must come from counts of one instant, or a pin still pending
//! would show its release without it. A fold only adds to rows that exist
//! (one evicted meanwhile loses the counts, as an evicted row's since the
//! last read always does), which keeps it cheap for the verifier.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};
use pin_common::{GUP_FUNC_COUNT, TaskState};

use crate::{
    attribution::{self, Deltas},
    cgroup,
    counters::add_to,
    maps::{GUP_STATS, PROCS},
    outcome::PathSplit,
    settings::{callers_on, defer_on},
    task_storage::{Block, Pending},
};

/// The lock word's values: free, held by the thread, held by a fold.
const FREE: u64 = 0;
const THREAD: u64 = 1;
const FOLD: u64 = 2;

/// Tries to take `lock` from [`FREE`] to `to`.
#[inline(always)]
fn try_lock(lock: &mut u64, to: u64) -> bool {
    // SAFETY: a live `&mut u64` into the task's storage, which another
    // CPU's fold may touch only through this same word.
    let (_, won) = unsafe {
        core::intrinsics::atomic_cxchg::<
            u64,
            { core::intrinsics::AtomicOrdering::SeqCst },
            { core::intrinsics::AtomicOrdering::SeqCst },
        >(lock, FREE, to)
    };
    won
}

/// Frees `lock`, after the counts: an exchange (a full barrier on every
/// architecture) rather than a plain store, which a weakly ordered CPU
/// could make visible before them.
#[inline(always)]
fn unlock(lock: &mut u64) {
    // SAFETY: as in `try_lock`.
    unsafe {
        core::intrinsics::atomic_xchg::<u64, { core::intrinsics::AtomicOrdering::SeqCst }>(
            lock, FREE,
        );
    }
}

/// Adds a full call that returned `ret` pages in `ns` to the thread's
/// pending counts; false when the call is to be accounted directly (not a
/// full call, the first under its key since a fold, a third key, or a
/// fold holding the blocks).
#[inline(always)]
pub fn defer(
    pending: &mut Pending,
    state: &TaskState,
    ret: i64,
    ns: u64,
    paths: &PathSplit,
) -> bool {
    if ret <= 0 || ret != state.nr || !defer_on() {
        return false;
    }
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if !try_lock(&mut pending.lock, THREAD) {
        return false;
    }
    let mut deferred = false;
    for block in pending.blocks.iter_mut() {
        if block.keyed == 0 {
            // The first call under its key since the last fold: accounted
            // directly (which makes its rows, named and timed as ever),
            // and its key is this block's until the next fold.
            block.keyed = 1;
            block.outer = state.outer;
            block.caller = state.caller;
            block.cgroup = cgroup;
            block.tgid = bpf_get_current_pid_tgid() >> 32;
            break;
        }
        if block.outer == state.outer && block.caller == state.caller && block.cgroup == cgroup {
            add_call(block, ret, ns, paths);
            deferred = true;
            break;
        }
    }
    // Neither block's key, both taken: accounted directly until the next
    // fold (folding here would put the fold in every return program, for
    // the verifier to check in each: 0.1-0.3 s more start-up on 6.12).
    unlock(&mut pending.lock);
    deferred
}

/// Adds one full call to `block`.
#[inline(always)]
fn add_call(pending: &mut Block, ret: i64, ns: u64, paths: &PathSplit) {
    pending.calls += 1;
    pending.pages += ret as u64;
    pending.fallbacks += paths.fell_back as u64;
    pending.fast_pages += paths.fast_pages;
    pending.slow_pages += paths.slow_pages;
    pending.latency_sum_ns += ns;
    if ns > pending.latency_max_ns {
        pending.latency_max_ns = ns;
    }
    if let Some(calls) = pending.latency_log2.get_mut(pin_common::latency_bucket(ns)) {
        *calls += 1;
    }
}

/// Folds a thread's pending counts (at the thread's exit, or from the
/// iterator on any CPU) and frees the block's key for the thread's next
/// call; skipped while the thread holds the block (its call in progress
/// then reaches the rows at the next fold).
#[inline(always)]
pub fn fold(pending: &mut Pending) {
    // Keys are taken in order: an untaken first block means nothing waits.
    if pending.blocks[0].keyed == 0 || !try_lock(&mut pending.lock, FOLD) {
        return;
    }
    for block in pending.blocks.iter_mut() {
        if block.calls != 0 {
            fold_once(block);
        }
        block.keyed = 0;
    }
    unlock(&mut pending.lock);
}

/// [`move_counts`], which the verifier checks once per program: a global
/// BPF function.
#[inline(always)]
fn fold_once(block: &mut Block) {
    pinwatch_fold_pending(block);
}

/// [`move_counts`] as a global BPF function; its pointer may be null as
/// far as the verifier knows.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_fold_pending(block: *mut Block) -> u32 {
    // SAFETY: a block of a locked pending set in a task's storage.
    if let Some(block) = unsafe { block.as_mut() } {
        move_counts(block);
    }
    0
}

/// Moves the pending counts into the shared rows and zeroes them.
#[inline(always)]
fn move_counts(pending: &mut Block) {
    let outer = pending.outer;
    if outer as usize >= GUP_FUNC_COUNT {
        return;
    }
    let (calls, pages) = (pending.calls, pending.pages);
    if let Some(stats) = GUP_STATS.get_ptr_mut(outer) {
        let stats = unsafe { &mut *stats };
        add_to(&mut stats.calls, calls);
        add_to(&mut stats.pages_requested, pages);
        add_to(&mut stats.pages_returned, pages);
        add_to(&mut stats.fallbacks, pending.fallbacks);
        add_to(&mut stats.fast_pages, pending.fast_pages);
        add_to(&mut stats.slow_pages, pending.slow_pages);
        add_to(&mut stats.latency_sum_ns, pending.latency_sum_ns);
        if pending.latency_max_ns > stats.latency_max_ns {
            stats.latency_max_ns = pending.latency_max_ns;
        }
        for (into, from) in stats
            .latency_log2
            .iter_mut()
            .zip(pending.latency_log2.iter())
        {
            // Every bucket, zero or not: straight code the verifier walks
            // once, where a test per bucket had it walk each branch.
            add_to(into, *from);
        }
    }
    if callers_on() {
        attribution::add_deltas(
            pending.caller,
            outer,
            &Deltas {
                calls,
                pages,
                fallbacks: pending.fallbacks,
                fast_pages: pending.fast_pages,
                slow_pages: pending.slow_pages,
                latency_sum_ns: pending.latency_sum_ns,
                latency_log2: &pending.latency_log2,
            },
        );
    }
    add_to_process(pending.tgid as u32, calls, pages);
    cgroup::add_calls(pending.cgroup, calls, pages);
    pending.calls = 0;
    pending.pages = 0;
    pending.fallbacks = 0;
    pending.fast_pages = 0;
    pending.slow_pages = 0;
    pending.latency_sum_ns = 0;
    pending.latency_max_ns = 0;
    for calls in pending.latency_log2.iter_mut() {
        *calls = 0;
    }
}

/// Full get calls added up in a block, in process `tgid`'s row, which the
/// first of them made. A row the LRU table evicted meanwhile is not made
/// anew: the counts go with it, as an evicted row's since the last read
/// always do (and the eviction is counted); no creation path for the
/// verifier to walk.
#[inline(always)]
fn add_to_process(tgid: u32, calls: u64, pages: u64) {
    if let Some(row) = PROCS.get_ptr_mut(tgid) {
        let row = unsafe { &mut *row };
        add_to(&mut row.calls, calls);
        add_to(&mut row.pages, pages);
    }
}
