//! Probe health over an interval: what the probes could not account, what
//! the kernel skipped, and what the LRU tables evicted, read from the
//! probes' health counters (`ProbeCounts::health`) by their [`Health`]
//! names.

use pin_common::{HEALTH_COUNT, Health};
use serde::Serialize;

use crate::{probes::misses::Misses, snapshot::Evictions};

/// Probe health over an interval. The JSON field names are `stat --json`'s
/// schema; [`Health::label`] names the same counters in metrics.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HealthFigures {
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

impl HealthFigures {
    /// From an interval's health counters (by [`Health`] index), skipped
    /// runs and evictions.
    pub fn new(counts: &[u64; HEALTH_COUNT], misses: &Misses, evicted: Evictions) -> Self {
        let n = |h: Health| counts[h as usize];
        HealthFigures {
            task_state_lost: n(Health::TaskStateLost),
            unmatched_exits: n(Health::UnmatchedExit),
            proc_state_lost: n(Health::ProcStateLost),
            tracked_lost: n(Health::TrackLost),
            events_lost: n(Health::EventsLost),
            callers_unknown: n(Health::CallerUnknown),
            lifetimes_truncated: n(Health::LifetimesTruncated),
            lifetimes_full: n(Health::LifetimesFull),
            untracked_releases: n(Health::UntrackedRelease),
            missed_returns: n(Health::MissedReturn),
            irq_releases_not_followed: n(Health::IrqReleaseNotFollowed),
            skipped_runs: misses
                .iter()
                .filter(|(_, runs)| **runs > 0)
                .map(|(key, runs)| SkippedRuns {
                    function: key.function,
                    program: key.program,
                    reason: key.reason(),
                    runs: *runs,
                })
                .collect(),
            procs_evicted: evicted.procs,
            callers_evicted: evicted.callers,
        }
    }

    /// Whether there is a miss to report: calls whose return was not seen,
    /// or program runs the kernel skipped.
    pub fn any_missed(&self) -> bool {
        self.missed_returns > 0 || !self.skipped_runs.is_empty()
    }

    /// Events the probes lost for want of state or room (task and process
    /// state, unmatched returns, forks not followed, ring overflows).
    pub fn lost(&self) -> u64 {
        self.task_state_lost
            + self.unmatched_exits
            + self.proc_state_lost
            + self.tracked_lost
            + self.events_lost
    }

    /// Attribution's own losses: calls without a caller, pages whose
    /// lifetime is not tracked, releases of pins not seen pinned.
    pub fn attribution_lost(&self) -> u64 {
        self.callers_unknown
            + self.lifetimes_truncated
            + self.lifetimes_full
            + self.untracked_releases
    }
}
