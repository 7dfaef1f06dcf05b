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
    /// Per traced function: (run time in ns, runs) summed over its
    /// programs, when the kernel keeps BPF run-time statistics.
    pub run_stats: Vec<(&'static str, u64, u64)>,
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
        super::cgroup_metrics::encode_cgroups(
            &mut encoder,
            &input.snapshot.cgroups,
            &input.cgroup_names,
        )?;
        super::memlock_metrics::encode_holders(&mut encoder, &input.memlock.0, input.memlock.1)?;
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
    let evicted = input.snapshot.evicted;
    family(
        encoder,
        "pinwatch_map_evicted",
        "Entries the kernel evicted from pinwatch's LRU hash maps when they were full (before Linux 6.16 also well short of full on many-CPU hosts), with the per-process / per-call-site / per-cgroup counts made since the previous read; the per-variant totals lose nothing.",
        Counter,
        vec![
            (vec![("map", maps::PROCS.to_string())], evicted.procs),
            (vec![("map", maps::CALLERS.to_string())], evicted.callers),
            (vec![("map", maps::CGROUPS.to_string())], evicted.cgroups),
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
mod tests {
    use std::{collections::BTreeMap, io::Write as _, process::Stdio, time::Instant};

    use pin_common::ReleaseStats;

    use super::*;
    use crate::{
        probes::{Mechanism, ProbeStatus},
        snapshot::ProcTotals,
        vmstat::PinCounters,
    };

    fn id(name: &str) -> usize {
        FUNCS.iter().position(|f| f.name == name).unwrap()
    }

    /// A fixed input: two variants with traffic, one error, releases.
    pub(crate) fn input() -> MetricsInput {
        let mut gup = vec![GupStats::ZERO; GUP_FUNC_COUNT];
        let fast = &mut gup[id("pin_user_pages_fast")];
        fast.calls = 10;
        fast.pages_requested = 160;
        fast.pages_returned = 150;
        fast.partial = 1;
        fast.fallbacks = 2;
        fast.fast_pages = 120;
        fast.slow_pages = 30;
        fast.latency_sum_ns = 12_000;
        fast.latency_log2[9] = 8;
        fast.latency_log2[13] = 2;
        let remote = &mut gup[id("pin_user_pages_remote")];
        remote.calls = 3;
        remote.pages_requested = 8;
        remote.pages_returned = 2;
        remote.errors = 2;
        remote.errno[14] = 2;
        remote.latency_sum_ns = 90_000;
        remote.latency_log2[15] = 3;
        let mut release = vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT];
        release[id("unpin_user_folio") - GUP_FUNC_COUNT] = ReleaseStats {
            calls: 150,
            pages: 150,
        };
        let probes = FUNCS
            .iter()
            .enumerate()
            .map(|(i, f)| ProbeStatus {
                id: i as u32,
                function: f.name,
                role: "r",
                symbol: (f.name != "pin_user_pages_fast_only").then(|| f.name.to_string()),
                attached: match f.name {
                    "pin_user_pages_fast_only" => None,
                    "pin_user_pages_remote" => Some(Mechanism::Kprobe),
                    _ => Some(Mechanism::Fentry),
                },
                not_needed: false,
                notes: vec![],
            })
            .collect();
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1d2c3e_4f50_4a6b_8c7d_9e0f1a2b3c4d.slice/cri-containerd-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope";
        let cgroup = |calls, pages, released, errors| crate::snapshot::CgroupTotals {
            calls,
            pages,
            pinned: pages,
            released,
            errors,
            first_ns: 0,
        };
        MetricsInput {
            sites: crate::attribution::sample_callers().1,
            memlock: (
                vec![crate::limits::Holder {
                    pid: 7,
                    comm: "fio".into(),
                    memlock: crate::limits::MemlockState {
                        limit: Some(8 << 20),
                        limit_hard: None,
                        locked: 0,
                        pinned: 152 << 12,
                    },
                }],
                3,
            ),
            cgroup_names: BTreeMap::from([
                (0, crate::cgroups::CgroupIdentity::of_path("[irq]")),
                (9001, crate::cgroups::CgroupIdentity::of_path(pod)),
            ]),
            snapshot: Snapshot {
                taken: Instant::now(),
                counts: crate::snapshot::CounterSet {
                    gup,
                    release,
                    procs: BTreeMap::from([(
                        7,
                        ProcTotals {
                            comm: "fio".into(),
                            calls: 13,
                            pages: 152,
                            pinned: 152,
                            released: 150,
                            first_ns: 0,
                        },
                    )]),
                    cgroups: BTreeMap::from([
                        (0, cgroup(0, 0, 100, 0)),
                        (9001, cgroup(13, 152, 50, 2)),
                    ]),
                    health: [0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
                    misses: crate::probes::misses::sample(),
                    callers: crate::attribution::sample_callers().0,
                    balance: pin_common::PinBalance {
                        pinned: 152,
                        released: 150,
                        gup_released: 16,
                    },
                    evicted: crate::snapshot::Evictions {
                        procs: 21808,
                        callers: 3,
                        cgroups: 1,
                    },
                    vmstat: Some(PinCounters {
                        nr_foll_pin_acquired: 1000,
                        nr_foll_pin_released: 990,
                    }),
                },
            },
            probes,
            map_fill: vec![("PROCS", 1, 8192)],
            run_stats: vec![("pin_user_pages_fast", 250_000, 20)],
        }
    }

    #[test]
    fn prometheus_text_golden() {
        insta::assert_snapshot!(prometheus_text(&openmetrics(input())));
    }

    #[test]
    fn openmetrics_golden() {
        let om = openmetrics(input());
        assert!(om.ends_with("# EOF\n"));
        insta::assert_snapshot!(om);
    }

    #[test]
    fn content_negotiation() {
        assert!(wants_openmetrics_header(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics_header(Some("text/plain")));
        assert!(!wants_openmetrics_header(None));
    }

    fn wants_openmetrics_header(accept: Option<&str>) -> bool {
        crate::export::serve::wants_openmetrics(accept)
    }

    /// The real parser and linter: promtool (Debian package `prometheus`,
    /// installed by `cargo xtask setup`).
    #[test]
    fn promtool_accepts_the_exposition() {
        let text = prometheus_text(&openmetrics(input()));
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus): run `cargo xtask setup`");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{text}"
        );
    }
}
