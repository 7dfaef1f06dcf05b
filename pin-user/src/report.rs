//! Views of a [`Delta`]: the per-interval figures `stat` prints as a table
//! or as JSON lines. Every number here is a kernel counter difference or a
//! ratio of two.

use std::collections::BTreeMap;

use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats};
use serde::{Deserialize, Serialize};

use crate::{
    attribution::{
        lifetimes::Outstanding,
        view::{CallerView, caller_views},
    },
    snapshot::ProcTotals,
    snapshot::{Delta, latency_quantile_ns},
    vmstat::PinCounters,
};

/// Latency figures of one variant, from the kernel's log2 histogram: the
/// percentiles are upper bounds of the buckets holding them, the mean is
/// exact. Shared by `stat --json` and recordings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median, ns.
    pub p50: Option<u64>,
    /// 90th percentile, ns.
    pub p90: Option<u64>,
    /// 99th percentile, ns.
    pub p99: Option<u64>,
    /// Slowest call, ns.
    pub max: Option<u64>,
    /// Exact mean (latency sum / calls), ns.
    pub mean: Option<u64>,
    /// Bucket i counts calls faster than 2^(i+1) ns; the last takes the rest.
    pub log2_buckets: Vec<u64>,
}

impl Latency {
    /// From a variant's counters.
    pub fn from_stats(s: &GupStats) -> Self {
        Self::from_hist(&s.latency_log2, s.latency_sum_ns, s.calls)
    }

    /// From a log2 histogram, the latency sum and the number of calls.
    pub fn from_hist(hist: &[u64], sum_ns: u64, calls: u64) -> Self {
        Latency {
            p50: latency_quantile_ns(hist, 0.5),
            p90: latency_quantile_ns(hist, 0.9),
            p99: latency_quantile_ns(hist, 0.99),
            max: latency_quantile_ns(hist, 1.0),
            mean: (calls > 0).then(|| sum_ns / calls),
            log2_buckets: hist.to_vec(),
        }
    }
}

/// One GUP variant over an interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VariantView {
    /// Kernel function name.
    pub variant: &'static str,
    /// Whether the variant has a lockless fast path (fallbacks apply).
    pub fast_path: bool,
    /// Outermost calls.
    pub calls: u64,
    /// Pages requested.
    pub pages_requested: u64,
    /// Pages returned.
    pub pages: u64,
    /// Calls returning fewer pages than requested (but some).
    pub partial: u64,
    /// Calls returning 0.
    pub zero: u64,
    /// Calls returning an error.
    pub errors: u64,
    /// Errors by errno name.
    pub errno: BTreeMap<String, u64>,
    /// Fast-path calls that fell back to the slow path.
    pub fallbacks: u64,
    /// Pages taken by the fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path after a fallback.
    pub slow_pages: u64,
    /// Latency.
    pub latency: Latency,
}

/// One release function over an interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReleaseView {
    /// Kernel function name.
    pub function: &'static str,
    /// Outermost calls by GUP's callers.
    pub calls: u64,
    /// Pages they released.
    pub pages: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One process over an interval (releases count for the process whose
/// context ran them, e.g. I/O completion).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessView {
    /// Process id (tgid).
    pub pid: u32,
    /// Its counters.
    #[serde(flatten)]
    pub totals: ProcTotals,
}

/// How many processes a view lists.
pub const TOP_PROCESSES: usize = 10;

/// Everything `stat` shows for one interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IntervalView {
    /// Interval length in seconds.
    pub interval_s: f64,
    /// Variants with any call in the interval.
    pub variants: Vec<VariantView>,
    /// Functions this kernel has that pinwatch could not attach: their
    /// calls are not in any figure (`pinwatch probes` says why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untraced: Vec<String>,
    /// Release functions with any call in the interval.
    pub release: Vec<ReleaseView>,
    /// FOLL_PIN pages GUP released itself inside a get/pin call (rollbacks,
    /// FOLL_LONGTERM migration retries), seen at `gup_put_folio`:
    /// `nr_foll_pin_acquired` counts them on top of the pages pin calls
    /// returned, `nr_foll_pin_released` on top of the callers' releases.
    #[serde(skip_serializing_if = "is_zero")]
    pub gup_internal_pages: u64,
    /// The most active processes (by pages, then calls), at most
    /// [`TOP_PROCESSES`].
    pub processes: Vec<ProcessView>,
    /// /proc/vmstat pin counter changes (not flushed: per-CPU batching can
    /// delay up to a few pages per CPU).
    pub vmstat: Option<PinCounters>,
    /// Calling kernel functions, busiest first.
    pub callers: Vec<CallerView>,
    /// What is still pinned (`--lifetimes` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outstanding: Option<Outstanding>,
    /// Events the probes could not account.
    pub health: HealthView,
}

/// Probe health over an interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HealthView {
    /// Per-task state that could not be created (calls not accounted).
    pub task_state_lost: u64,
    /// Returns without a matching entry (e.g. kretprobe misses).
    pub unmatched_exits: u64,
    /// Per-process entries lost.
    pub proc_state_lost: u64,
    /// Forked processes of a followed command that could not be followed.
    pub tracked_lost: u64,
    /// Per-call events dropped because the ring buffer was full.
    pub events_lost: u64,
    /// Outermost calls whose stack did not show the caller.
    pub callers_unknown: u64,
    /// Pinned pages not lifetime-tracked: beyond the per-call limit.
    pub lifetimes_truncated: u64,
    /// Pinned pages not lifetime-tracked: the table was full.
    pub lifetimes_full: u64,
    /// FOLL_PIN releases of pages pinwatch did not see pinned.
    pub untracked_releases: u64,
    /// Outermost calls never counted because their return was not seen
    /// (found stale at the thread's next call).
    pub missed_returns: u64,
    /// Program runs the kernel skipped (its per-program recursion guard),
    /// per traced function and program; only those that skipped any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_runs: Vec<SkippedRuns>,
    /// Pages released in interrupt context while a process tree was
    /// followed: whose pins they were is unknown, so the tree's counts
    /// leave them out.
    pub irq_releases_not_followed: u64,
    /// Per-process entries the kernel evicted from `PROCS` (LRU) with the
    /// counts they held since the previous read.
    pub procs_evicted: u64,
    /// Per-call-site entries the kernel evicted from `CALLERS` (LRU).
    pub callers_evicted: u64,
}

/// Runs of one program the kernel skipped over an interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SkippedRuns {
    /// The traced function.
    pub function: &'static str,
    /// `fentry`, `fexit`, `kprobe` or `kretprobe`.
    pub program: &'static str,
    /// Why: `entry_recursion`, `return_recursion` (the program's guard),
    /// `kprobe_missed`, `kretprobe_missed` (the kprobe's own count).
    pub reason: &'static str,
    /// Runs skipped.
    pub runs: u64,
}

impl HealthView {
    /// Whether there is a miss to report: calls whose return was not seen,
    /// or program runs the kernel skipped.
    pub fn any_missed(&self) -> bool {
        self.missed_returns > 0 || !self.skipped_runs.is_empty()
    }
}

/// A process row's pid as shown: `-` for the `[irq]` row of releases
/// made in interrupt context (`pin_common::IRQ_TGID`, no real process).
pub fn pid_label(pid: u32) -> String {
    if pid == pin_common::IRQ_TGID {
        "-".to_string()
    } else {
        pid.to_string()
    }
}

/// Symbolic name of an errno value GUP returns.
pub fn errno_name(errno: usize) -> String {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::EHWPOISON => "EHWPOISON",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// A variant's error returns by errno name (only those that occurred).
pub fn errno_counts(s: &GupStats) -> BTreeMap<String, u64> {
    s.errno
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(e, n)| (errno_name(e), *n))
        .collect()
}

/// Builds the view of one variant's delta.
pub fn variant_view(id: usize, d: &GupStats) -> VariantView {
    VariantView {
        variant: FUNCS[id].name,
        fast_path: pin_common::catalog::is_fast(id as u32),
        calls: d.calls,
        pages_requested: d.pages_requested,
        pages: d.pages_returned,
        partial: d.partial,
        zero: d.zero,
        errors: d.errors,
        errno: errno_counts(d),
        fallbacks: d.fallbacks,
        fast_pages: d.fast_pages,
        slow_pages: d.slow_pages,
        latency: Latency::from_stats(d),
    }
}

impl IntervalView {
    /// The view of a delta.
    pub fn new(delta: &Delta) -> Self {
        Self {
            interval_s: delta.seconds,
            untraced: Vec::new(),
            variants: delta
                .gup
                .iter()
                .enumerate()
                .take(GUP_FUNC_COUNT)
                .filter(|(_, d)| d.calls > 0)
                .map(|(id, d)| variant_view(id, d))
                .collect(),
            release: delta
                .release
                .iter()
                .enumerate()
                .filter(|(_, r)| r.calls > 0)
                .map(|(i, r)| ReleaseView {
                    function: FUNCS[GUP_FUNC_COUNT + i].name,
                    calls: r.calls,
                    pages: r.pages,
                })
                .collect(),
            gup_internal_pages: delta.balance.gup_released,
            processes: {
                let mut procs: Vec<ProcessView> = delta
                    .procs
                    .iter()
                    .map(|(pid, p)| ProcessView {
                        pid: *pid,
                        totals: p.clone(),
                    })
                    .collect();
                procs.sort_by(|a, b| {
                    (b.totals.pages, b.totals.calls, a.pid).cmp(&(
                        a.totals.pages,
                        a.totals.calls,
                        b.pid,
                    ))
                });
                procs.truncate(TOP_PROCESSES);
                procs
            },
            vmstat: delta.vmstat,
            callers: caller_views(&delta.callers, &delta.sites),
            outstanding: None,
            health: HealthView {
                task_state_lost: delta.health[0],
                unmatched_exits: delta.health[1],
                proc_state_lost: delta.health[2],
                tracked_lost: delta.health[3],
                events_lost: delta.health[4],
                callers_unknown: delta.health[5],
                lifetimes_truncated: delta.health[6],
                lifetimes_full: delta.health[7],
                untracked_releases: delta.health[8],
                missed_returns: delta.health[9],
                irq_releases_not_followed: delta.health[11],
                skipped_runs: delta
                    .misses
                    .iter()
                    .filter(|(_, runs)| **runs > 0)
                    .map(|(key, runs)| SkippedRuns {
                        function: key.function,
                        program: key.program,
                        reason: key.reason(),
                        runs: *runs,
                    })
                    .collect(),
                procs_evicted: delta.evicted.procs,
                callers_evicted: delta.evicted.callers,
            },
        }
    }

    /// Renders a vmstat-like text table.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let secs = self.interval_s.max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "variant",
            "calls/s",
            "pages/s",
            "pg/call",
            "partial",
            "errors",
            "fallback%",
            "fast_pg",
            "slow_pg",
            "p50",
            "p99"
        );
        if self.variants.is_empty() {
            let _ = writeln!(out, "  (no GUP calls in {:.2}s)", self.interval_s);
        }
        if !self.untraced.is_empty() {
            let _ = writeln!(
                out,
                "  untraced here (calls not counted): {}",
                self.untraced.join(", ")
            );
        }
        for v in &self.variants {
            let per_call = if v.calls > 0 {
                v.pages as f64 / v.calls as f64
            } else {
                0.0
            };
            let fallback = if v.fast_path {
                format!("{:.1}", 100.0 * v.fallbacks as f64 / v.calls.max(1) as f64)
            } else {
                "-".to_string()
            };
            let _ = writeln!(
                out,
                "{:<26} {:>9.1} {:>10.1} {:>7.1} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8}",
                v.variant,
                v.calls as f64 / secs,
                v.pages as f64 / secs,
                per_call,
                v.partial,
                v.errors,
                fallback,
                v.fast_pages,
                v.slow_pages,
                fmt_ns(v.latency.p50),
                fmt_ns(v.latency.p99),
            );
            if !v.errno.is_empty() {
                let errs: Vec<String> = v.errno.iter().map(|(k, n)| format!("{k}={n}")).collect();
                let _ = writeln!(out, "  errors: {}", errs.join(" "));
            }
        }
        for r in &self.release {
            let _ = write!(
                out,
                "{:<26} {:>9.1} {:>10.1}   (release)",
                r.function,
                r.calls as f64 / secs,
                r.pages as f64 / secs
            );
            out.push('\n');
        }
        if self.gup_internal_pages > 0 {
            let _ = writeln!(
                out,
                "{:<26} {:>9} {:>10.1}   (released by GUP itself: rollbacks, FOLL_LONGTERM migration)",
                "gup_put_folio",
                "",
                self.gup_internal_pages as f64 / secs
            );
        }
        if !self.processes.is_empty() {
            let _ = writeln!(
                out,
                "{:>8} {:<16} {:>9} {:>10} {:>10} {:>10}",
                "pid", "comm", "calls", "pages", "pinned", "released"
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "{:>8} {:<16} {:>9} {:>10} {:>10} {:>10}",
                    pid_label(p.pid),
                    p.totals.comm,
                    p.totals.calls,
                    p.totals.pages,
                    p.totals.pinned,
                    p.totals.released
                );
            }
        }
        out.push_str(&crate::attribution::view::render_text(
            &self.callers,
            self.interval_s,
        ));
        if let Some(outstanding) = &self.outstanding {
            out.push_str(&crate::attribution::lifetimes::render_text(outstanding));
        }
        if let Some(vm) = &self.vmstat {
            let _ = writeln!(
                out,
                "vmstat: nr_foll_pin_acquired {:.1}/s  nr_foll_pin_released {:.1}/s",
                vm.nr_foll_pin_acquired as f64 / secs,
                vm.nr_foll_pin_released as f64 / secs
            );
        }
        let h = &self.health;
        if h.task_state_lost
            + h.unmatched_exits
            + h.proc_state_lost
            + h.tracked_lost
            + h.events_lost
            > 0
        {
            let _ = writeln!(
                out,
                "probe health: {} task states lost, {} unmatched returns, {} process entries lost, {} forks not followed, {} events dropped",
                h.task_state_lost,
                h.unmatched_exits,
                h.proc_state_lost,
                h.tracked_lost,
                h.events_lost
            );
        }
        if h.any_missed() {
            let skipped: Vec<String> = h
                .skipped_runs
                .iter()
                .map(|s| format!("{} {} {} ({})", s.runs, s.function, s.program, s.reason))
                .collect();
            let _ = writeln!(
                out,
                "missed: {} calls whose return was not seen; runs skipped by the kernel: {}",
                h.missed_returns,
                if skipped.is_empty() {
                    "none".to_string()
                } else {
                    skipped.join(", ")
                }
            );
        }
        if h.irq_releases_not_followed > 0 {
            let _ = writeln!(
                out,
                "not followed: {} pages released in interrupt context (I/O completions), whose owner \
                 the interrupted task does not tell; left out of the followed processes' releases",
                h.irq_releases_not_followed
            );
        }
        if h.procs_evicted + h.callers_evicted > 0 {
            let _ = writeln!(
                out,
                "evicted: {} process entries, {} call-site entries (the kernel's LRU tables were full; \
                 per-process and per-call-site figures miss what those entries counted since the previous read; the per-variant totals miss nothing)",
                h.procs_evicted, h.callers_evicted
            );
        }
        if h.callers_unknown + h.lifetimes_truncated + h.lifetimes_full + h.untracked_releases > 0 {
            let _ = writeln!(
                out,
                "attribution: {} calls without a visible caller; lifetimes: {} pages over the per-call limit, {} pages with the table full, {} releases of pins not seen pinned",
                h.callers_unknown, h.lifetimes_truncated, h.lifetimes_full, h.untracked_releases
            );
        }
        out
    }
}

/// Formats a latency (an upper bound, "≤" implied) compactly: ns, us, ms.
pub fn fmt_ns(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns < 10_000 => format!("{ns}ns"),
        Some(ns) if ns < 10_000_000 => format!("{}us", ns / 1000),
        Some(ns) => format!("{}ms", ns / 1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pin_common::LATENCY_BUCKETS;

    #[test]
    fn views_only_show_activity() {
        let mut gup = vec![GupStats::ZERO; GUP_FUNC_COUNT];
        gup[6].calls = 10;
        gup[6].pages_requested = 160;
        gup[6].pages_returned = 150;
        gup[6].partial = 1;
        gup[6].errors = 1;
        gup[6].errno[14] = 1;
        gup[6].fallbacks = 2;
        gup[6].fast_pages = 130;
        gup[6].slow_pages = 20;
        gup[6].latency_sum_ns = 10_000;
        gup[6].latency_log2[9] = 10;
        let delta = Delta {
            seconds: 2.0,
            gup,
            release: vec![Default::default(); FUNCS.len() - GUP_FUNC_COUNT],
            procs: Default::default(),
            health: [0; pin_common::HEALTH_COUNT],
            misses: Default::default(),
            vmstat: None,
            callers: crate::attribution::sample_callers().0,
            sites: crate::attribution::sample_callers().1,
            evicted: Default::default(),
            balance: Default::default(),
        };
        let mut delta = delta;
        for (pid, pages) in (1..=12u32).map(|p| (p, u64::from(p) * 10)) {
            delta.procs.insert(
                pid,
                crate::snapshot::ProcTotals {
                    comm: format!("p{pid}"),
                    calls: 1,
                    pages,
                    pinned: pages,
                    released: 0,
                    first_ns: 0,
                },
            );
        }
        let view = IntervalView::new(&delta);
        assert_eq!(view.processes.len(), TOP_PROCESSES);
        assert_eq!(view.processes[0].pid, 12, "busiest first");
        assert_eq!(view.variants.len(), 1);
        let v = &view.variants[0];
        assert_eq!(v.variant, "pin_user_pages_fast");
        assert_eq!(v.errno.get("EFAULT"), Some(&1));
        assert_eq!(v.latency.p50, Some(1024));
        assert_eq!(v.latency.mean, Some(1000));
        assert_eq!(v.latency.log2_buckets.len(), LATENCY_BUCKETS);
        let text = view.render_text();
        assert!(text.contains("pin_user_pages_fast"), "{text}");
        assert!(text.contains("errors: EFAULT=1"), "{text}");
        assert!(text.contains("20.0"), "fallback% 2/10: {text}");
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(14), "EFAULT");
        assert_eq!(errno_name(133), "EHWPOISON");
        assert_eq!(errno_name(99), "E99");
    }
}
