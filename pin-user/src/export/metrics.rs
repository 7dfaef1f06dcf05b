//! Prometheus metrics from a cumulative [`Snapshot`], encoded with the
//! `prometheus-client` crate (OpenMetrics), plus the classic Prometheus text
//! format for scrapers that do not ask for OpenMetrics.

use std::collections::BTreeMap;

use pin_common::{
    FUNCS, GUP_FUNC_COUNT, GupStats, Health, LATENCY_BUCKETS, catalog::is_fast, maps,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::families::{Labels, encode_vmstat, family, seconds_family};
pub use super::text_format::prometheus_text;
use crate::{
    figures::errno_name, kernel::symbols::CallSite, probes::ProbeStatus, snapshot::Snapshot,
};

/// Everything one scrape exports.
#[derive(Clone, Debug)]
pub struct MetricsInput {
    /// Counters since the agent attached.
    pub snapshot: Snapshot,
    /// Names of the call sites in `snapshot.callers`.
    pub sites: BTreeMap<u64, CallSite>,
    /// What the cgroups in `snapshot.cgroups` are.
    pub cgroup_names: BTreeMap<u64, crate::cgroups::CgroupIdentity>,
    /// The processes holding the most locked or pinned memory, and how
    /// many more hold some.
    pub memlock: (Vec<crate::limits::Holder>, usize),
    /// How each known function attached.
    pub probes: Vec<ProbeStatus>,
    /// (map name, entries in use, capacity).
    pub map_fill: Vec<(&'static str, u64, u64)>,
    /// The kernel memory of each of pinwatch's BPF maps.
    pub map_memory: Vec<crate::probes::footprint::MapFootprint>,
    /// Per traced function: (run time in ns, runs) summed over its
    /// programs, when the kernel keeps BPF run-time statistics.
    pub run_stats: Vec<(&'static str, u64, u64)>,
    /// The agent's own heap in use when the scrape began
    /// ([`crate::agent_memory::heap_in_use`]).
    pub agent_heap_bytes: u64,
}

#[derive(Debug)]
struct Exporter(MetricsInput);

/// `pinwatch_probe_missed_total` rows: every loaded program's skipped
/// runs, and every attached get/pin variant's calls whose return was not
/// seen (zeros included, so each series exists from the first scrape).
fn missed_rows(input: &MetricsInput) -> Vec<(Labels<'static>, u64)> {
    let labels = |function: &str, mechanism: &str, reason: &str| {
        vec![
            ("function", function.to_string()),
            ("mechanism", mechanism.to_string()),
            ("reason", reason.to_string()),
        ]
    };
    let mut rows: Vec<(Labels<'static>, u64)> = input
        .snapshot
        .misses
        .iter()
        .map(|(key, n)| (labels(key.function, key.mechanism(), key.reason()), *n))
        .collect();
    for p in &input.probes {
        if let (Some(mechanism), Some(stats)) = (p.attached, input.snapshot.gup.get(p.id as usize))
        {
            rows.push((
                labels(p.function, &mechanism.to_string(), "return_not_seen"),
                stats.missed_returns,
            ));
        }
    }
    rows
}

fn variant(id: usize) -> (&'static str, String) {
    ("variant", FUNCS[id].name.to_string())
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let input = &self.0;
        encode_variants(&mut encoder, input)?;
        encode_releases(&mut encoder, input)?;
        encode_probe_info(&mut encoder, input)?;
        super::caller_metrics::encode_callers(&mut encoder, &input.snapshot.callers, &input.sites)?;
        super::failure_metrics::encode_failures(
            &mut encoder,
            &input.snapshot.failures,
            &input.sites,
        )?;
        super::cgroup_metrics::encode_cgroups(
            &mut encoder,
            &input.snapshot.cgroups,
            &input.cgroup_names,
        )?;
        super::memlock_metrics::encode_holders(&mut encoder, &input.memlock.0, input.memlock.1)?;
        super::memlock_metrics::encode_refusals(&mut encoder, &input.snapshot.denials)?;
        encode_health(&mut encoder, input)?;
        encode_run_stats(&mut encoder, input)
    }
}

/// Per-variant families: calls, pages, partial and zero returns, fast-path
/// fallbacks and pages, errors, latency.
fn encode_variants(
    encoder: &mut DescriptorEncoder,
    input: &MetricsInput,
) -> Result<(), std::fmt::Error> {
    use MetricType::Counter;
    let gup = &input.snapshot.gup;
    let seen: Vec<usize> = (0..GUP_FUNC_COUNT)
        .filter(|&i| input.probes.get(i).is_some_and(|p| p.attached.is_some()))
        .collect();
    let per_variant =
        |f: &dyn Fn(usize) -> u64| seen.iter().map(|&i| (vec![variant(i)], f(i))).collect();

    family(
        encoder,
        "pinwatch_gup_calls",
        "Outermost GUP calls by variant.",
        Counter,
        per_variant(&|i| gup[i].calls),
    )?;
    let pages = seen
        .iter()
        .flat_map(|&i| {
            [
                ("requested", gup[i].pages_requested),
                ("returned", gup[i].pages_returned),
            ]
            .map(|(outcome, v)| (vec![variant(i), ("outcome", outcome.to_string())], v))
        })
        .collect();
    family(
        encoder,
        "pinwatch_gup_pages",
        "Pages requested from and returned by GUP calls.",
        Counter,
        pages,
    )?;
    family(
        encoder,
        "pinwatch_gup_partial_returns",
        "Calls that returned fewer pages than requested.",
        Counter,
        per_variant(&|i| gup[i].partial),
    )?;
    family(
        encoder,
        "pinwatch_gup_zero_returns",
        "Calls that returned 0 pages.",
        Counter,
        per_variant(&|i| gup[i].zero),
    )?;
    encode_fast_path(encoder, gup, &seen)?;
    encode_errors(encoder, gup, &seen)?;
    encode_latency(encoder, gup, &seen)
}

/// Fast-path fallbacks and the pages each path took, for the variants
/// that have a fast path.
fn encode_fast_path(
    encoder: &mut DescriptorEncoder,
    gup: &[GupStats],
    seen: &[usize],
) -> Result<(), std::fmt::Error> {
    use MetricType::Counter;
    let fast: Vec<usize> = seen
        .iter()
        .copied()
        .filter(|&i| is_fast(i as u32))
        .collect();
    family(
        encoder,
        "pinwatch_gup_fast_path_fallbacks",
        "Fast-path calls that fell back to the slow path.",
        Counter,
        fast.iter()
            .map(|&i| (vec![variant(i)], gup[i].fallbacks))
            .collect(),
    )?;
    let paths = fast
        .iter()
        .flat_map(|&i| {
            [("fast", gup[i].fast_pages), ("slow", gup[i].slow_pages)]
                .map(|(path, v)| (vec![variant(i), ("path", path.to_string())], v))
        })
        .collect();
    family(
        encoder,
        "pinwatch_gup_fast_path_pages",
        "Pages taken by the fast path and by the slow path after a fallback.",
        Counter,
        paths,
    )
}

/// Error returns per variant and errno (only those that occurred).
fn encode_errors(
    encoder: &mut DescriptorEncoder,
    gup: &[GupStats],
    seen: &[usize],
) -> Result<(), std::fmt::Error> {
    let errors = seen
        .iter()
        .flat_map(|&i| {
            gup[i]
                .errno
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(move |(e, n)| (vec![variant(i), ("errno", errno_name(e))], *n))
        })
        .collect();
    family(
        encoder,
        "pinwatch_gup_errors",
        "GUP calls that returned an error, by errno.",
        MetricType::Counter,
        errors,
    )
}

/// Latency of outermost calls per variant, from the kernel's log2 buckets.
fn encode_latency(
    encoder: &mut DescriptorEncoder,
    gup: &[GupStats],
    seen: &[usize],
) -> Result<(), std::fmt::Error> {
    let mut latency = encoder.encode_descriptor(
        "pinwatch_gup_latency_seconds",
        "Latency of outermost GUP calls (log2 buckets kept in the kernel).",
        None,
        MetricType::Histogram,
    )?;
    for &i in seen {
        let buckets: Vec<(f64, u64)> = (0..LATENCY_BUCKETS)
            .map(|b| {
                let le = if b + 1 == LATENCY_BUCKETS {
                    f64::INFINITY
                } else {
                    (1u64 << (b + 1)) as f64 / 1e9
                };
                (le, gup[i].latency_log2[b])
            })
            .collect();
        let labels = vec![variant(i)];
        latency
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                gup[i].latency_sum_ns as f64 / 1e9,
                gup[i].calls,
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// The release family, pins outstanding, GUP's own releases and vmstat.
fn encode_releases(
    encoder: &mut DescriptorEncoder,
    input: &MetricsInput,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let releases: Vec<usize> = (GUP_FUNC_COUNT..FUNCS.len())
        .filter(|&i| input.probes.get(i).is_some_and(|p| p.attached.is_some()))
        .collect();
    let rel = &input.snapshot.release;
    let by_function = |f: &dyn Fn(usize) -> u64| {
        releases
            .iter()
            .map(|&i| {
                (
                    vec![("function", FUNCS[i].name.to_string())],
                    f(i - GUP_FUNC_COUNT),
                )
            })
            .collect()
    };
    family(
        encoder,
        "pinwatch_unpin_calls",
        "Outermost calls of the release (unpin) family.",
        Counter,
        by_function(&|r| rel[r].calls),
    )?;
    family(
        encoder,
        "pinwatch_unpin_pages",
        "Pages released by the unpin family.",
        Counter,
        by_function(&|r| rel[r].pages),
    )?;
    // Both from PIN_BALANCE, read at one instant: subtracting two maps
    // read apart is off by what was pinned and released in between.
    let balance = input.snapshot.balance;
    let mut outstanding = encoder.encode_descriptor(
        "pinwatch_outstanding_pins",
        "FOLL_PIN pages taken minus pages released since pinwatch attached.",
        None,
        Gauge,
    )?;
    outstanding.encode_gauge(&balance.outstanding())?;
    let mut internal = encoder.encode_descriptor(
            "pinwatch_gup_internal_unpin_pages",
            "FOLL_PIN pages GUP released itself inside a get/pin call (rollbacks, FOLL_LONGTERM migration retries), seen at gup_put_folio; nr_foll_pin_released counts these and pinwatch_unpin_pages_total together.",
            None,
            Counter,
        )?;
    internal.encode_counter::<NoLabelSet, _, u64>(&balance.gup_released, None)?;
    if let Some(vm) = input.snapshot.vmstat {
        encode_vmstat(encoder, vm)?;
    }
    Ok(())
}

/// How each known function is traced.
fn encode_probe_info(
    encoder: &mut DescriptorEncoder,
    input: &MetricsInput,
) -> Result<(), std::fmt::Error> {
    let mut info = encoder.encode_descriptor(
        "pinwatch_probe",
        "How each known GUP function is traced.",
        None,
        MetricType::Info,
    )?;
    for p in &input.probes {
        let attach = match p.attached {
            Some(m) => m.to_string(),
            None if p.not_needed => "not-needed".to_string(),
            None => "none".to_string(),
        };
        let labels = vec![("function", p.function.to_string()), ("attach", attach)];
        info.encode_info(&labels)?;
    }
    Ok(())
}

/// What the probes lost or missed, and the maps' fill and evictions.
fn encode_health(
    encoder: &mut DescriptorEncoder,
    input: &MetricsInput,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    family(
        encoder,
        "pinwatch_probe_events_lost",
        "Probe events pinwatch could not account, by reason.",
        Counter,
        Health::ALL
            .iter()
            .map(|&h| {
                (
                    vec![("reason", h.label().to_string())],
                    input.snapshot.health[h as usize],
                )
            })
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_probe_missed",
        "Calls pinwatch's probes missed, by traced function, mechanism and reason: entry_recursion and return_recursion are program runs the kernel skipped (the program was already running on that CPU: preempted, or another kprobe program was running); kprobe_missed and kretprobe_missed are the kprobe's own misses (Linux 6.7+: another kprobe was running, or no kretprobe instance was free); return_not_seen are outermost calls never counted because their return was not seen (the return_recursion and kretprobe_missed of an outermost function are among them).",
        Counter,
        missed_rows(input),
    )?;
    family(
        encoder,
        "pinwatch_map_entries",
        "Distinct entries one read of pinwatch's BPF hash maps found: under churn, entries evicted and created during the read are both found, so it can exceed the capacity.",
        Gauge,
        input
            .map_fill
            .iter()
            .map(|(m, n, _)| (vec![("map", m.to_string())], *n))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_map_capacity",
        "Capacity of pinwatch's BPF hash maps.",
        Gauge,
        input
            .map_fill
            .iter()
            .map(|(m, _, c)| (vec![("map", m.to_string())], *c))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_map_memory_bytes",
        "Kernel memory of each of pinwatch's BPF maps: memlock in the map's fdinfo when pinwatch attached (from Linux 5.11 to 6.3 the kernel's estimate, keys plus values times capacity).",
        Gauge,
        input
            .map_memory
            .iter()
            .map(|m| (vec![("map", m.name.clone())], m.bytes))
            .collect(),
    )?;
    family(
        encoder,
        "pinwatch_agent_heap_bytes",
        "Heap the agent held when this scrape began: bytes allocated and not freed, by its own count (its resident memory adds code, stacks and the allocator's free space).",
        Gauge,
        vec![(Vec::new(), input.agent_heap_bytes)],
    )?;
    let evicted = input.snapshot.evicted;
    family(
        encoder,
        "pinwatch_map_evicted",
        "Entries the kernel evicted from pinwatch's LRU hash maps when they were full (before Linux 6.16 also well short of full on many-CPU hosts), with the per-process / per-call-site / per-cgroup / per-failure counts made since the previous read; the per-variant totals lose nothing.",
        Counter,
        vec![
            (vec![("map", maps::PROCS.to_string())], evicted.procs),
            (vec![("map", maps::CALLERS.to_string())], evicted.callers),
            (vec![("map", maps::CGROUPS.to_string())], evicted.cgroups),
            (vec![("map", maps::FAILURES.to_string())], evicted.failures),
        ],
    )?;
    Ok(())
}

/// The kernel's run time and count of pinwatch's programs (BPF stats on).
fn encode_run_stats(
    encoder: &mut DescriptorEncoder,
    input: &MetricsInput,
) -> Result<(), std::fmt::Error> {
    use MetricType::Counter;
    if !input.run_stats.is_empty() {
        seconds_family(
            encoder,
            "pinwatch_bpf_run_seconds",
            "Time the kernel spent in pinwatch's programs, per traced function (needs BPF stats enabled).",
            input
                .run_stats
                .iter()
                .map(|(f, ns, _)| (vec![("function", f.to_string())], *ns))
                .collect(),
        )?;
        family(
            encoder,
            "pinwatch_bpf_runs",
            "Runs of pinwatch's programs, per traced function (needs BPF stats enabled).",
            Counter,
            input
                .run_stats
                .iter()
                .map(|(f, _, runs)| (vec![("function", f.to_string())], *runs))
                .collect(),
        )?;
    }
    Ok(())
}

/// Encodes `input` as an OpenMetrics text exposition (with `# EOF`).
pub fn openmetrics(input: MetricsInput) -> String {
    super::families::exposition(Exporter(input))
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
