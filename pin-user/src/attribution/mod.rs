//! Who pins and for how long: reading the per-call-site counters
//! (`CALLERS`) into snapshots, naming call sites ([`symbols`]), the caller
//! views ([`view`]) and pin lifetimes ([`lifetimes`]).

pub mod lifetimes;
pub mod symbols;
pub mod view;

use std::collections::BTreeMap;

use pin_common::{CallerKey, CallerStats};

use crate::probes::{KernelMapError, KernelMaps};

/// Reads `CALLERS`, summing CPUs. Entries that vanish while iterating
/// (LRU eviction) are skipped.
pub fn read_callers(
    maps: KernelMaps<'_>,
) -> Result<BTreeMap<CallerKey, CallerStats>, KernelMapError> {
    let map = maps.callers()?;
    let mut out = BTreeMap::new();
    for (key, values) in map.iter().flatten() {
        let mut total = CallerStats::ZERO;
        for cpu in values.iter() {
            add(&mut total, cpu);
        }
        out.insert(key, total);
    }
    Ok(out)
}

/// Adds `from` into `into`.
pub fn add(into: &mut CallerStats, from: &CallerStats) {
    into.calls += from.calls;
    into.pages += from.pages;
    into.fallbacks += from.fallbacks;
    into.errors += from.errors;
    into.fast_pages += from.fast_pages;
    into.slow_pages += from.slow_pages;
    into.latency_sum_ns += from.latency_sum_ns;
    for (a, b) in into.latency_log2.iter_mut().zip(from.latency_log2.iter()) {
        *a += b;
    }
    into.pins_tracked += from.pins_tracked;
    into.pins_released += from.pins_released;
    into.hold_sum_ns += from.hold_sum_ns;
    for (a, b) in into.hold_log2.iter_mut().zip(from.hold_log2.iter()) {
        *a += b;
    }
    // Set in the creating CPU's slot only; not a counter.
    into.first_ns = into.first_ns.max(from.first_ns);
}

/// `cur - prev`, counter by counter, for the same entry (same `first_ns`).
pub fn sub(cur: &CallerStats, prev: &CallerStats) -> CallerStats {
    let mut d = CallerStats::ZERO;
    d.calls = cur.calls.saturating_sub(prev.calls);
    d.pages = cur.pages.saturating_sub(prev.pages);
    d.fallbacks = cur.fallbacks.saturating_sub(prev.fallbacks);
    d.errors = cur.errors.saturating_sub(prev.errors);
    d.fast_pages = cur.fast_pages.saturating_sub(prev.fast_pages);
    d.slow_pages = cur.slow_pages.saturating_sub(prev.slow_pages);
    d.latency_sum_ns = cur.latency_sum_ns.saturating_sub(prev.latency_sum_ns);
    for (i, slot) in d.latency_log2.iter_mut().enumerate() {
        *slot = cur.latency_log2[i].saturating_sub(prev.latency_log2[i]);
    }
    d.pins_tracked = cur.pins_tracked.saturating_sub(prev.pins_tracked);
    d.pins_released = cur.pins_released.saturating_sub(prev.pins_released);
    d.hold_sum_ns = cur.hold_sum_ns.saturating_sub(prev.hold_sum_ns);
    for (i, slot) in d.hold_log2.iter_mut().enumerate() {
        *slot = cur.hold_log2[i].saturating_sub(prev.hold_log2[i]);
    }
    d.first_ns = cur.first_ns;
    d
}

/// Whether an interval's counters show any activity.
pub fn is_active(d: &CallerStats) -> bool {
    d.calls != 0 || d.pins_released != 0 || d.pins_tracked != 0
}

/// Two call sites with known counters, for the views' tests.
#[cfg(test)]
pub fn sample_callers() -> (
    BTreeMap<CallerKey, CallerStats>,
    BTreeMap<u64, symbols::CallSite>,
) {
    let key = CallerKey::new;
    let mut uring = CallerStats::ZERO;
    uring.calls = 4;
    uring.pages = 64;
    uring.fast_pages = 64;
    uring.latency_sum_ns = 4 * 3000;
    uring.latency_log2[11] = 4;
    uring.pins_tracked = 64;
    uring.pins_released = 48;
    uring.hold_sum_ns = 48 * 2_000_000;
    uring.hold_log2[20] = 48;
    let mut pvm = CallerStats::ZERO;
    pvm.calls = 10;
    pvm.pages = 40;
    pvm.latency_sum_ns = 10 * 900;
    pvm.latency_log2[9] = 10;
    let site = |function: &str, offset| symbols::CallSite {
        function: function.into(),
        offset,
    };
    (
        BTreeMap::from([
            (key(0xffff_ffff_8150_0040, 6), uring),
            (key(0xffff_ffff_8120_01a0, 8), pvm),
        ]),
        BTreeMap::from([
            (0xffff_ffff_8150_0040, site("io_pin_pages", 0x40)),
            (0xffff_ffff_8120_01a0, site("process_vm_rw_core", 0x1a0)),
        ]),
    )
}
