//! How figures are written: a rate per second, a latency in compact
//! units, a kernel comm as text. A leaf: the figures and every view that writes a number use it.

/// A kernel `comm` (NUL-padded, at most 16 bytes) as text.
pub fn comm_text(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

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
