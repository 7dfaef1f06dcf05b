//! The figures every view shows, derived once from a [`Delta`] (or a sum
//! of them): one type per thing shown — a GUP variant
//! ([`VariantFigures`]), a release function ([`ReleaseFigures`]), a
//! process ([`ProcessFigures`]), a cgroup ([`CgroupFigures`]), a calling kernel function
//! ([`CallerView`]), failed and short calls ([`FailureFigures`]), probe
//! health ([`HealthFigures`]), the kernel's memlock
//! refusals ([`Verdict`]) — with
//! the derived figures (rates, pages per call, fallback and error shares,
//! latency percentiles, pins outstanding) as their methods. `stat`'s table
//! and JSON, the dashboard, `/metrics`, recordings and `diff` read these;
//! none re-derives a figure from raw counters.
//!
//! [`Delta`]: crate::snapshot::Delta

mod caller;
mod cgroup;
mod failure;
mod health;
mod latency;
mod process;
mod variant;
mod verdict;

pub use crate::units::{fmt_ns, per_second};
pub use caller::{CallerView, HoldTimes, caller_views, render_text as render_callers};
pub use cgroup::CgroupFigures;
pub use failure::{FailureFigures, failure_views};
pub use health::{HealthFigures, SkippedRuns};
pub use latency::{Latency, latency_quantile_ns};
pub use process::{ProcessFigures, pid_label};
pub use variant::{
    ReleaseFigures, VariantFigures, errno_counts, errno_name, fallback_percent, pinned_pages,
};
pub use verdict::{Verdict, verdicts};
