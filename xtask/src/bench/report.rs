//! From raw samples to the tables: per-repetition ratios to the untraced
//! run of the same repetition, summarised as median and range.

use std::fmt::Write as _;

use super::results::{BenchRun, TracerKind, TracerRun};

/// Median and range of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// Median and range; `None` for no samples.
pub fn spread(samples: &[f64]) -> Option<Spread> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// The tracers in report order.
const TRACED: [TracerKind; 7] = [
    TracerKind::Pinwatch,
    TracerKind::PinwatchNoCallers,
    TracerKind::PinwatchKprobeMulti,
    TracerKind::Baseline,
    TracerKind::Bpftrace,
    TracerKind::Funclatency,
    TracerKind::EmptyPair,
];

fn timing(run: &BenchRun, tracer: &TracerKind, workload: &str, rep: u32) -> Option<f64> {
    run.timings
        .iter()
        .find(|t| &t.tracer == tracer && t.workload == workload && t.rep == rep)
        .map(|t| t.ns_per_call)
}

/// Per repetition: (traced / untraced, traced − untraced) for one workload.
fn overheads(run: &BenchRun, tracer: &TracerKind, workload: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut ratios, mut added) = (Vec::new(), Vec::new());
    for rep in 0..run.reps {
        if let (Some(base), Some(traced)) = (
            timing(run, &TracerKind::Untraced, workload, rep),
            timing(run, tracer, workload, rep),
        ) {
            ratios.push(traced / base);
            added.push(traced - base);
        }
    }
    (ratios, added)
}

/// Added wall-clock nanoseconds per call (median over repetitions).
pub fn added_ns(run: &BenchRun, tracer: &TracerKind, workload: &str) -> Option<f64> {
    spread(&overheads(run, tracer, workload).1).map(|s| s.median)
}

/// In-kernel nanoseconds per call of a tracer's programs (median).
pub fn in_kernel_ns(run: &BenchRun, tracer: &TracerKind, workload: &str) -> Option<f64> {
    let per_call: Vec<f64> = run
        .in_kernel
        .iter()
        .filter(|k| &k.tracer == tracer && k.workload == workload && k.calls > 0)
        .map(|k| k.run_time_ns as f64 / k.calls as f64)
        .collect();
    spread(&per_call).map(|s| s.median)
}

fn runs_per_call(run: &BenchRun, tracer: &TracerKind, workload: &str) -> Option<f64> {
    let per_call: Vec<f64> = run
        .in_kernel
        .iter()
        .filter(|k| &k.tracer == tracer && k.workload == workload && k.calls > 0)
        .map(|k| k.run_count as f64 / k.calls as f64)
        .collect();
    spread(&per_call).map(|s| s.median)
}

/// The two targets for one 1-page workload: pinwatch's added cost over
/// bpftrace's, and its in-kernel cost over the empty pair's.
pub fn targets(run: &BenchRun, workload: &str) -> (Option<f64>, Option<f64>) {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    (
        ratio(
            added_ns(run, &TracerKind::Pinwatch, workload),
            added_ns(run, &TracerKind::Bpftrace, workload),
        ),
        ratio(
            in_kernel_ns(run, &TracerKind::Pinwatch, workload),
            in_kernel_ns(run, &TracerKind::EmptyPair, workload),
        ),
    )
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("–".into(), f)
}

/// One kernel's tables in markdown (columns for the tracers it ran).
pub fn markdown(run: &BenchRun) -> String {
    let traced: Vec<TracerKind> = TRACED
        .into_iter()
        .filter(|t| run.timings.iter().any(|x| &x.tracer == t))
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {} ({} vCPUs, {} repetitions)\n\n`{}`\n",
        run.kernel, run.cpus, run.reps, run.kernel_version
    );
    wall_clock_table(&mut s, run, &traced);
    in_kernel_table(&mut s, run, &traced);
    tracers_table(&mut s, run, &traced);
    targets_table(&mut s, run);
    peers_table(&mut s, run);
    for why in &run.not_measured {
        let _ = writeln!(s, "Not measured on this kernel: {why}\n");
    }
    s
}

/// The tracers' column headings.
fn labels(traced: &[TracerKind]) -> String {
    traced
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Wall-clock time per call: untraced, and each tracer's ratio to it.
fn wall_clock_table(s: &mut String, run: &BenchRun, traced: &[TracerKind]) {
    let _ = writeln!(
        s,
        "Wall-clock time per system call: untraced median, and for each tracer the median ratio to the untraced run of the same repetition [min–max] and the median added time per call.\n"
    );
    let _ = writeln!(
        s,
        "| workload | function | pages | callers | untraced ns/call | {} |",
        labels(traced)
    );
    let _ = writeln!(s, "|---|---|--:|--:|--:|{}", "---|".repeat(traced.len()));
    for w in &run.workloads {
        let base: Vec<f64> = (0..run.reps)
            .filter_map(|r| timing(run, &TracerKind::Untraced, &w.name, r))
            .collect();
        let mut row = format!(
            "| {} | {} | {} | {} | {} |",
            w.name,
            w.function,
            w.pages,
            w.callers,
            opt(spread(&base).map(|s| s.median), |v| format!("{v:.0}"))
        );
        for tracer in traced {
            let (ratios, added) = overheads(run, tracer, &w.name);
            let cell = match (spread(&ratios), spread(&added)) {
                (Some(r), Some(a)) => format!(
                    " {:.2}× [{:.2}–{:.2}], {:+.0} ns |",
                    r.median, r.min, r.max, a.median
                ),
                _ => " – |".into(),
            };
            row.push_str(&cell);
        }
        let _ = writeln!(s, "{row}");
    }
}

/// In-kernel cost per call of each tracer's programs.
fn in_kernel_table(s: &mut String, run: &BenchRun, traced: &[TracerKind]) {
    let _ = writeln!(
        s,
        "\nIn-kernel cost per call (`kernel.bpf_stats_enabled`): run time of the tracer's BPF programs over a statistics pass divided by the calls made, median; program runs per call in parentheses.\n"
    );
    let _ = writeln!(s, "| workload | {} |", labels(traced));
    let _ = writeln!(s, "|---|{}", "--:|".repeat(traced.len()));
    for w in &run.workloads {
        let mut row = format!("| {} |", w.name);
        for tracer in traced {
            let cell = match (
                in_kernel_ns(run, tracer, &w.name),
                runs_per_call(run, tracer, &w.name),
            ) {
                (Some(ns), Some(runs)) => format!(" {ns:.0} ns ({runs:.1}) |"),
                _ => " – |".into(),
            };
            row.push_str(&cell);
        }
        let _ = writeln!(s, "{row}");
    }
}

/// The tracers themselves: start-up, CPU share, memory.
fn tracers_table(s: &mut String, run: &BenchRun, traced: &[TracerKind]) {
    let _ = writeln!(
        s,
        "\nThe tracers themselves: time from start to first report (each reports once a second), CPU share over the timing passes, peak RSS; medians over starts.\n"
    );
    let _ = writeln!(
        s,
        "| tracer | starts | first data | CPU share | peak RSS |\n|---|--:|--:|--:|--:|"
    );
    for tracer in traced {
        let starts: Vec<_> = run
            .tracer_runs
            .iter()
            .filter(|t| &t.tracer == tracer)
            .collect();
        let med = |f: &dyn Fn(&TracerRun) -> f64| {
            spread(&starts.iter().map(|t| f(t)).collect::<Vec<_>>()).map(|s| s.median)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            tracer.label(),
            starts.len(),
            opt(med(&|t| t.first_data_ms), |v| format!("{:.1} s", v / 1e3)),
            opt(med(&|t| t.cpu_share), |v| format!("{:.2} %", v * 100.0)),
            opt(med(&|t| t.peak_rss_kib as f64), |v| format!(
                "{:.1} MiB",
                v / 1024.0
            )),
        );
    }
}

/// The targets for 1-page calls, each met or missed.
fn targets_table(s: &mut String, run: &BenchRun) {
    let _ = writeln!(
        s,
        "\nTargets (1-page calls): pinwatch's added time per call at most ½ of bpftrace's; its in-kernel cost per call at most 2× the empty fentry+fexit pair's.\n"
    );
    let _ = writeln!(
        s,
        "| workload | pinwatch added / bpftrace added | pinwatch in-kernel / empty pair | funclatency in-kernel / empty pair |\n|---|--:|--:|--:|"
    );
    for w in run.workloads.iter().filter(|w| w.pages == 1) {
        let (added, in_kernel) = targets(run, &w.name);
        let verdict = |v: Option<f64>, limit: f64| {
            opt(v, |v| {
                format!("{v:.2} ({})", if v <= limit { "met" } else { "missed" })
            })
        };
        let floor = match (
            in_kernel_ns(run, &TracerKind::Funclatency, &w.name),
            in_kernel_ns(run, &TracerKind::EmptyPair, &w.name),
        ) {
            (Some(f), Some(e)) if e > 0.0 => Some(f / e),
            _ => None,
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            w.name,
            verdict(added, 0.5),
            verdict(in_kernel, 2.0),
            opt(floor, |v| format!("{v:.2}"))
        );
    }
}

/// Issue 20's goal 6, per run: pinwatch's in-kernel cost per 1-page call
/// against funclatency timing that one function (at most 1×), and per
/// call of 256 pages or more against bpftrace tracing the same functions
/// (below 1×). In-kernel figures only: funclatency attaches kprobes,
/// whose own cost (outside its programs) the wall-clock table shows.
fn peers_table(s: &mut String, run: &BenchRun) {
    let ratio = |tracer: &TracerKind, peer: &TracerKind, workload: &str| match (
        in_kernel_ns(run, tracer, workload),
        in_kernel_ns(run, peer, workload),
    ) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let rows: Vec<(&str, &str, TracerKind)> = run
        .workloads
        .iter()
        .filter_map(|w| match w.pages {
            1 => Some((w.name.as_str(), "funclatency", TracerKind::Funclatency)),
            p if p >= 256 => Some((w.name.as_str(), "bpftrace", TracerKind::Bpftrace)),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nAgainst its peers (issue 20, goal 6; in-kernel): per 1-page call at most funclatency's, per call of 256 pages or more below bpftrace's.\n"
    );
    let _ = writeln!(
        s,
        "| workload | peer | pinwatch / peer | pinwatch --attach kprobe-multi / peer |\n|---|---|--:|--:|"
    );
    for (workload, peer_name, peer) in rows {
        let verdict = |v: Option<f64>| {
            opt(v, |v| {
                // At most funclatency's; below bpftrace's.
                let met = if peer == TracerKind::Funclatency {
                    v <= 1.0
                } else {
                    v < 1.0
                };
                format!("{v:.2} ({})", if met { "met" } else { "missed" })
            })
        };
        let _ = writeln!(
            s,
            "| {workload} | {peer_name} | {} | {} |",
            verdict(ratio(&TracerKind::Pinwatch, &peer, workload)),
            verdict(ratio(&TracerKind::PinwatchKprobeMulti, &peer, workload)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{InKernel, Timing, WorkloadSpec};

    #[test]
    fn spread_takes_the_middle() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    fn sample_run() -> BenchRun {
        let t = |rep, tracer, ns| Timing {
            rep,
            tracer,
            workload: "futex-1p".into(),
            ns_per_call: ns,
        };
        let k = |tracer, run_time_ns| InKernel {
            rep: 0,
            tracer,
            workload: "futex-1p".into(),
            calls: 1000,
            run_time_ns,
            run_count: 2000,
            programs: 2,
        };
        BenchRun {
            kernel: "6.12.0".into(),
            kernel_version: "Linux version 6.12.0".into(),
            cpus: 2,
            reps: 2,
            pinwatch_attach: vec![],
            workloads: vec![WorkloadSpec {
                name: "futex-1p".into(),
                kind: "futex-wake".into(),
                pages: 1,
                callers: 1,
                calls: 1000,
                function: "get_user_pages_fast".into(),
                file: None,
            }],
            timings: vec![
                t(0, TracerKind::Untraced, 1000.0),
                t(1, TracerKind::Untraced, 1100.0),
                t(0, TracerKind::Pinwatch, 1100.0),
                t(1, TracerKind::Pinwatch, 1210.0),
                t(0, TracerKind::Bpftrace, 1400.0),
                t(1, TracerKind::Bpftrace, 1540.0),
            ],
            in_kernel: vec![
                k(TracerKind::Pinwatch, 150_000),
                k(TracerKind::EmptyPair, 50_000),
            ],
            tracer_runs: vec![TracerRun {
                rep: 0,
                tracer: TracerKind::Pinwatch,
                function: String::new(),
                first_data_ms: 2500.0,
                cpu_share: 0.01,
                peak_rss_kib: 20480,
            }],
            not_measured: vec![],
        }
    }

    #[test]
    fn ratios_pair_each_repetition_with_its_own_untraced_run() {
        let run = sample_run();
        let (ratios, added) = overheads(&run, &TracerKind::Pinwatch, "futex-1p");
        assert_eq!(ratios, vec![1.1, 1.1]);
        assert_eq!(added, vec![100.0, 110.0]);
        let (added_ratio, in_kernel_ratio) = targets(&run, "futex-1p");
        assert!((added_ratio.unwrap() - 105.0 / 420.0).abs() < 1e-9);
        assert_eq!(in_kernel_ratio, Some(3.0));
    }

    #[test]
    fn markdown_shows_every_table_and_the_verdicts() {
        let md = markdown(&sample_run());
        assert!(
            md.contains(
                "| futex-1p | get_user_pages_fast | 1 | 1 | 1050 | 1.10× [1.10–1.10], +105 ns |"
            ),
            "{md}"
        );
        assert!(md.contains("| futex-1p | 150 ns (2.0) |"), "{md}");
        assert!(
            md.contains("| pinwatch | 1 | 2.5 s | 1.00 % | 20.0 MiB |"),
            "{md}"
        );
        assert!(
            md.contains("| futex-1p | 0.25 (met) | 3.00 (missed) |"),
            "{md}"
        );
        assert!(!md.contains("Not measured"), "{md}");
        // No funclatency figure in the sample: no verdict against it.
        assert!(md.contains("| futex-1p | funclatency | – | – |"), "{md}");
    }

    /// Goal 6's verdicts: at most funclatency's per 1-page call, below
    /// bpftrace's per call of 256 pages.
    #[test]
    fn peers_table_gives_goal_six_verdicts() {
        let mut run = sample_run();
        let k = |tracer, workload: &str, run_time_ns| InKernel {
            rep: 0,
            tracer,
            workload: workload.into(),
            calls: 1000,
            run_time_ns,
            run_count: 2000,
            programs: 2,
        };
        run.workloads.push(WorkloadSpec {
            name: "odirect-256p".into(),
            kind: "odirect-read".into(),
            pages: 256,
            ..run.workloads[0].clone()
        });
        run.in_kernel.extend([
            k(TracerKind::Funclatency, "futex-1p", 150_000),
            k(TracerKind::Pinwatch, "odirect-256p", 300_000),
            k(TracerKind::Bpftrace, "odirect-256p", 300_000),
        ]);
        let md = markdown(&run);
        assert!(
            md.contains("| futex-1p | funclatency | 1.00 (met) | – |"),
            "{md}"
        );
        assert!(
            md.contains("| odirect-256p | bpftrace | 1.00 (missed) | – |"),
            "{md}"
        );
    }

    /// A tracer the kernel refused has no column, and the report says why.
    #[test]
    fn markdown_says_what_this_kernel_could_not_measure() {
        let mut run = sample_run();
        run.not_measured = vec!["pinwatch --attach kprobe-multi: no links here".into()];
        let md = markdown(&run);
        assert!(
            md.contains(
                "Not measured on this kernel: pinwatch --attach kprobe-multi: no links here"
            ),
            "{md}"
        );
        assert!(!md.contains("| pinwatch --attach kprobe-multi |"), "{md}");
    }
}
