//! The kernel's own pin counters, `/proc/vmstat` `nr_foll_pin_acquired` and
//! `nr_foll_pin_released`: the independent check on pinwatch's numbers.

use serde::{Deserialize, Serialize};

/// FOLL_PIN page counters since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinCounters {
    /// Pages pinned (FOLL_PIN references taken), zero page excluded.
    pub nr_foll_pin_acquired: u64,
    /// Pages unpinned.
    pub nr_foll_pin_released: u64,
}

impl PinCounters {
    /// Reads the counters. These are per-CPU batched: call
    /// [`refresh`] first when an exact figure is needed.
    pub fn read() -> std::io::Result<Option<Self>> {
        let stats = procfs::vmstat().map_err(std::io::Error::other)?;
        let get = |name: &str| stats.get(name).map(|v| (*v).max(0) as u64);
        Ok(
            match (get("nr_foll_pin_acquired"), get("nr_foll_pin_released")) {
                (Some(acquired), Some(released)) => Some(Self {
                    nr_foll_pin_acquired: acquired,
                    nr_foll_pin_released: released,
                }),
                _ => None,
            },
        )
    }
}

crate::counters::counters!(PinCounters {
    sum: [nr_foll_pin_acquired, nr_foll_pin_released],
    hist: [],
    max: [],
    stamp: [],
    latest: [],
});

/// Folds the per-CPU vmstat deltas into the global counters
/// (`/proc/sys/vm/stat_refresh`, root only) so the next read is exact.
pub fn refresh() -> std::io::Result<()> {
    std::fs::write("/proc/sys/vm/stat_refresh", "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;

    #[test]
    fn reads_this_kernel() {
        // Every kernel since 5.7 (FOLL_PIN accounting) has these counters.
        PinCounters::read()
            .unwrap()
            .expect("nr_foll_pin_* in /proc/vmstat");
    }

    #[test]
    fn since_subtracts() {
        let a = PinCounters {
            nr_foll_pin_acquired: 10,
            nr_foll_pin_released: 4,
        };
        let b = PinCounters {
            nr_foll_pin_acquired: 75,
            nr_foll_pin_released: 69,
        };
        assert_eq!(
            b.delta(&a),
            PinCounters {
                nr_foll_pin_acquired: 65,
                nr_foll_pin_released: 65
            }
        );
    }
}
