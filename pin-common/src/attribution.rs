//! Who pins and for how long: the per-caller counters and the pin
//! lifetime records the probes keep (see `pinwatch stat`'s caller table and
//! `--lifetimes`).
//!
//! A *caller* is the kernel return address the outermost get/pin call
//! returns to: the call site in io_uring, the block layer, process_vm_*...
//! The agent symbolizes it; the kernel only keys maps by it.

use crate::LATENCY_BUCKETS;

/// Capacity of the per-caller table (`CALLERS`, LRU): call sites are few
/// (tens on a busy host), so this bounds memory without evicting real ones.
pub const CALLERS_CAPACITY: u32 = 1024;

/// Capacity of the outstanding-pin table (`PIN_LIFETIMES`) when
/// `--lifetimes` is on (one entry per pinned folio; 256 MiB of 4 KiB pages).
pub const LIFETIMES_CAPACITY: u32 = 65536;

/// Pages of one call whose folios are remembered; the rest are counted in
/// `Health::LifetimesTruncated` (4 MiB of 4 KiB pages per call).
pub const LIFETIME_PAGES_PER_CALL: u32 = 1024;

/// Stack frames read to find the caller: enough for the BPF program and
/// trampoline frames (fentry), the traced function and its caller.
pub const CALLER_FRAMES: usize = 6;

/// Number of log2 hold-time buckets (ns); the last one takes everything
/// longer (2^47 ns ≈ 39 hours).
pub const HOLD_BUCKETS: usize = 48;

/// Key of the per-caller table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallerKey {
    /// Return address in the caller (0: the stack did not show it).
    pub caller: u64,
    /// [`crate::FuncId`] of the outermost get/pin function it called.
    pub func: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl CallerKey {
    /// The key of `func` called from return address `caller`.
    pub const fn new(caller: u64, func: u32) -> Self {
        Self {
            caller,
            func,
            _pad: 0,
        }
    }
}

/// Per-caller counters in the `CALLERS` LRU hash: one entry shared by all
/// CPUs, updated with atomic adds. Per-CPU entries of this size (784
/// bytes) would take 196 MiB of kernel memory at 256 CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallerStats {
    /// Outermost calls made from this call site.
    pub calls: u64,
    /// Pages they returned.
    pub pages: u64,
    /// Fast-path calls that fell back to the slow path.
    pub fallbacks: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    /// Pages from the lockless fast path.
    pub fast_pages: u64,
    /// Pages from the slow path after a fallback.
    pub slow_pages: u64,
    /// Sum of latencies (ns).
    pub latency_sum_ns: u64,
    /// log2 latency histogram (see [`crate::latency_bucket`]).
    pub latency_log2: [u64; LATENCY_BUCKETS],
    /// Pinned pages whose lifetime is being tracked (`--lifetimes`).
    pub pins_tracked: u64,
    /// Tracked pinned pages released again.
    pub pins_released: u64,
    /// Sum of hold times of released tracked pages (ns).
    pub hold_sum_ns: u64,
    /// log2 hold-time histogram of released tracked pages (pages per
    /// bucket, see [`hold_bucket`]).
    pub hold_log2: [u64; HOLD_BUCKETS],
    /// When the entry was created (ns, monotonic): tells the agent which
    /// entries a count of `ProbeCounts::inserts` already includes.
    pub first_ns: u64,
}

impl CallerStats {
    /// All counters at zero.
    pub const ZERO: CallerStats = CallerStats {
        calls: 0,
        pages: 0,
        fallbacks: 0,
        errors: 0,
        fast_pages: 0,
        slow_pages: 0,
        latency_sum_ns: 0,
        latency_log2: [0; LATENCY_BUCKETS],
        pins_tracked: 0,
        pins_released: 0,
        hold_sum_ns: 0,
        hold_log2: [0; HOLD_BUCKETS],
        first_ns: 0,
    };
}

/// One pinned folio whose release is awaited, in `PIN_LIFETIMES` (key:
/// the folio's kernel address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinRecord {
    /// Sum of the start times (ns, monotonic) of its outstanding pins: a
    /// release is timed from their mean, so hold-time sums stay exact for
    /// a folio pinned again before its earlier pins are released (one
    /// start time would time every release from the oldest pin and make a
    /// hot, re-pinned folio look leaked).
    pub start_sum_ns: u64,
    /// Caller of the call that pinned it first.
    pub caller: u64,
    /// Pins (pages) of this folio still held.
    pub refs: u64,
    /// Process that pinned it first.
    pub tgid: u32,
    /// [`crate::FuncId`] of the pinning call.
    pub func: u32,
}

impl PinRecord {
    /// Mean start time of its outstanding pins (ns, monotonic): the start
    /// of the one pin when only one is held.
    pub fn mean_start_ns(&self) -> u64 {
        self.start_sum_ns.checked_div(self.refs).unwrap_or(0)
    }
}

/// Returns the hold-time bucket for a duration in nanoseconds.
#[inline(always)]
pub fn hold_bucket(ns: u64) -> usize {
    if ns == 0 {
        return 0;
    }
    let bit = 63 - ns.leading_zeros() as usize;
    if bit >= HOLD_BUCKETS {
        HOLD_BUCKETS - 1
    } else {
        bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<CallerKey>(), 16);
        assert_eq!(core::mem::size_of::<PinRecord>(), 32);
        assert_eq!(
            core::mem::size_of::<CallerStats>(),
            8 * (11 + LATENCY_BUCKETS + HOLD_BUCKETS)
        );
    }

    #[test]
    fn hold_buckets_clamp() {
        assert_eq!(hold_bucket(0), 0);
        assert_eq!(hold_bucket(1 << 20), 20);
        assert_eq!(hold_bucket(u64::MAX), HOLD_BUCKETS - 1);
    }
}
