//! The failed-call metric families (`pinwatch_gup_failed_*`): one series
//! per (calling kernel function, variant, outcome, flags), at most
//! [`MAX_FAILURE_SERIES`].

use std::collections::BTreeMap;

use pin_common::failures::{FailureKey, FailureStats};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::families::{Labels, family};
use crate::{figures::failure_views, kernel::symbols::CallSite};

/// At most this many series per family: call sites that fail are few,
/// and each errno/flags pair of one is a series; the rest are counted in
/// `pinwatch_gup_failed_series_dropped`.
pub const MAX_FAILURE_SERIES: usize = 64;

/// Counts of one series: calls, pages asked for, pages got.
type Totals = (u64, u64, u64);

/// The failed-call families; `caller` is the calling kernel function
/// (call sites of one function summed, as in the caller families).
pub(super) fn encode_failures(
    encoder: &mut DescriptorEncoder<'_>,
    failures: &BTreeMap<FailureKey, FailureStats>,
    sites: &BTreeMap<u64, CallSite>,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    // BTreeMap: a stable choice (by labels) keeps each kept series monotonic.
    let mut series: BTreeMap<(String, String, String, String), Totals> = BTreeMap::new();
    for f in failure_views(failures, sites) {
        let function = f.caller.split('+').next().unwrap_or_default().to_string();
        let flags = if f.flags.is_empty() {
            "none".to_string()
        } else {
            f.flags.join(",")
        };
        let t = series
            .entry((function, f.variant, f.outcome, flags))
            .or_default();
        t.0 += f.calls;
        t.1 += f.pages_requested;
        t.2 += f.pages_returned;
    }
    let dropped = series.len().saturating_sub(MAX_FAILURE_SERIES);
    let kept: Vec<(Labels<'static>, Totals)> = series
        .into_iter()
        .take(MAX_FAILURE_SERIES)
        .map(|((caller, variant, outcome, flags), t)| {
            (
                vec![
                    ("caller", caller),
                    ("variant", variant),
                    ("outcome", outcome),
                    ("flags", flags),
                ],
                t,
            )
        })
        .collect();
    let rows = |f: fn(&Totals) -> u64| -> Vec<(Labels<'static>, u64)> {
        kept.iter().map(|(l, t)| (l.clone(), f(t))).collect()
    };
    family(
        encoder,
        "pinwatch_gup_failed_calls",
        "Get/pin calls that returned an errno (outcome=\"EFAULT\"...), no page (\"zero\") or fewer pages than asked for (\"short\"), by calling kernel function, variant and the WRITE/LONGTERM flags passed.",
        Counter,
        rows(|t| t.0),
    )?;
    family(
        encoder,
        "pinwatch_gup_failed_pages_requested",
        "Pages those calls asked for.",
        Counter,
        rows(|t| t.1),
    )?;
    family(
        encoder,
        "pinwatch_gup_failed_pages_returned",
        "Pages those calls got (short returns).",
        Counter,
        rows(|t| t.2),
    )?;
    family(
        encoder,
        "pinwatch_gup_failed_series_dropped",
        "(caller, variant, outcome, flags) combinations not exported because of the series cap.",
        Gauge,
        vec![(vec![], dropped as u64)],
    )
}
