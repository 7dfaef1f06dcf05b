//! Getting pinwatch's numbers out: Prometheus/OpenMetrics exposition
//! ([`metrics`]) served over HTTP ([`serve`]), and recordings
//! ([`record`]).

mod caller_metrics;
mod cgroup_metrics;
pub mod diff;
mod failure_metrics;
mod families;
mod memlock_metrics;
pub mod metrics;
pub mod record;
pub mod reduced_metrics;
pub mod serve;
mod text_format;
