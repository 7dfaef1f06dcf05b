//! The error view: get/pin calls that failed or came back short, by call
//! site, variant, outcome (errno, `zero`, `short`) and the WRITE /
//! LONGTERM flags their caller passed, with how much they asked for and
//! got and the latest process, from `FAILURES`.

use std::collections::BTreeMap;

use pin_common::{
    FUNCS,
    failures::{
        FAILED_LONGTERM, FAILED_WRITE, FailureKey, FailureStats, OUTCOME_SHORT, OUTCOME_ZERO,
    },
};
use serde::{Deserialize, Serialize};

use super::variant::errno_name;
use crate::kernel::symbols::CallSite;
use crate::units::comm_text;

/// One (call site, variant, outcome, flags) of failed or short calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureFigures {
    /// The outermost get/pin function.
    pub variant: String,
    /// The kernel call site (`function+offset`, as the caller table names it).
    pub caller: String,
    /// The errno returned, `zero` (no page) or `short` (fewer pages than
    /// asked for).
    pub outcome: String,
    /// `WRITE` and `LONGTERM` as the caller passed them.
    pub flags: Vec<String>,
    /// Calls.
    pub calls: u64,
    /// Pages they asked for.
    pub pages_requested: u64,
    /// Pages they got.
    pub pages_returned: u64,
    /// The largest request.
    pub max_requested: u64,
    /// Process (tgid) of the latest.
    pub last_pid: u32,
    /// Its comm.
    pub last_comm: String,
}

/// The text of an outcome.
fn outcome_name(outcome: i32) -> String {
    match outcome {
        OUTCOME_ZERO => "zero".to_string(),
        OUTCOME_SHORT => "short".to_string(),
        e => errno_name(e.unsigned_abs() as usize),
    }
}

impl FailureFigures {
    /// The view of one `FAILURES` row; `sites` names the call site.
    pub fn new(key: &FailureKey, s: &FailureStats, sites: &BTreeMap<u64, CallSite>) -> Self {
        let caller = sites
            .get(&key.caller)
            .cloned()
            .unwrap_or_else(|| CallSite::bare(key.caller))
            .to_string();
        let mut flags = Vec::new();
        if key.flags & FAILED_WRITE != 0 {
            flags.push("WRITE".to_string());
        }
        if key.flags & FAILED_LONGTERM != 0 {
            flags.push("LONGTERM".to_string());
        }
        FailureFigures {
            variant: FUNCS
                .get(key.func as usize)
                .map_or_else(|| format!("func#{}", key.func), |f| f.name.to_string()),
            caller,
            outcome: outcome_name(key.outcome),
            flags,
            calls: s.calls,
            pages_requested: s.pages_requested,
            pages_returned: s.pages_returned,
            max_requested: s.max_requested,
            last_pid: s.last_tgid,
            last_comm: comm_text(&s.comm),
        }
    }

    /// Mean pages asked for per call.
    pub fn mean_requested(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.pages_requested as f64 / self.calls as f64
        }
    }
}

/// Every row, most calls first (then by variant and caller, for a stable
/// order).
pub fn failure_views(
    failures: &BTreeMap<FailureKey, FailureStats>,
    sites: &BTreeMap<u64, CallSite>,
) -> Vec<FailureFigures> {
    let mut rows: Vec<FailureFigures> = failures
        .iter()
        .map(|(k, s)| FailureFigures::new(k, s, sites))
        .collect();
    rows.sort_by(|a, b| {
        b.calls.cmp(&a.calls).then_with(|| {
            (&a.variant, &a.caller, &a.outcome).cmp(&(&b.variant, &b.caller, &b.outcome))
        })
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(calls: u64, requested: u64, returned: u64) -> FailureStats {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"fio");
        FailureStats {
            calls,
            pages_requested: requested,
            pages_returned: returned,
            max_requested: requested,
            last_tgid: 9,
            comm,
            ..Default::default()
        }
    }

    #[test]
    fn rows_say_what_failed_and_how() {
        let efault = FailureKey {
            caller: 0xffff_0000,
            func: 8,
            outcome: -14,
            flags: FAILED_WRITE | FAILED_LONGTERM,
            _pad: 0,
        };
        let short = FailureKey {
            caller: 0,
            func: 8,
            outcome: OUTCOME_SHORT,
            flags: 0,
            _pad: 0,
        };
        let sites = BTreeMap::from([(
            0xffff_0000,
            CallSite {
                function: "io_pin_pages".into(),
                offset: 0x4a,
            },
        )]);
        let rows = failure_views(
            &BTreeMap::from([(efault, stats(3, 12, 0)), (short, stats(1, 8, 5))]),
            &sites,
        );
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(first.variant, FUNCS[8].name);
        assert_eq!(first.caller, "io_pin_pages+0x4a");
        assert_eq!(first.outcome, "EFAULT");
        assert_eq!(first.flags, ["WRITE", "LONGTERM"]);
        assert_eq!(first.mean_requested(), 4.0);
        assert_eq!((first.last_pid, first.last_comm.as_str()), (9, "fio"));
        assert_eq!(rows[1].outcome, "short");
        assert_eq!(rows[1].caller, CallSite::unknown().to_string());
        assert_eq!(rows[1].pages_returned, 5);
    }
}
