//! Per-caller views: call sites grouped by the kernel function that made
//! the call and the variant it called, as `stat`, the dashboard, records
//! and the exporter show them.

use std::collections::BTreeMap;

use pin_common::{CallerKey, CallerStats, FUNCS};
use serde::{Deserialize, Serialize};

use super::{Latency, fmt_ns, latency_quantile_ns, per_second};
use crate::{attribution::is_active, counters::Counters, kernel::symbols::CallSite};

/// How long released pins were held, from the kernel's log2 histogram
/// (percentiles are bucket upper bounds; the mean is exact).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldTimes {
    /// Median hold time, ns.
    pub p50: Option<u64>,
    /// 99th percentile, ns.
    pub p99: Option<u64>,
    /// Longest hold (bucket bound), ns.
    pub max: Option<u64>,
    /// Exact mean, ns.
    pub mean: Option<u64>,
    /// Bucket i counts pages held less than 2^(i+1) ns.
    pub log2_buckets: Vec<u64>,
}

/// One calling kernel function and the variant it called.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallerView {
    /// The kernel function making the call (e.g. `io_pin_pages`).
    pub caller: String,
    /// The outermost get/pin function it called.
    pub variant: String,
    /// The distinct return addresses seen (`function+offset`).
    pub sites: Vec<String>,
    /// Outermost calls.
    pub calls: u64,
    /// Pages returned.
    pub pages: u64,
    /// Fast-path calls that fell back.
    pub fallbacks: u64,
    /// Calls returning an error.
    pub errors: u64,
    /// Pages from the fast path.
    pub fast_pages: u64,
    /// Pages from the slow path.
    pub slow_pages: u64,
    /// Call latency.
    pub latency: Latency,
    /// Sum of call latencies, ns (for exact means over any interval).
    pub latency_sum_ns: u64,
    /// Pinned pages whose lifetime was tracked (`--lifetimes`).
    pub pins_tracked: u64,
    /// Tracked pinned pages released.
    pub pins_released: u64,
    /// Hold times of the released ones (`--lifetimes`, when any).
    pub hold: Option<HoldTimes>,
    /// Sum of hold times of the released ones, ns.
    pub hold_sum_ns: u64,
}

impl HoldTimes {
    fn from_stats(s: &CallerStats) -> Option<Self> {
        let hist = &s.hold_log2;
        (s.pins_released > 0).then(|| HoldTimes {
            p50: latency_quantile_ns(hist, 0.5),
            p99: latency_quantile_ns(hist, 0.99),
            max: latency_quantile_ns(hist, 1.0),
            mean: Some(s.hold_sum_ns / s.pins_released),
            log2_buckets: hist.to_vec(),
        })
    }
}

/// Groups call sites by (calling function, variant), busiest first (by
/// pages, then calls). `sites` names the return addresses.
pub fn caller_views(
    callers: &BTreeMap<CallerKey, CallerStats>,
    sites: &BTreeMap<u64, CallSite>,
) -> Vec<CallerView> {
    let mut groups: BTreeMap<(String, u32), (CallerStats, Vec<String>)> = BTreeMap::new();
    for (key, stats) in callers.iter().filter(|(_, s)| is_active(s)) {
        let site = sites
            .get(&key.caller)
            .cloned()
            .unwrap_or_else(|| CallSite::bare(key.caller));
        let entry = groups
            .entry((site.function.clone(), key.func))
            .or_insert((CallerStats::ZERO, Vec::new()));
        entry.0.merge(stats);
        entry.1.push(site.to_string());
    }
    let mut views: Vec<CallerView> = groups
        .into_iter()
        .map(|((caller, func), (s, mut sites))| {
            sites.sort();
            sites.dedup();
            CallerView {
                caller,
                variant: FUNCS
                    .get(func as usize)
                    .map_or_else(|| format!("func#{func}"), |f| f.name.to_string()),
                sites,
                calls: s.calls,
                pages: s.pages,
                fallbacks: s.fallbacks,
                errors: s.errors,
                fast_pages: s.fast_pages,
                slow_pages: s.slow_pages,
                latency: Latency::from_hist(&s.latency_log2, s.latency_sum_ns, s.calls),
                latency_sum_ns: s.latency_sum_ns,
                pins_tracked: s.pins_tracked,
                pins_released: s.pins_released,
                hold: HoldTimes::from_stats(&s),
                hold_sum_ns: s.hold_sum_ns,
            }
        })
        .collect();
    views.sort_by(|a, b| {
        (b.pages, b.calls, &a.caller, &a.variant).cmp(&(a.pages, a.calls, &b.caller, &b.variant))
    });
    views
}

/// How many callers the text views list.
pub const TOP_CALLERS: usize = 12;

/// The caller table of `stat`'s text output.
pub fn render_text(views: &[CallerView], seconds: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if views.is_empty() {
        return out;
    }
    let with_hold = views.iter().any(|v| v.pins_tracked + v.pins_released > 0);
    let _ = write!(
        out,
        "{:<30} {:<24} {:>9} {:>10} {:>8} {:>8} {:>8}",
        "caller", "variant", "calls/s", "pages/s", "fallbk", "p50", "p99"
    );
    if with_hold {
        let _ = write!(out, " {:>8} {:>8} {:>9}", "pinned", "unpinned", "held p50");
    }
    out.push('\n');
    for v in views.iter().take(TOP_CALLERS) {
        let _ = write!(
            out,
            "{:<30} {:<24} {:>9.1} {:>10.1} {:>8} {:>8} {:>8}",
            v.caller,
            v.variant,
            per_second(v.calls, seconds),
            per_second(v.pages, seconds),
            v.fallbacks,
            fmt_ns(v.latency.p50),
            fmt_ns(v.latency.p99),
        );
        if with_hold {
            let _ = write!(
                out,
                " {:>8} {:>8} {:>9}",
                v.pins_tracked,
                v.pins_released,
                fmt_ns(v.hold.as_ref().and_then(|h| h.p50)),
            );
        }
        out.push('\n');
    }
    if views.len() > TOP_CALLERS {
        let _ = writeln!(out, "  ... {} more callers", views.len() - TOP_CALLERS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(calls: u64, pages: u64) -> CallerStats {
        let mut s = CallerStats::ZERO;
        s.calls = calls;
        s.pages = pages;
        s.latency_log2[10] = calls;
        s.latency_sum_ns = calls * 1500;
        s
    }

    #[test]
    fn sites_group_by_function_and_variant() {
        let key = CallerKey::new;
        let callers = BTreeMap::from([
            (key(0x1010, 6), stats(2, 32)),
            (key(0x1020, 6), stats(1, 16)),
            (key(0x2000, 8), stats(5, 5)),
            (key(0, 8), stats(1, 1)),
            (key(0x3000, 8), CallerStats::ZERO),
        ]);
        let site = |function: &str, offset| CallSite {
            function: function.into(),
            offset,
        };
        let sites = BTreeMap::from([
            (0x1010, site("io_pin_pages", 0x10)),
            (0x1020, site("io_pin_pages", 0x20)),
            (0x2000, site("process_vm_rw_core", 0x1a0)),
        ]);
        let views = caller_views(&callers, &sites);
        assert_eq!(views.len(), 3, "{views:#?}");
        assert_eq!(views[0].caller, "io_pin_pages");
        assert_eq!(views[0].variant, "pin_user_pages_fast");
        assert_eq!(views[0].calls, 3);
        assert_eq!(views[0].pages, 48);
        assert_eq!(views[0].sites, ["io_pin_pages+0x10", "io_pin_pages+0x20"]);
        assert_eq!(views[0].latency.mean, Some(1500));
        assert_eq!(views[1].caller, "process_vm_rw_core");
        assert_eq!(views[2].caller, "[unknown]");
        assert!(views.iter().all(|v| v.hold.is_none()));
        let text = render_text(&views, 1.0);
        assert!(text.contains("io_pin_pages"), "{text}");
        assert!(!text.contains("held"), "{text}");
    }
}
