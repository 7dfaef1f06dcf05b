//! Where start-up time goes: the named phases of discovering the kernel
//! and attaching, each timed as it runs, in order. `pinwatch probes`
//! prints them, and every command logs them (`RUST_LOG=info`), so that a
//! slow start says which part was slow (BTF, feature probes, kallsyms,
//! load and verify, attach, the first read).

use std::time::{Duration, Instant};

use serde::Serialize;

/// One timed phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    /// What ran.
    pub name: &'static str,
    /// How long it took, in milliseconds.
    pub ms: f64,
}

/// Start-up phases in the order they ran; they do not overlap, so their
/// sum is the start-up's wall time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Phases(Vec<Phase>);

impl Phases {
    /// Runs `f` as phase `name` and records how long it took.
    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.record(name, started.elapsed());
        out
    }

    /// Records phase `name` as having taken `took`.
    pub fn record(&mut self, name: &'static str, took: Duration) {
        self.0.push(Phase {
            name,
            ms: took.as_secs_f64() * 1e3,
        });
    }

    /// Appends `other`'s phases after these.
    pub fn extend(&mut self, other: &Phases) {
        self.0.extend(other.0.iter().cloned());
    }

    /// The phases, in order.
    pub fn list(&self) -> &[Phase] {
        &self.0
    }

    /// Their sum, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.0.iter().map(|p| p.ms).sum()
    }
}

impl std::fmt::Display for Phases {
    /// `BTF 131 ms, feature probes 520 ms, ... = 4112 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {:.0} ms", p.name, p.ms)?;
        }
        write!(f, " = {:.0} ms", self.total_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_keep_their_order_and_sum() {
        let mut phases = Phases::default();
        phases.record("BTF", Duration::from_millis(130));
        let got = phases.time("attach", || 7);
        assert_eq!(got, 7);
        let mut all = Phases::default();
        all.record("first", Duration::from_millis(20));
        all.extend(&phases);
        let names: Vec<_> = all.list().iter().map(|p| p.name).collect();
        assert_eq!(names, ["first", "BTF", "attach"]);
        assert!(all.total_ms() >= 150.0);
        assert!(
            all.to_string()
                .starts_with("first 20 ms, BTF 130 ms, attach ")
        );
    }
}
