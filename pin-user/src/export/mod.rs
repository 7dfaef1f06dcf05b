//! Getting pinwatch's numbers out: Prometheus/OpenMetrics exposition
//! ([`metrics`]) served over HTTP ([`serve`]).

pub mod metrics;
pub mod serve;
