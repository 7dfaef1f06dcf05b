//! Who pins and for how long: reading the per-call-site counters
//! (`CALLERS`) into snapshots, naming them (through `kernel::symbols`) and
//! pin lifetimes ([`lifetimes`]). The caller views are figures
//! (`figures::CallerView`).

pub mod lifetimes;

use std::collections::BTreeMap;

use pin_common::{CallerKey, CallerStats};

use crate::probes::{KernelMapError, KernelMaps};

/// Reads `CALLERS`, by batches ([`crate::probes::batch`]). Entries that
/// vanish while reading (LRU eviction) are skipped.
pub fn read_callers(
    maps: KernelMaps<'_>,
) -> Result<BTreeMap<CallerKey, CallerStats>, KernelMapError> {
    Ok(crate::probes::batch::entries(&maps.callers()?)
        .into_iter()
        .collect())
}

/// Names of the call sites in `callers` (can wait for kallsyms to be
/// parsed; nothing to wait for without callers).
pub fn name_sites(
    callers: &BTreeMap<CallerKey, CallerStats>,
) -> BTreeMap<u64, crate::kernel::symbols::CallSite> {
    if callers.is_empty() {
        BTreeMap::new()
    } else {
        crate::kernel::symbols::resolve(callers.keys().map(|k| k.caller))
    }
}

/// Whether an interval's counters show any activity.
pub fn is_active(d: &CallerStats) -> bool {
    d.calls != 0 || d.pins_released != 0 || d.pins_tracked != 0
}

/// Two call sites with known counters, for the views' tests.
#[cfg(test)]
pub fn sample_callers() -> (
    BTreeMap<CallerKey, CallerStats>,
    BTreeMap<u64, crate::kernel::symbols::CallSite>,
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
    let site = |function: &str, offset| crate::kernel::symbols::CallSite {
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
