//! Views of a [`Delta`]: the per-interval figures `stat` prints as a table
//! or as JSON lines. Every number here is a kernel counter difference or a
//! ratio of two.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    attribution::lifetimes::Outstanding,
    figures::{
        CallerView, CgroupFigures, FailureFigures, HealthFigures, ProcessFigures, ReleaseFigures,
        VariantFigures, Verdict, caller_views, failure_views, fmt_ns, per_second, pid_label,
        verdicts,
    },
    snapshot::Delta,
    vmstat::PinCounters,
};

/// How many processes a view lists.
pub const TOP_PROCESSES: usize = 10;

/// How many cgroups a view lists.
pub const TOP_CGROUPS: usize = 10;

/// Everything `stat` shows for one interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IntervalView {
    /// Interval length in seconds.
    pub interval_s: f64,
    /// Variants with any call in the interval.
    pub variants: Vec<VariantFigures>,
    /// Functions this kernel has that pinwatch could not attach: their
    /// calls are not in any figure (`pinwatch probes` says why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untraced: Vec<String>,
    /// Release functions with any call in the interval.
    pub release: Vec<ReleaseFigures>,
    /// FOLL_PIN pages GUP released itself inside a get/pin call (rollbacks,
    /// FOLL_LONGTERM migration retries), seen at `gup_put_folio`:
    /// `nr_foll_pin_acquired` counts them on top of the pages pin calls
    /// returned, `nr_foll_pin_released` on top of the callers' releases.
    #[serde(skip_serializing_if = "is_zero")]
    pub gup_internal_pages: u64,
    /// The most active processes (by pages, then calls), at most
    /// [`TOP_PROCESSES`].
    pub processes: Vec<ProcessFigures>,
    /// The most active cgroups (by pages, then calls), at most
    /// [`TOP_CGROUPS`].
    pub cgroups: Vec<CgroupFigures>,
    /// /proc/vmstat pin counter changes (not flushed: per-CPU batching can
    /// delay up to a few pages per CPU).
    pub vmstat: Option<PinCounters>,
    /// Calling kernel functions, busiest first.
    pub callers: Vec<CallerView>,
    /// Get/pin calls of the interval that failed or came back short, by
    /// call site, variant, outcome and flags, most first.
    pub failures: Vec<FailureFigures>,
    /// Memlock charges the kernel refused in the interval, by (process,
    /// check), the latest first: what the deciding function compared.
    pub limit_verdicts: Vec<Verdict>,
    /// What is still pinned (`--lifetimes` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outstanding: Option<Outstanding>,
    /// Events the probes could not account.
    pub health: HealthFigures,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
                .filter(|(_, d)| d.calls > 0)
                .map(|(id, d)| VariantFigures::new(id, d))
                .collect(),
            release: delta
                .release
                .iter()
                .enumerate()
                .filter(|(_, r)| r.calls > 0)
                .map(|(i, r)| ReleaseFigures::new(i, r))
                .collect(),
            gup_internal_pages: delta.balance.gup_released,
            processes: top_processes(delta),
            cgroups: CgroupFigures::busiest(&delta.cgroups, &delta.cgroup_names, TOP_CGROUPS),
            vmstat: delta.vmstat,
            callers: caller_views(&delta.callers, &delta.sites),
            failures: failure_views(&delta.failures, &delta.sites),
            limit_verdicts: verdicts(&delta.denials),
            outstanding: None,
            health: HealthFigures::new(&delta.health, &delta.misses, delta.evicted),
        }
    }

    /// Reads each listed process's memlock limit, VmLck and VmPin from
    /// /proc (a step of its own: the view of a delta is pure).
    pub fn read_memlock(&mut self) {
        for p in &mut self.processes {
            p.memlock = crate::limits::MemlockState::read(p.pid).ok();
        }
    }

    /// Renders a vmstat-like text table.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.write_variants(&mut out);
        self.write_releases(&mut out);
        self.write_processes(&mut out);
        self.write_cgroups(&mut out);
        self.write_failures(&mut out);
        self.write_verdicts(&mut out);
        out.push_str(&crate::figures::render_callers(
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
                per_second(vm.nr_foll_pin_acquired, self.interval_s),
                per_second(vm.nr_foll_pin_released, self.interval_s)
            );
        }
        write_health(&mut out, &self.health);
        out
    }

    /// The per-variant table (with the untraced functions and each
    /// variant's errors by errno).
    fn write_variants(&self, out: &mut String) {
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
            let fallback = match v.fallback_percent() {
                Some(percent) => format!("{percent:.1}"),
                None if v.fast_path => format!("{:.1}", 0.0),
                None => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<26} {:>9.1} {:>10.1} {:>7.1} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8}",
                v.variant,
                per_second(v.calls, self.interval_s),
                per_second(v.pages, self.interval_s),
                v.pages_per_call().unwrap_or(0.0),
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
    }

    /// The release functions and GUP's own releases.
    fn write_releases(&self, out: &mut String) {
        for r in &self.release {
            let _ = writeln!(
                out,
                "{:<26} {:>9.1} {:>10.1}   (release)",
                r.function,
                per_second(r.calls, self.interval_s),
                per_second(r.pages, self.interval_s)
            );
        }
        if self.gup_internal_pages > 0 {
            let _ = writeln!(
                out,
                "{:<26} {:>9} {:>10.1}   (released by GUP itself: rollbacks, FOLL_LONGTERM migration)",
                "gup_put_folio",
                "",
                per_second(self.gup_internal_pages, self.interval_s)
            );
        }
    }

    /// The busiest processes.
    fn write_processes(&self, out: &mut String) {
        if self.processes.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "{:>8} {:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "pid",
            "comm",
            "calls",
            "pages",
            "pinned",
            "released",
            "VmPin kB",
            "VmLck kB",
            "memlock"
        );
        for p in &self.processes {
            // `!` after the limit: a counter is near it (the next pin or
            // mlock of the usual size may fail).
            let (vmpin, vmlck, limit) = match p.memlock {
                Some(m) => (
                    (m.pinned / 1024).to_string(),
                    (m.locked / 1024).to_string(),
                    format!(
                        "{}{}",
                        crate::limits::fmt_limit(m.limit),
                        if m.near_limit() { "!" } else { "" }
                    ),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:>8} {:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
                pid_label(p.pid),
                p.totals.comm,
                p.totals.calls,
                p.totals.pages,
                p.totals.pinned,
                p.totals.released,
                vmpin,
                vmlck,
                limit
            );
        }
    }
}

impl IntervalView {
    /// Failed and short calls: what each caller asked for and got.
    fn write_failures(&self, out: &mut String) {
        if self.failures.is_empty() {
            return;
        }
        let _ = writeln!(out, "failed or short get/pin calls:");
        let _ = writeln!(
            out,
            "  {:<28} {:<34} {:<9} {:<14} {:>7} {:>9} {:>9}  last",
            "variant", "caller", "outcome", "flags", "calls", "pages/call", "got"
        );
        for f in &self.failures {
            let flags = if f.flags.is_empty() {
                "-".to_string()
            } else {
                f.flags.join(",")
            };
            let _ = writeln!(
                out,
                "  {:<28} {:<34} {:<9} {:<14} {:>7} {:>9.1} {:>9}  {} ({})",
                f.variant,
                f.caller,
                f.outcome,
                flags,
                f.calls,
                f.mean_requested(),
                f.pages_returned,
                f.last_pid,
                f.last_comm
            );
        }
    }

    /// The kernel's memlock refusals of the interval, one line each.
    fn write_verdicts(&self, out: &mut String) {
        if self.limit_verdicts.is_empty() {
            return;
        }
        let _ = writeln!(out, "memlock refusals (the kernel's verdicts):");
        for v in &self.limit_verdicts {
            let _ = writeln!(
                out,
                "  pid {} ({}) uid {}: {}{}",
                v.pid,
                v.comm,
                v.uid,
                v.sentence(),
                if v.denials > 1 {
                    format!(" [{}x]", v.denials)
                } else {
                    String::new()
                }
            );
        }
    }

    /// The busiest cgroups, named by container (and pod) where the path
    /// shows one, else by unit or path.
    fn write_cgroups(&self, out: &mut String) {
        if self.cgroups.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "{:<40} {:>9} {:>10} {:>10} {:>10} {:>7}",
            "cgroup", "calls/s", "pages/s", "pinned", "released", "errors"
        );
        for c in &self.cgroups {
            let _ = writeln!(
                out,
                "{:<40} {:>9.1} {:>10.1} {:>10} {:>10} {:>7}",
                c.identity.short(),
                per_second(c.totals.calls, self.interval_s),
                per_second(c.totals.pages, self.interval_s),
                c.totals.pinned,
                c.totals.released,
                c.totals.errors
            );
        }
    }
}

/// The most active processes of a delta (by pages, then calls), at most
/// [`TOP_PROCESSES`].
fn top_processes(delta: &Delta) -> Vec<ProcessFigures> {
    let mut procs: Vec<ProcessFigures> = delta
        .procs
        .iter()
        .map(|(pid, p)| ProcessFigures {
            pid: *pid,
            totals: *p,
            memlock: None,
        })
        .collect();
    procs.sort_by(|a, b| {
        (b.totals.pages, b.totals.calls, a.pid).cmp(&(a.totals.pages, a.totals.calls, b.pid))
    });
    procs.truncate(TOP_PROCESSES);
    procs
}

/// The health lines: each only when its counters are not zero.
fn write_health(out: &mut String, h: &HealthFigures) {
    if h.lost() > 0 {
        let _ = writeln!(
            out,
            "probe health: {} task states lost, {} unmatched returns, {} process entries lost, {} forks not followed, {} events dropped",
            h.task_state_lost, h.unmatched_exits, h.proc_state_lost, h.tracked_lost, h.events_lost
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
    if h.attribution_lost() > 0 {
        let _ = writeln!(
            out,
            "attribution: {} calls without a visible caller; lifetimes: {} pages over the per-call limit, {} pages with the table full, {} releases of pins not seen pinned",
            h.callers_unknown, h.lifetimes_truncated, h.lifetimes_full, h.untracked_releases
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats, LATENCY_BUCKETS};

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
            sites: crate::attribution::sample_callers().1,
            cgroup_names: std::collections::BTreeMap::from([(
                9,
                crate::cgroups::CgroupIdentity::of_path("/system.slice/fio.service"),
            )]),
            counts: crate::snapshot::CounterSet {
                gup,
                release: vec![Default::default(); FUNCS.len() - GUP_FUNC_COUNT],
                procs: Default::default(),
                cgroups: std::collections::BTreeMap::from([(
                    9,
                    crate::snapshot::CgroupTotals {
                        calls: 10,
                        pages: 150,
                        pinned: 150,
                        released: 140,
                        errors: 1,
                        first_ns: 0,
                    },
                )]),
                health: [0; pin_common::HEALTH_COUNT],
                misses: Default::default(),
                vmstat: None,
                callers: crate::attribution::sample_callers().0,
                failures: Default::default(),
                denials: Default::default(),
                evicted: Default::default(),
                balance: Default::default(),
            },
        };
        let mut delta = delta;
        for (pid, pages) in (1..=12u32).map(|p| (p, u64::from(p) * 10)) {
            delta.procs.insert(
                pid,
                crate::snapshot::ProcTotals {
                    comm: format!("p{pid}").as_str().into(),
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
}
