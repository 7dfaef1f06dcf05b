//! The counter updates every probe shares: the atomic add into map
//! values, the `HEALTH` counters of events the probes could not account,
//! and the count of entries created in the LRU tables.

use pin_common::Health;

use crate::maps::{HEALTH, TABLE_INSERTS};

/// The errno a `BPF_NOEXIST` insert fails with when the key is there.
pub const EEXIST: i64 = 17;

/// Adds `by` to a counter in a map value. Atomic, because the counter can
/// be updated by two programs at once even in a per-CPU slot: on
/// preemptible kernels (`preempt=full`, PREEMPT_RT, PREEMPT_LAZY) BPF
/// programs run with migration disabled but can be preempted by another
/// task's program on the same CPU, and interrupts nest into task context.
/// A plain read-modify-write could lose the other's increment. With its
/// result unused this compiles to one `lock xadd`.
/// (`AtomicU64::fetch_add` is not offered on the BPF target, which has no
/// compare-and-swap in its base instruction set; the intrinsic lowers to
/// the BPF atomic add that every kernel pinwatch supports has.)
#[inline(always)]
pub fn add_to(counter: &mut u64, by: u64) {
    // SAFETY: the pointer comes from a live `&mut u64` into a map value.
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
    if let Some(counter) = HEALTH.get_ptr_mut(which as u32) {
        add_to(unsafe { &mut *counter }, by);
    }
}

/// Counts an entry created in an LRU table (see `TABLE_INSERTS`).
#[inline(always)]
pub fn count_insert(table: u32) {
    if let Some(counter) = TABLE_INSERTS.get_ptr_mut(table) {
        add_to(unsafe { &mut *counter }, 1);
    }
}
