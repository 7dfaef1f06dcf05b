//! The figures every view shows, derived once from a [`Delta`] (or a sum
//! of them): one type per thing shown — a GUP variant
//! ([`VariantFigures`]), a release function ([`ReleaseFigures`]), a
//! process ([`ProcessFigures`]), probe health ([`HealthFigures`]) — with
//! the derived figures (rates, pages per call, fallback and error shares,
//! latency percentiles, pins outstanding) as their methods. `stat`'s table
//! and JSON, the dashboard, `/metrics`, recordings and `diff` read these;
//! none re-derives a figure from raw counters.
//!
//! [`Delta`]: crate::snapshot::Delta

mod health;
mod latency;
mod process;
mod variant;

pub use health::{HealthFigures, SkippedRuns};
pub use latency::{Latency, fmt_ns, latency_quantile_ns};
pub use process::{ProcessFigures, pid_label};
pub use variant::{
    ReleaseFigures, VariantFigures, errno_counts, errno_name, fallback_percent, pinned_pages,
};

/// `n` per second over `seconds` (at least 1 ns, so an empty interval
/// gives a finite rate).
pub fn per_second(n: u64, seconds: f64) -> f64 {
    n as f64 / seconds.max(1e-9)
}
