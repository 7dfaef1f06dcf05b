//! Per-cgroup figures: a cgroup's counters over an interval (or since
//! start), with what its path says it is (container, pod, unit).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{cgroups::CgroupIdentity, snapshot::CgroupTotals};

/// One cgroup over an interval. Releases count for the cgroup whose task
/// ran them; those made in interrupt context (an O_DIRECT completion) for
/// the `[irq]` row.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CgroupFigures {
    /// The cgroup v2 id (the directory's inode number; 0 for `[irq]`).
    pub id: u64,
    /// Its path and what the path says (container, pod, unit).
    #[serde(flatten)]
    pub identity: CgroupIdentity,
    /// Its counters.
    #[serde(flatten)]
    pub totals: CgroupTotals,
}

impl CgroupTotals {
    /// Pins taken minus pins released in this cgroup's tasks (releases
    /// made in interrupt context count for the `[irq]` row).
    pub fn outstanding(&self) -> i64 {
        self.pinned as i64 - self.released as i64
    }
}

impl CgroupFigures {
    /// The busiest cgroups of `cgroups` (by pages, then calls, then
    /// releases), at most `limit`, named from `names` (an id missing
    /// there is shown by its number).
    pub fn busiest(
        cgroups: &BTreeMap<u64, CgroupTotals>,
        names: &BTreeMap<u64, CgroupIdentity>,
        limit: usize,
    ) -> Vec<CgroupFigures> {
        let mut rows: Vec<CgroupFigures> = cgroups
            .iter()
            .map(|(id, totals)| CgroupFigures {
                id: *id,
                identity: names.get(id).cloned().unwrap_or_else(|| CgroupIdentity {
                    path: format!("[cgroup {id}]"),
                    ..CgroupIdentity::default()
                }),
                totals: *totals,
            })
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &CgroupFigures| (r.totals.pages, r.totals.calls, r.totals.released);
            key(b).cmp(&key(a)).then(a.id.cmp(&b.id))
        });
        rows.truncate(limit);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(calls: u64, pages: u64) -> CgroupTotals {
        CgroupTotals {
            calls,
            pages,
            ..CgroupTotals::default()
        }
    }

    #[test]
    fn busiest_sorts_by_pages_then_calls_and_names_unknown_ids_by_number() {
        let cgroups = BTreeMap::from([(5, totals(1, 10)), (6, totals(9, 10)), (7, totals(50, 2))]);
        let names = BTreeMap::from([(6, CgroupIdentity::of_path("/system.slice/a.service"))]);
        let rows = CgroupFigures::busiest(&cgroups, &names, 2);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [6, 5]);
        assert_eq!(rows[0].identity.path, "/system.slice/a.service");
        assert_eq!(rows[1].identity.path, "[cgroup 5]");
    }

    #[test]
    fn outstanding_is_pinned_minus_released() {
        let t = CgroupTotals {
            pinned: 10,
            released: 14,
            ..CgroupTotals::default()
        };
        assert_eq!(t.outstanding(), -4);
    }
}
