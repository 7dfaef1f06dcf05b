//! Snapshot -> delta: what changed between two snapshots, each kernel
//! table's rows counted from 0 where the kernel created them anew in
//! between (an LRU eviction), and the call-site and cgroup names a view
//! asks for.

use std::collections::BTreeMap;

use pin_common::{
    failures::{FailureKey, FailureStats},
    limits::{Denial, DenialKey},
};

use super::CounterSet;
use crate::{
    attribution,
    cgroups::{self, CgroupIdentity},
    counters::Counters,
    kernel::symbols::CallSite,
    probes::misses,
};

impl CounterSet {
    /// The changes from `earlier` to `self`; per-process and per-call-site
    /// entries only where something happened, counted from 0 where the
    /// kernel created the entry anew in between.
    pub fn since(&self, earlier: &CounterSet) -> CounterSet {
        let gup = self
            .gup
            .iter()
            .zip(earlier.gup.iter())
            .map(|(c, p)| c.delta(p))
            .collect();
        let release = self
            .release
            .iter()
            .zip(earlier.release.iter())
            .map(|(c, p)| c.delta(p))
            .collect();
        let procs = joined(&self.procs, &earlier.procs)
            .filter_map(|(tgid, cur, prev)| {
                // An entry created anew (evicted in between) counts from 0.
                let d = match prev {
                    // Most rows of a big table are idle: skipped before a
                    // delta is built (the counts only grow).
                    Some(prev)
                        if prev.first_ns == cur.first_ns
                            && (prev.calls, prev.released) == (cur.calls, cur.released) =>
                    {
                        return None;
                    }
                    Some(prev) if prev.first_ns == cur.first_ns => cur.delta(prev),
                    _ => *cur,
                };
                (d.calls != 0 || d.released != 0).then_some((*tgid, d))
            })
            .collect();
        let cgroups = joined(&self.cgroups, &earlier.cgroups)
            .filter_map(|(id, cur, prev)| {
                // An entry created anew (evicted in between) counts from 0.
                let d = match prev {
                    Some(prev) if prev.first_ns == cur.first_ns => cur.delta(prev),
                    _ => *cur,
                };
                (d.calls != 0 || d.released != 0).then_some((*id, d))
            })
            .collect();
        let callers = joined(&self.callers, &earlier.callers)
            .filter_map(|(key, cur, prev)| {
                // An entry created anew (evicted in between) counts from 0.
                let d = match prev {
                    Some(prev) if prev.first_ns == cur.first_ns => cur.delta(prev),
                    _ => *cur,
                };
                attribution::is_active(&d).then_some((*key, d))
            })
            .collect();
        CounterSet {
            gup,
            release,
            procs,
            cgroups,
            health: self.health.delta(&earlier.health),
            misses: misses::since(&self.misses, &earlier.misses),
            callers,
            evicted: self.evicted.delta(&earlier.evicted),
            balance: self.balance.delta(&earlier.balance),
            denials: denials_since(&self.denials, &earlier.denials),
            failures: failures_since(&self.failures, &earlier.failures),
            vmstat: match (self.vmstat, earlier.vmstat) {
                (Some(c), Some(p)) => Some(c.delta(&p)),
                _ => None,
            },
        }
    }
}

/// Each entry of `now` with the entry of `earlier` under the same key, if
/// any: one merge walk over both maps (iterated in key order), where a lookup per entry
/// would cost a tree descent each (100 000 processes: 100 000 descents a
/// sample).
fn joined<'a, K: Ord + 'a, V: 'a>(
    now: impl IntoIterator<Item = (&'a K, &'a V)>,
    earlier: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> impl Iterator<Item = (&'a K, &'a V, Option<&'a V>)> {
    let mut before = earlier.into_iter().peekable();
    now.into_iter().map(move |(key, cur)| {
        while before.next_if(|(k, _)| *k < key).is_some() {}
        let prev = before.next_if(|(k, _)| *k == key).map(|(_, v)| v);
        (key, cur, prev)
    })
}

/// The refusals of an interval: rows refused again, `denials` counting
/// the interval's (a row evicted and created anew counts from 0).
fn denials_since(
    now: &BTreeMap<DenialKey, Denial>,
    earlier: &BTreeMap<DenialKey, Denial>,
) -> BTreeMap<DenialKey, Denial> {
    now.iter()
        .filter_map(|(key, cur)| {
            let before = earlier.get(key).map_or(0, |p| p.denials);
            let new = if cur.denials >= before {
                cur.denials - before
            } else {
                cur.denials
            };
            (new > 0).then_some((
                *key,
                Denial {
                    denials: new,
                    ..*cur
                },
            ))
        })
        .collect()
}

/// The failed and short calls of an interval, by key; an entry created
/// anew (evicted in between) counts from 0.
fn failures_since(
    now: &BTreeMap<FailureKey, FailureStats>,
    earlier: &BTreeMap<FailureKey, FailureStats>,
) -> BTreeMap<FailureKey, FailureStats> {
    now.iter()
        .filter_map(|(key, cur)| {
            let d = match earlier.get(key) {
                Some(prev) if prev.first_ns == cur.first_ns => FailureStats {
                    calls: cur.calls.saturating_sub(prev.calls),
                    pages_requested: cur.pages_requested.saturating_sub(prev.pages_requested),
                    pages_returned: cur.pages_returned.saturating_sub(prev.pages_returned),
                    ..*cur
                },
                _ => *cur,
            };
            (d.calls != 0).then_some((*key, d))
        })
        .collect()
}

/// Counter changes over an interval.
#[derive(Clone, Debug)]
pub struct Delta {
    /// Interval length in seconds.
    pub seconds: f64,
    /// The changes (also reached through `Deref`).
    pub counts: CounterSet,
    /// Names of the call sites in `callers`: empty until [`Delta::named`].
    pub sites: BTreeMap<u64, CallSite>,
    /// What the cgroups in `cgroups` are: empty until [`Delta::named`].
    pub cgroup_names: BTreeMap<u64, CgroupIdentity>,
}

impl std::ops::Deref for Delta {
    type Target = CounterSet;
    fn deref(&self) -> &CounterSet {
        &self.counts
    }
}

impl std::ops::DerefMut for Delta {
    fn deref_mut(&mut self) -> &mut CounterSet {
        &mut self.counts
    }
}

impl Delta {
    /// Names the call sites in `callers` and the cgroups in `cgroups`: a
    /// step of its own, taken where a view shows them, since it can wait
    /// for kallsyms to be parsed or the cgroup tree to be walked.
    pub fn named(mut self) -> Self {
        self.sites = attribution::name_sites(&self.callers);
        self.cgroup_names = cgroups::resolve(self.cgroups.keys().copied());
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::joined;

    proptest! {
        #[test]
        fn merge_walk_pairs_what_a_lookup_would(
            now in proptest::collection::btree_map(0u32..200, 0u64..9, 0..60),
            earlier in proptest::collection::btree_map(0u32..200, 0u64..9, 0..60),
        ) {
            let walked: Vec<_> = joined(&now, &earlier).collect();
            let looked_up: Vec<_> = now.iter().map(|(k, v)| (k, v, earlier.get(k))).collect();
            prop_assert_eq!(walked, looked_up);
        }
    }

    #[test]
    fn entries_only_in_the_earlier_map_are_passed_over() {
        let now = BTreeMap::from([(2, 'b'), (5, 'e')]);
        let earlier = BTreeMap::from([(1, 'A'), (2, 'B'), (3, 'C'), (6, 'F')]);
        let walked: Vec<_> = joined(&now, &earlier).collect();
        assert_eq!(walked, vec![(&2, &'b', Some(&'B')), (&5, &'e', None)]);
    }
}
