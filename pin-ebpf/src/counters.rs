//! The counter updates every probe shares: the atomic add into map
//! values, and the probes' counts of rare events (`PROBE_COUNTS`): events
//! they could not account (`Health`) and entries created in the LRU
//! tables.

use core::cell::UnsafeCell;

use pin_common::{HEALTH_COUNT, Health, INSERTS_LEN, ProbeCounts};

/// The errno a `BPF_NOEXIST` insert fails with when the key is there.
pub const EEXIST: i64 = 17;

/// The probes' counts of rare events: the object's one writable global,
/// which aya loads as the map `.bss` (`pin_common::maps::PROBE_COUNTS`),
/// shared by every CPU. A global rather than a map because a program
/// reaches it at a constant address: each site that looked up a map (as
/// these counters were, a per-CPU array) is a helper call that the
/// verifier walks with its failure branch and then rewrites inline, and
/// each rewrite copies the whole program's per-instruction data (on 6.12
/// the rewrites were a fifth of a program's load: BENCHMARKS.md, "Start-up,
/// tenth look"). These counts are rare, so one shared copy costs no
/// contention worth a per-CPU one.
#[unsafe(no_mangle)]
static PROBE_COUNTS: SharedCounts = SharedCounts(UnsafeCell::new(ProbeCounts::ZERO));

/// [`PROBE_COUNTS`]'s cell: written only by atomic adds.
#[repr(transparent)]
struct SharedCounts(UnsafeCell<ProbeCounts>);

// SAFETY: every write is an atomic add (`add_at`); the agent only reads.
unsafe impl Sync for SharedCounts {}

/// Adds `by` to a counter in a map value. Atomic, because the counter can
/// be updated by two programs at once even in a per-CPU slot: on
/// preemptible kernels (`preempt=full`, PREEMPT_RT, PREEMPT_LAZY) BPF
/// programs run with migration disabled but can be preempted by another
/// task's program on the same CPU, and interrupts nest into task context.
/// A plain read-modify-write could lose the other's increment. With its
/// result unused this compiles to one `lock xadd`.
#[inline(always)]
pub fn add_to(counter: &mut u64, by: u64) {
    add_at(counter, by);
}

/// [`add_to`] through a pointer, for counters shared by every CPU, which no
/// `&mut` may stand for.
/// (`AtomicU64::fetch_add` is not offered on the BPF target, which has no
/// compare-and-swap in its base instruction set; the intrinsic lowers to
/// the BPF atomic add that every kernel pinwatch supports has.)
#[inline(always)]
fn add_at(counter: *mut u64, by: u64) {
    // SAFETY: the pointer is to a live, aligned u64 in a map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, by,
        );
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
    let index = which as usize;
    if index < HEALTH_COUNT {
        // SAFETY: in bounds; the place is only ever added to atomically.
        add_at(
            unsafe { &raw mut (*PROBE_COUNTS.0.get()).health[index] },
            by,
        );
    }
}

/// Counts an entry created in an LRU table (`pin_common::INSERTS_*`).
#[inline(always)]
pub fn count_insert(table: u32) {
    if table < INSERTS_LEN {
        // SAFETY: in bounds; the place is only ever added to atomically.
        add_at(
            unsafe { &raw mut (*PROBE_COUNTS.0.get()).inserts[table as usize] },
            1,
        );
    }
}
