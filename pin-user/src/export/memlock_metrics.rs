//! The per-process memlock families (`pinwatch_process_memlock_*`): for
//! the processes holding the most locked or pinned memory, their
//! RLIMIT_MEMLOCK and what they have charged against it (from /proc), at
//! most [`MAX_HOLDER_SERIES`]; and the kernel's refusals of memlock
//! charges by check (`pinwatch_memlock_refusals_total`).

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::families::{Labels, family};
use std::collections::BTreeMap;

use pin_common::limits::{CHECK_COUNT, Denial, DenialKey};

use crate::{figures::Verdict, limits::Holder};

/// At most this many processes per family: enough to see every real
/// pinner on a host (a database, a VMM, an RDMA or GPU job), bounded
/// against a fork storm of small ones.
pub const MAX_HOLDER_SERIES: usize = 32;

/// The per-process memlock families; `more` holders were left out.
pub(super) fn encode_holders(
    encoder: &mut DescriptorEncoder<'_>,
    holders: &[Holder],
    more: usize,
) -> Result<(), std::fmt::Error> {
    use MetricType::Gauge;
    let labels = |h: &Holder| -> Labels<'static> {
        vec![("pid", h.pid.to_string()), ("comm", h.comm.clone())]
    };
    family(
        encoder,
        "pinwatch_process_memlock_limit_bytes",
        "RLIMIT_MEMLOCK soft limit of the processes holding the most locked or pinned memory (absent when unlimited).",
        Gauge,
        holders
            .iter()
            .filter_map(|h| Some((labels(h), h.memlock.limit?)))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_process_locked_bytes",
        "Memory charged to the process's locked_vm (VmLck: mlock, VFIO type1).",
        Gauge,
        holders
            .iter()
            .map(|h| (labels(h), h.memlock.locked))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_process_pinned_bytes",
        "Memory charged to the process's pinned_vm (VmPin: RDMA, io_uring, perf).",
        Gauge,
        holders
            .iter()
            .map(|h| (labels(h), h.memlock.pinned))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_process_memlock_series_dropped",
        "Processes holding locked or pinned memory not exported because of the series cap.",
        Gauge,
        vec![(vec![], more as u64)],
    )
}

/// Refusals by check, every check listed (zeros included, so each series
/// exists from the first scrape). Summed over the `LIMIT_DENIALS` rows
/// on record: a row the LRU evicted (beyond 256 refused processes) takes
/// its count with it.
pub(super) fn encode_refusals(
    encoder: &mut DescriptorEncoder<'_>,
    denials: &BTreeMap<DenialKey, Denial>,
) -> Result<(), std::fmt::Error> {
    let rows = (0..CHECK_COUNT)
        .map(|check| {
            let key = DenialKey { tgid: 0, check };
            let name = Verdict::from_row(&key, &Denial::default()).check;
            let total = denials
                .iter()
                .filter(|(k, _)| k.check == check)
                .map(|(_, d)| d.denials)
                .sum();
            (vec![("check", name.to_string())], total)
        })
        .collect();
    family(
        encoder,
        "pinwatch_memlock_refusals",
        "Memlock charges the kernel refused (RLIMIT_MEMLOCK), by the check that decided (io_uring: __io_account_mem or io_account_mem; account_locked_vm: __account_locked_vm; mlock: do_mlock).",
        MetricType::Counter,
        rows,
    )
}
