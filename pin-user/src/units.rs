//! How figures are written: a rate per second, a latency in compact
//! units, a kernel comm as text. A leaf: the figures and every view that writes a number use it.

/// A task's `comm` as the kernel keeps it (16 bytes, NUL-padded). Kept
/// as bytes in every per-process table row (which is `Copy` then, with no
/// allocation per row per sample: the agent reads every row each
/// interval), and turned into text only where shown.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Comm([u8; 16]);

impl Comm {
    /// The kernel's bytes.
    pub const fn new(raw: [u8; 16]) -> Self {
        Self(raw)
    }

    /// As text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..len])
    }

    /// Whether its text contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }
}

impl From<&str> for Comm {
    /// The first 15 bytes of `text`, as the kernel would keep them.
    fn from(text: &str) -> Self {
        let mut raw = [0u8; 16];
        let len = text.len().min(15);
        raw[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self(raw)
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so width and alignment flags apply as they do to a str.
        f.pad(&self.text())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.text(), f)
    }
}

impl serde::Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_text_up_to_the_first_nul_and_pads_like_a_str() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"fio\0");
        raw[5] = b'x';
        let comm = Comm::new(raw);
        assert_eq!(comm.text(), "fio");
        assert_eq!(format!("[{comm:<5}]"), "[fio  ]");
        assert_eq!(serde_json::to_string(&comm).unwrap(), "\"fio\"");
        assert!(comm.contains("fi") && !comm.contains("x"));
        assert_eq!(
            Comm::from("a-very-long-command-name").text(),
            "a-very-long-com"
        );
        assert_eq!(comm_text(&raw), comm.text());
    }
}
