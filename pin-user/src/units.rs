//! How figures are written: a rate per second and a latency in compact
//! units. A leaf: the figures and every view that writes a number use it.

/// `n` per second over `seconds` (at least 1 ns, so an empty interval
/// gives a finite rate).
pub fn per_second(n: u64, seconds: f64) -> f64 {
    n as f64 / seconds.max(1e-9)
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
