//! Comparing two recordings for a performance gate: per variant, the
//! figures that get worse when pinning regresses, each flagged only when
//! its change is beyond both the threshold and the run-to-run noise the
//! recordings' own intervals show.

use serde::Serialize;

use super::record::{Counts, Record, VariantTotals};
use crate::figures::VariantFigures;

/// Which direction is worse for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Worse {
    /// Higher is worse (latency, fallbacks, errors, calls).
    Higher,
    /// Lower is worse (pages per call).
    Lower,
}

/// The verdict on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within threshold or noise.
    Same,
    /// Better beyond threshold and noise.
    Improved,
    /// Worse beyond threshold and noise.
    Regression,
}

/// One compared metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricDiff {
    /// Kernel function name.
    pub variant: String,
    /// Metric name.
    pub metric: &'static str,
    /// Value in the base recording.
    pub base: f64,
    /// Value in the new recording.
    pub new: f64,
    /// (new - base) / base; infinite when base is 0 and new is not.
    pub change: f64,
    /// Relative run-to-run noise seen in the intervals (2 standard
    /// deviations of the per-interval values over their mean, the larger of
    /// the two recordings).
    pub noise: f64,
    /// Which direction is worse.
    pub worse: Worse,
    /// The verdict.
    pub verdict: Verdict,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffReport {
    /// Relative threshold used (0.05 = 5%).
    pub threshold: f64,
    /// Number of regressions.
    pub regressions: usize,
    /// Every compared metric.
    pub metrics: Vec<MetricDiff>,
}

type Extract = fn(&VariantFigures) -> Option<f64>;

/// The compared metrics: name, worse direction, which figure.
const METRICS: &[(&str, Worse, Extract)] = &[
    ("calls", Worse::Higher, |v| Some(v.calls as f64)),
    (
        "pages_per_call",
        Worse::Lower,
        VariantFigures::pages_per_call,
    ),
    (
        "fallback_rate",
        Worse::Higher,
        VariantFigures::fallback_ratio,
    ),
    ("latency_p50_ns", Worse::Higher, |v| {
        v.latency.p50.map(|x| x as f64)
    }),
    ("latency_p99_ns", Worse::Higher, |v| {
        v.latency.p99.map(|x| x as f64)
    }),
    ("error_rate", Worse::Higher, VariantFigures::error_ratio),
];

/// Relative noise of a metric across a recording's intervals.
fn noise(record: &Record, variant: &str, extract: Extract, total_metric: bool) -> f64 {
    let values: Vec<f64> = record
        .intervals
        .iter()
        .filter_map(|i: &super::record::Interval| {
            let v = i.counts.totals.get(variant)?;
            let x = extract(&v.figures(variant))?;
            // Totals scale with interval length: compare them as rates.
            Some(if total_metric {
                x / i.duration_s.max(1e-9)
            } else {
                x
            })
        })
        .collect();
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    2.0 * var.sqrt() / mean.abs()
}

fn variants(c: &Counts) -> impl Iterator<Item = &String> {
    c.totals.keys()
}

/// Compares `new` against `base` with a relative `threshold`.
pub fn diff(base: &Record, new: &Record, threshold: f64) -> DiffReport {
    let mut names: Vec<&String> = variants(&base.counts)
        .chain(variants(&new.counts))
        .collect();
    names.sort();
    names.dedup();
    let empty = VariantTotals::default();
    let mut metrics = Vec::new();
    for name in names {
        let b = base.counts.totals.get(name).unwrap_or(&empty).figures(name);
        let n = new.counts.totals.get(name).unwrap_or(&empty).figures(name);
        for &(metric, worse, extract) in METRICS {
            let (Some(bv), Some(nv)) = (extract(&b), extract(&n)) else {
                continue;
            };
            let change = if bv == 0.0 {
                if nv == 0.0 {
                    0.0
                } else {
                    f64::INFINITY.copysign(nv)
                }
            } else {
                (nv - bv) / bv
            };
            let total_metric = metric == "calls";
            let noise = noise(base, name, extract, total_metric).max(noise(
                new,
                name,
                extract,
                total_metric,
            ));
            let beyond = change.abs() > threshold && change.abs() > noise;
            let worse_dir = match worse {
                Worse::Higher => change > 0.0,
                Worse::Lower => change < 0.0,
            };
            let verdict = match (beyond, worse_dir) {
                (false, _) => Verdict::Same,
                (true, true) => Verdict::Regression,
                (true, false) => Verdict::Improved,
            };
            metrics.push(MetricDiff {
                variant: name.clone(),
                metric,
                base: bv,
                new: nv,
                change,
                noise,
                worse,
                verdict,
            });
        }
    }
    DiffReport {
        threshold,
        regressions: metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Regression)
            .count(),
        metrics,
    }
}

/// Renders the comparison as a table.
pub fn render_text(r: &DiffReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<16} {:>12} {:>12} {:>9} {:>8}  verdict",
        "variant", "metric", "base", "new", "change", "noise"
    );
    let pct = |x: f64| {
        if x.is_infinite() {
            "new".to_string()
        } else {
            format!("{:+.1}%", 100.0 * x)
        }
    };
    for m in &r.metrics {
        let _ = writeln!(
            out,
            "{:<26} {:<16} {:>12.3} {:>12.3} {:>9} {:>7.1}%  {}",
            m.variant,
            m.metric,
            m.base,
            m.new,
            pct(m.change),
            100.0 * m.noise,
            match m.verdict {
                Verdict::Same => "ok",
                Verdict::Improved => "improved",
                Verdict::Regression => "REGRESSION",
            }
        );
    }
    let _ = writeln!(
        out,
        "{} regression(s) at threshold {:.1}%",
        r.regressions,
        100.0 * r.threshold
    );
    out
}

/// Parses a threshold such as `5%` or `0.05`.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let value = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("threshold {s:?} is not a number or percentage (try 5%)"))?;
    if !(0.0..=10.0).contains(&value) || value.is_nan() {
        return Err(format!("threshold {s} out of range (0% to 1000%)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::export::record::{FastPath, Interval, Latency, Meta, SCHEMA};

    fn totals(calls: u64, fallbacks: u64, p99: u64) -> VariantTotals {
        VariantTotals {
            calls,
            pages_requested: calls * 16,
            pages_pinned: calls * 16,
            fast_path: Some(FastPath {
                fallbacks,
                fast_pages: 0,
                slow_pages: 0,
            }),
            latency_ns: Latency {
                p50: Some(1024),
                p99: Some(p99),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A 10-interval recording; `jitter(i)` scales interval i's figures.
    fn record(calls: u64, fallbacks: u64, p99: u64, jitter: impl Fn(usize) -> f64) -> Record {
        let intervals: Vec<Interval> = (0..10)
            .map(|i| {
                let j = jitter(i);
                let c = ((calls / 10) as f64 * j) as u64;
                let mut t = BTreeMap::new();
                t.insert(
                    "pin_user_pages_fast".to_string(),
                    totals(c, ((fallbacks / 10) as f64 * j) as u64, p99),
                );
                Interval {
                    t_s: i as f64,
                    duration_s: 1.0,
                    counts: Counts {
                        totals: t,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let mut t = BTreeMap::new();
        t.insert(
            "pin_user_pages_fast".to_string(),
            totals(calls, fallbacks, p99),
        );
        Record {
            schema: SCHEMA.into(),
            meta: Meta {
                kernel: "k".into(),
                hostname: "h".into(),
                started: "2026-11-22T00:00:00Z".into(),
                duration_s: 10.0,
                interval_s: 1.0,
                attach: BTreeMap::new(),
                command: None,
                exit_status: None,
                reduced: None,
            },
            counts: Counts {
                totals: t,
                ..Default::default()
            },
            intervals,
        }
    }

    #[test]
    fn planted_regression_is_flagged() {
        let base = record(10_000, 100, 8192, |_| 1.0);
        let new = record(10_000, 900, 32768, |_| 1.0);
        let r = diff(&base, &new, 0.05);
        let flagged: Vec<&str> = r
            .metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Regression)
            .map(|m| m.metric)
            .collect();
        assert_eq!(
            flagged,
            vec!["fallback_rate", "latency_p99_ns"],
            "{}",
            render_text(&r)
        );
    }

    #[test]
    fn pure_noise_is_not_a_regression() {
        // ±8% per-interval jitter and 6% more calls: beyond the 5%
        // threshold but within the noise the intervals show.
        let base = record(10_000, 500, 8192, |i| if i % 2 == 0 { 0.92 } else { 1.08 });
        let new = record(10_600, 530, 8192, |i| if i % 2 == 0 { 1.08 } else { 0.92 });
        let r = diff(&base, &new, 0.05);
        assert_eq!(r.regressions, 0, "{}", render_text(&r));
    }

    #[test]
    fn improvements_are_not_regressions() {
        let base = record(10_000, 900, 32768, |_| 1.0);
        let new = record(10_000, 100, 8192, |_| 1.0);
        let r = diff(&base, &new, 0.05);
        assert_eq!(r.regressions, 0);
        assert!(r.metrics.iter().any(|m| m.verdict == Verdict::Improved));
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("5%"), Ok(0.05));
        assert_eq!(parse_threshold("0.1"), Ok(0.1));
        assert!(parse_threshold("five").is_err());
        assert!(parse_threshold("-5%").is_err());
    }
}
