//! The dashboard's state: what has been seen (cumulative totals, per-process
//! rows, trend history) and what the user is doing (focus, selection, sort,
//! filter, pause, overlays). It only ingests [`Frame`]s, so it works the same
//! on live probes and on anything else that produces deltas.

use std::collections::{BTreeMap, VecDeque};

use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats, ReleaseStats};

use crate::{
    counters::Counters,
    figures,
    snapshot::{Delta, ProcTotals},
};

/// How many trend points are kept (one per interval).
pub const HISTORY: usize = 600;

/// One step of the snapshot stream the dashboard renders.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Counter changes since the previous frame.
    pub delta: Delta,
    /// Memlock limit, VmLck and VmPin from /proc for the processes
    /// active in `delta`.
    pub memlock: BTreeMap<u32, crate::limits::MemlockState>,
    /// Host uptime in seconds when the frame was taken.
    pub uptime_s: f64,
}

/// Static facts shown in the header.
#[derive(Clone, Debug)]
pub struct HeaderInfo {
    /// Kernel release.
    pub kernel: String,
    /// How probes attached, e.g. "16 fentry, 3 kprobe, 1 absent".
    pub probes: String,
    /// Refresh interval in seconds.
    pub interval_s: f64,
    /// GUP variants this kernel has that are not traced (each shown as
    /// such, never as a row of zeros).
    pub untraced: Vec<&'static str>,
}

/// Which panel has the keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    /// The per-variant table.
    Variants,
    /// The per-process table.
    Processes,
}

/// Sort orders of the variants table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariantSort {
    /// Busiest (pages/s) first.
    Pages,
    /// Most calls/s first.
    Calls,
    /// Slowest p99 first.
    Latency,
    /// By name.
    Name,
}

/// Sort orders of the processes table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessSort {
    /// Most pages pinned/s first.
    Rate,
    /// Most pages still pinned first.
    Outstanding,
    /// Most pages in total first.
    Pages,
    /// By pid.
    Pid,
}

/// A process as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessRow {
    /// tgid.
    pub pid: u32,
    /// Counters since the dashboard started.
    pub totals: ProcTotals,
    /// FOLL_PIN pages per second in the last interval.
    pub pins_per_s: f64,
    /// Memlock limit, VmLck and VmPin, when the process still exists.
    pub memlock: Option<crate::limits::MemlockState>,
    /// The frame in which it last did something (see [`App::frames`]).
    pub active_at: u64,
}

impl ProcessRow {
    /// Pins taken minus pins released in this process's context (releases
    /// done elsewhere, e.g. I/O completion, count for that context).
    pub fn outstanding(&self) -> i64 {
        self.totals.outstanding()
    }
}

/// A cgroup as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupRow {
    /// The cgroup v2 id.
    pub id: u64,
    /// Its path and what it says (container, pod, unit).
    pub identity: crate::cgroups::CgroupIdentity,
    /// Counters since the dashboard started.
    pub totals: crate::snapshot::CgroupTotals,
    /// Outermost calls per second in the last interval.
    pub calls_per_s: f64,
    /// Pages per second in the last interval.
    pub pages_per_s: f64,
    /// The frame in which it last did something (see [`App::frames`]).
    pub active_at: u64,
}

/// One trend point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendPoint {
    /// FOLL_PIN pages per second.
    pub pinned_per_s: f64,
    /// Fallbacks per fast-path call, in percent.
    pub fallback_pct: f64,
}

/// A process filter (`f`, `--pid`, `--comm`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Only this tgid.
    Pid(u32),
    /// comm contains this.
    Comm(String),
}

impl Filter {
    /// Parses what the user typed: a number is a pid, anything else a comm.
    pub fn parse(text: &str) -> Option<Filter> {
        let text = text.trim();
        if text.is_empty() {
            None
        } else if let Ok(pid) = text.parse() {
            Some(Filter::Pid(pid))
        } else {
            Some(Filter::Comm(text.to_string()))
        }
    }

    fn matches(&self, row: &ProcessRow) -> bool {
        match self {
            Filter::Pid(pid) => row.pid == *pid,
            Filter::Comm(c) => row.totals.comm.contains(c.as_str()),
        }
    }
}

/// How many rows the dashboard keeps per table. A row whose kernel entry
/// the kernel's LRU table has evicted can no longer change, and the
/// dashboard runs for days beside short-lived processes: without a bound
/// its memory and each frame's sort grew with every process ever seen.
/// The defaults are the kernel tables' default capacities, so the screen
/// keeps as many rows as the kernel keeps entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLimits {
    /// Process rows.
    pub procs: usize,
    /// Cgroup rows.
    pub cgroups: usize,
}

impl Default for RowLimits {
    fn default() -> Self {
        Self::from(&crate::probes::MapCapacities::default())
    }
}

impl From<&crate::probes::MapCapacities> for RowLimits {
    fn from(c: &crate::probes::MapCapacities) -> Self {
        Self {
            procs: c.procs as usize,
            cgroups: c.cgroups as usize,
        }
    }
}

/// Keeps at most `max` of `rows`, dropping those idle longest (lowest
/// `active_at`); returns how many it dropped. One pass to find the cut
/// (`select_nth_unstable`), one to drop: a frame costs O(rows), as
/// drawing them does.
fn drop_idle_rows<K: Ord, R>(
    rows: &mut BTreeMap<K, R>,
    max: usize,
    active_at: impl Fn(&R) -> u64,
) -> u64 {
    let Some(excess) = rows.len().checked_sub(max).filter(|&n| n > 0) else {
        return 0;
    };
    let mut ages: Vec<u64> = rows.values().map(&active_at).collect();
    let cut = *ages.select_nth_unstable(excess - 1).1;
    // Every row idle since before the cut goes (fewer than `excess`),
    // then rows last active at the cut until `excess` are gone.
    let mut dropped = 0;
    rows.retain(|_, r| {
        let drop = active_at(r) < cut;
        dropped += usize::from(drop);
        !drop
    });
    rows.retain(|_, r| {
        let drop = dropped < excess && active_at(r) == cut;
        dropped += usize::from(drop);
        !drop
    });
    dropped as u64
}

/// Everything the dashboard knows and shows.
pub struct App {
    /// Header facts.
    pub header: HeaderInfo,
    /// Host uptime at the last frame.
    pub uptime_s: f64,
    /// The last interval, if any.
    pub last: Option<Delta>,
    /// Program runs the kernel skipped since the dashboard started.
    pub skipped_runs: u64,
    /// FOLL_PIN pages taken and released since start.
    pub balance: pin_common::PinBalance,
    /// LRU table entries (per process, per call site) the kernel evicted
    /// since start: rows that lost counts.
    pub evicted: crate::snapshot::Evictions,
    /// Per-variant totals since start.
    pub totals: Vec<GupStats>,
    /// Per-release-function totals since start.
    pub release_totals: Vec<ReleaseStats>,
    /// Per (call site, variant) totals since start.
    pub caller_totals: std::collections::BTreeMap<pin_common::CallerKey, pin_common::CallerStats>,
    /// Names of the call sites seen.
    pub sites: std::collections::BTreeMap<u64, crate::kernel::symbols::CallSite>,
    /// Processes seen since start, at most [`App::row_limits`]`.procs`
    /// of them (those active most recently).
    pub procs: BTreeMap<u32, ProcessRow>,
    /// Cgroups seen since start, at most [`App::row_limits`]`.cgroups`.
    pub cgroups: BTreeMap<u64, CgroupRow>,
    /// Frames folded in so far.
    pub frames: u64,
    /// How many process and cgroup rows are kept.
    pub row_limits: RowLimits,
    /// Rows dropped for being idle longest once a table held its limit.
    pub rows_dropped: u64,
    /// The lower table shows cgroups (`c`) rather than processes.
    pub show_cgroups: bool,
    /// Memlock charges the kernel refused since start.
    pub refusals: u64,
    /// The latest refusal: what the kernel compared.
    pub latest_refusal: Option<figures::Verdict>,
    /// Trend history, oldest first.
    pub history: VecDeque<TrendPoint>,
    /// Focused panel.
    pub focus: Panel,
    /// Selected row in the variants table.
    pub variant_sel: usize,
    /// Selected row in the processes table.
    pub process_sel: usize,
    /// Variants sort order.
    pub variant_sort: VariantSort,
    /// Processes sort order.
    pub process_sort: ProcessSort,
    /// Frames are not taken while paused.
    pub paused: bool,
    /// Process filter.
    pub filter: Option<Filter>,
    /// Text being typed after `f`, if in that mode.
    pub input: Option<String>,
    /// Help overlay shown.
    pub show_help: bool,
    /// Details overlay shown (for the selected row).
    pub show_details: bool,
    /// Set when the user asked to quit.
    pub quit: bool,
}

impl App {
    /// A dashboard with nothing seen yet.
    pub fn new(header: HeaderInfo, filter: Option<Filter>) -> Self {
        Self {
            header,
            uptime_s: 0.0,
            last: None,
            skipped_runs: 0,
            evicted: Default::default(),
            balance: Default::default(),
            totals: vec![GupStats::ZERO; GUP_FUNC_COUNT],
            release_totals: vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT],
            caller_totals: Default::default(),
            sites: Default::default(),
            procs: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            frames: 0,
            row_limits: RowLimits::default(),
            rows_dropped: 0,
            show_cgroups: false,
            refusals: 0,
            latest_refusal: None,
            history: VecDeque::new(),
            focus: Panel::Variants,
            variant_sel: 0,
            process_sel: 0,
            variant_sort: VariantSort::Pages,
            process_sort: ProcessSort::Rate,
            paused: false,
            filter,
            input: None,
            show_help: false,
            show_details: false,
            quit: false,
        }
    }

    /// Keeps at most `limits` rows per table.
    pub fn with_row_limits(mut self, limits: RowLimits) -> Self {
        self.row_limits = limits;
        self
    }

    /// Folds one frame in.
    pub fn ingest(&mut self, frame: Frame) {
        self.frames += 1;
        let now = self.frames;
        let d = &frame.delta;
        let secs = d.seconds.max(1e-9);
        self.skipped_runs += crate::probes::misses::lost_at_entry(&d.misses);
        self.balance.merge(&d.balance);
        self.evicted.merge(&d.evicted);
        for (total, delta) in self.totals.iter_mut().zip(&d.gup) {
            total.merge(delta);
        }
        for (total, delta) in self.release_totals.iter_mut().zip(&d.release) {
            total.merge(delta);
        }
        for (key, delta) in &d.callers {
            let total = self
                .caller_totals
                .entry(*key)
                .or_insert(pin_common::CallerStats::ZERO);
            total.merge(delta);
        }
        self.sites
            .extend(d.sites.iter().map(|(a, s)| (*a, s.clone())));
        for row in self.procs.values_mut() {
            row.pins_per_s = 0.0;
        }
        for (pid, p) in &d.procs {
            let row = self.procs.entry(*pid).or_insert_with(|| ProcessRow {
                pid: *pid,
                ..Default::default()
            });
            row.totals.merge(p);
            row.pins_per_s = p.pinned as f64 / secs;
            row.active_at = now;
        }
        // The `[irq]` row stays: once it released pins, no process's
        // taken-minus-released is what it holds, and the table says so.
        self.rows_dropped += drop_idle_rows(&mut self.procs, self.row_limits.procs, |r| {
            if r.pid == pin_common::IRQ_TGID {
                u64::MAX
            } else {
                r.active_at
            }
        });
        for row in self.cgroups.values_mut() {
            row.calls_per_s = 0.0;
            row.pages_per_s = 0.0;
        }
        for (id, c) in &d.cgroups {
            let row = self.cgroups.entry(*id).or_insert_with(|| CgroupRow {
                id: *id,
                ..Default::default()
            });
            row.totals.merge(c);
            row.calls_per_s = c.calls as f64 / secs;
            row.pages_per_s = c.pages as f64 / secs;
            row.active_at = now;
            if let Some(name) = d.cgroup_names.get(id) {
                row.identity = name.clone();
            }
        }
        self.rows_dropped += drop_idle_rows(&mut self.cgroups, self.row_limits.cgroups, |r| {
            if r.id == pin_common::IRQ_CGROUP {
                u64::MAX
            } else {
                r.active_at
            }
        });
        self.refusals += d.denials.values().map(|r| r.denials).sum::<u64>();
        if let Some(latest) = figures::verdicts(&d.denials).into_iter().next() {
            self.latest_refusal = Some(latest);
        }
        for (pid, row) in self.procs.iter_mut() {
            if let Some(state) = frame.memlock.get(pid) {
                row.memlock = Some(*state);
            }
        }
        self.history.push_back(TrendPoint {
            pinned_per_s: figures::pinned_pages(&d.gup) as f64 / secs,
            fallback_pct: figures::fallback_percent(&d.gup).unwrap_or(0.0),
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.uptime_s = frame.uptime_s;
        self.last = Some(frame.delta);
        self.clamp_selection();
    }

    /// Variant ids to show: every variant seen since start, sorted.
    pub fn variant_rows(&self) -> Vec<usize> {
        let last = |i: usize| {
            self.last
                .as_ref()
                .map(|d| d.gup[i])
                .unwrap_or(GupStats::ZERO)
        };
        let mut rows: Vec<usize> = (0..GUP_FUNC_COUNT)
            .filter(|&i| self.totals[i].calls > 0)
            .collect();
        match self.variant_sort {
            VariantSort::Pages => {
                rows.sort_by_key(|&i| (std::cmp::Reverse(last(i).pages_returned), i))
            }
            VariantSort::Calls => rows.sort_by_key(|&i| (std::cmp::Reverse(last(i).calls), i)),
            VariantSort::Latency => rows.sort_by_key(|&i| {
                let p99 = figures::Latency::from_stats(&last(i)).p99.unwrap_or(0);
                (std::cmp::Reverse(p99), i)
            }),
            VariantSort::Name => rows.sort_by_key(|&i| FUNCS[i].name),
        }
        rows
    }

    /// Cgroups to show: busiest in the last interval first, then most
    /// pages since start.
    pub fn cgroup_rows(&self) -> Vec<&CgroupRow> {
        let mut rows: Vec<&CgroupRow> = self.cgroups.values().collect();
        rows.sort_by(|a, b| {
            b.pages_per_s
                .total_cmp(&a.pages_per_s)
                .then(b.calls_per_s.total_cmp(&a.calls_per_s))
                .then(b.totals.pages.cmp(&a.totals.pages))
                .then(a.id.cmp(&b.id))
        });
        rows
    }

    /// Rows of the lower table (processes, or cgroups with `c`).
    pub fn lower_rows(&self) -> usize {
        if self.show_cgroups {
            self.cgroups.len()
        } else {
            // Counted, not sorted.
            self.procs
                .values()
                .filter(|r| self.filter.as_ref().is_none_or(|f| f.matches(r)))
                .count()
        }
    }

    /// Processes to show, filtered and sorted.
    pub fn process_rows(&self) -> Vec<&ProcessRow> {
        let mut rows: Vec<&ProcessRow> = self
            .procs
            .values()
            .filter(|r| self.filter.as_ref().is_none_or(|f| f.matches(r)))
            .collect();
        match self.process_sort {
            ProcessSort::Rate => rows.sort_by(|a, b| {
                b.pins_per_s
                    .total_cmp(&a.pins_per_s)
                    .then(b.totals.pages.cmp(&a.totals.pages))
                    .then(a.pid.cmp(&b.pid))
            }),
            ProcessSort::Outstanding => {
                rows.sort_by_key(|r| (std::cmp::Reverse(r.outstanding()), r.pid))
            }
            ProcessSort::Pages => rows.sort_by_key(|r| (std::cmp::Reverse(r.totals.pages), r.pid)),
            ProcessSort::Pid => rows.sort_by_key(|r| r.pid),
        }
        rows
    }

    fn clamp_selection(&mut self) {
        let variants = self.variant_rows().len();
        let lower = self.lower_rows();
        self.variant_sel = self.variant_sel.min(variants.saturating_sub(1));
        self.process_sel = self.process_sel.min(lower.saturating_sub(1));
    }

    /// Events missed since the dashboard started: returns not seen plus
    /// entry runs the kernel skipped (a skipped return is a return not
    /// seen already).
    pub fn events_missed(&self) -> u64 {
        self.totals.iter().map(|t| t.missed_returns).sum::<u64>() + self.skipped_runs
    }

    /// Pins taken minus released since start, from pinwatch's own counters
    /// (`PIN_BALANCE`: both read at one instant, so no phantom from the
    /// time between reading two maps).
    pub fn outstanding(&self) -> i64 {
        self.balance.outstanding()
    }
}
