//! Per-process figures: a process's counters over an interval and what it
//! still holds.

use serde::Serialize;

use crate::snapshot::ProcTotals;

/// One process over an interval (releases count for the process whose
/// context ran them, e.g. I/O completion).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessFigures {
    /// Process id (tgid).
    pub pid: u32,
    /// Its counters.
    #[serde(flatten)]
    pub totals: ProcTotals,
    /// Its memlock limit and what it has charged against it, from /proc
    /// (`None` once it has exited, or in views that do not read /proc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memlock: Option<crate::limits::MemlockState>,
}

impl ProcTotals {
    /// Pins taken minus pins released in this process's context (releases
    /// done elsewhere, e.g. I/O completion, count for that context).
    pub fn outstanding(&self) -> i64 {
        self.pinned as i64 - self.released as i64
    }
}

/// A process row's pid as shown: `-` for the `[irq]` row of releases
/// made in interrupt context (`pin_common::IRQ_TGID`, no real process).
pub fn pid_label(pid: u32) -> String {
    if pid == pin_common::IRQ_TGID {
        "-".to_string()
    } else {
        pid.to_string()
    }
}
