//! The per-caller metric families (`pinwatch_caller_*`): one series per
//! (calling kernel function, variant), at most [`MAX_CALLER_SERIES`].

use std::collections::BTreeMap;

use pin_common::{CallerKey, CallerStats};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::families::{Labels, family, seconds_family};
use crate::{
    figures::{CallerView, caller_views},
    kernel::symbols::CallSite,
};

/// At most this many (caller, variant) series per caller metric; kernels
/// have tens of GUP call sites, so this only bounds a pathological case
/// (counted in `pinwatch_caller_series_dropped`).
pub const MAX_CALLER_SERIES: usize = 64;

/// The per-caller families: `caller` is the calling kernel function.
pub(super) fn encode_callers(
    encoder: &mut DescriptorEncoder<'_>,
    callers: &BTreeMap<CallerKey, CallerStats>,
    sites: &BTreeMap<u64, CallSite>,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let mut views = caller_views(callers, sites);
    // A stable choice (by name) keeps each kept series monotonic.
    views.sort_by(|a, b| (&a.caller, &a.variant).cmp(&(&b.caller, &b.variant)));
    let dropped = views.len().saturating_sub(MAX_CALLER_SERIES);
    views.truncate(MAX_CALLER_SERIES);
    let rows = |f: fn(&CallerView) -> u64| rows(&views, f);
    family(
        encoder,
        "pinwatch_caller_calls",
        "Outermost GUP calls by calling kernel function.",
        Counter,
        rows(|v| v.calls),
    )?;
    family(
        encoder,
        "pinwatch_caller_pages",
        "Pages returned to each calling kernel function.",
        Counter,
        rows(|v| v.pages),
    )?;
    family(
        encoder,
        "pinwatch_caller_fast_path_fallbacks",
        "Fast-path fallbacks by calling kernel function.",
        Counter,
        rows(|v| v.fallbacks),
    )?;
    seconds_family(
        encoder,
        "pinwatch_caller_latency_seconds",
        "Total latency of the calls by calling kernel function (divide by calls for the mean).",
        rows(|v| v.latency_sum_ns),
    )?;
    if views.iter().any(|v| v.pins_tracked > 0) {
        encode_lifetimes(encoder, &views)?;
    }
    family(
        encoder,
        "pinwatch_caller_series_dropped",
        "(caller, variant) pairs not exported because of the series cap.",
        Gauge,
        vec![(vec![], dropped as u64)],
    )
}

/// One row per (caller, variant) of the views.
fn rows(views: &[CallerView], f: fn(&CallerView) -> u64) -> Vec<(Labels<'static>, u64)> {
    views
        .iter()
        .map(|v| {
            (
                vec![("caller", v.caller.clone()), ("variant", v.variant.clone())],
                f(v),
            )
        })
        .collect()
}

/// Pin lifetimes per caller (`--lifetimes`): pins tracked, released, and
/// how long the released ones were held.
fn encode_lifetimes(
    encoder: &mut DescriptorEncoder<'_>,
    views: &[CallerView],
) -> Result<(), std::fmt::Error> {
    use MetricType::Counter;
    let rows = |f: fn(&CallerView) -> u64| rows(views, f);
    family(
        encoder,
        "pinwatch_caller_pins_tracked",
        "Pinned pages whose lifetime is tracked (--lifetimes), by calling function.",
        Counter,
        rows(|v| v.pins_tracked),
    )?;
    family(
        encoder,
        "pinwatch_caller_pins_released",
        "Tracked pinned pages released again, by calling function.",
        Counter,
        rows(|v| v.pins_released),
    )?;
    seconds_family(
        encoder,
        "pinwatch_caller_hold_seconds",
        "Total time released pinned pages were held, by calling function.",
        rows(|v| v.hold_sum_ns),
    )
}
