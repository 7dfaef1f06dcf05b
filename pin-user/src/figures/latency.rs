//! Latency figures from the kernel's log2 histograms: percentiles (upper
//! bounds of the buckets holding them), the exact mean, and their compact
//! text form.

use pin_common::GupStats;
use serde::{Deserialize, Serialize};

/// Latency figures of one variant, from the kernel's log2 histogram: the
/// percentiles are upper bounds of the buckets holding them, the mean is
/// exact. Shared by `stat --json`, the dashboard and recordings.
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

/// Upper bound in ns of the latency bucket holding quantile `q` (0..=1) of
/// a log2 histogram, or `None` when it is empty. Bucket `i` holds latencies
/// below `2^(i+1)` ns.
pub fn latency_quantile_ns(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(1u64 << (i + 1).min(63));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use pin_common::LATENCY_BUCKETS;

    #[test]
    fn quantiles_from_log2_buckets() {
        let mut hist = [0u64; LATENCY_BUCKETS];
        assert_eq!(latency_quantile_ns(&hist, 0.5), None);
        hist[9] = 90; // 512..1023 ns
        hist[12] = 10; // 4096..8191 ns
        assert_eq!(latency_quantile_ns(&hist, 0.5), Some(1024));
        assert_eq!(latency_quantile_ns(&hist, 0.9), Some(1024));
        assert_eq!(latency_quantile_ns(&hist, 0.99), Some(8192));
        assert_eq!(latency_quantile_ns(&hist, 1.0), Some(8192));
    }
}
