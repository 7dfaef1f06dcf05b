//! Kernel maps -> snapshots -> deltas. A [`Snapshot`] is every counter map
//! at one instant (the per-CPU ones summed over CPUs); [`Delta`] is what
//! happened between two of them. Views (stat, JSON, tests) render deltas
//! and never read maps.

use std::{collections::BTreeMap, time::Instant};

use aya::Pod;
use pin_common::{
    CallerKey, CallerStats, CgroupStats, GupStats, HEALTH_COUNT, INSERTS_CALLERS, INSERTS_CGROUPS,
    INSERTS_FAILURES, INSERTS_PROCS, PinBalance, ProcStats, ReleaseStats,
    failures::{FailureKey, FailureStats},
    limits::{Denial, DenialKey},
};

mod delta;

pub use delta::Delta;

use crate::{
    attribution,
    counters::{self, Counters},
    probes::{KernelMapError, KernelMaps, batch, maps::PerCpuEntries, misses::Misses},
    units::Comm,
    vmstat::PinCounters,
};

/// Per-process counters by tgid: a map over one sorted vector, because
/// the agent holds two of them (the previous sample's and the current
/// one) for every entry of a table that can hold 100 000 processes: 64
/// bytes an entry where a `BTreeMap` took about 90 with its nodes, one
/// allocation where it made one per node, and no sort buffer (the batch
/// read is sorted in place).
pub type ProcTable = litemap::LiteMap<u32, ProcTotals>;

/// One process's counters (its `PROCS` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcTotals {
    /// Last comm seen.
    pub comm: Comm,
    /// Outermost GUP calls.
    pub calls: u64,
    /// Pages returned by any variant.
    pub pages: u64,
    /// Pages returned by FOLL_PIN variants.
    pub pinned: u64,
    /// Pages released by unpin calls made in this process.
    pub released: u64,
    /// When the kernel created the entry (monotonic ns): a different value
    /// at the next read means it was evicted and created anew.
    #[serde(skip)]
    pub first_ns: u64,
}

impl ProcTotals {
    /// Adds a later interval's counts (its comm is the newer one).
    pub fn add(&mut self, later: &ProcTotals) {
        self.comm = later.comm;
        self.calls += later.calls;
        self.pages += later.pages;
        self.pinned += later.pinned;
        self.released += later.released;
    }
}

crate::counters::counters!(ProcTotals {
    sum: [calls, pages, pinned, released],
    hist: [],
    max: [],
    stamp: [first_ns],
    latest: [comm],
});

/// One cgroup's counters (its `CGROUPS` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupTotals {
    /// Outermost GUP calls made by the cgroup's tasks.
    pub calls: u64,
    /// Pages returned by any variant.
    pub pages: u64,
    /// Pages returned by FOLL_PIN variants.
    pub pinned: u64,
    /// Pages released by unpin calls made in the cgroup.
    pub released: u64,
    /// Outermost calls that returned an errno.
    pub errors: u64,
    /// When the kernel created the entry (monotonic ns), as
    /// [`ProcTotals::first_ns`].
    #[serde(skip)]
    pub first_ns: u64,
}

crate::counters::counters!(CgroupTotals {
    sum: [calls, pages, pinned, released, errors],
    hist: [],
    max: [],
    stamp: [first_ns],
    latest: [],
});

/// Every map's counters, summed over CPUs: their values at one instant
/// (in a [`Snapshot`]), or their changes over an interval (in a
/// [`Delta`], whose per-process and per-call-site tables keep only the
/// entries that did something).
#[derive(Clone, Debug)]
pub struct CounterSet {
    /// Per outermost GUP function id.
    pub gup: Vec<GupStats>,
    /// Per release function (id - GUP_FUNC_COUNT).
    pub release: Vec<ReleaseStats>,
    /// Per tgid.
    pub procs: ProcTable,
    /// Per cgroup v2 id (`pin_common::IRQ_CGROUP`: releases in interrupt
    /// context).
    pub cgroups: BTreeMap<u64, CgroupTotals>,
    /// Health counters by `pin_common::Health` index.
    pub health: [u64; HEALTH_COUNT],
    /// Runs the kernel skipped, per loaded program.
    pub misses: Misses,
    /// /proc/vmstat pin counters, read with the maps, where the kernel has
    /// them.
    pub vmstat: Option<PinCounters>,
    /// Per (call site, outermost function).
    pub callers: BTreeMap<CallerKey, CallerStats>,
    /// Entries the kernel evicted from its LRU tables.
    pub evicted: Evictions,
    /// FOLL_PIN pages taken and released, read together.
    pub balance: PinBalance,
    /// The kernel's memlock refusals by (process, check): in a snapshot
    /// every row on record, in a delta the rows refused again in the
    /// interval (`denials` counting the interval's; the rest describes
    /// the latest refusal).
    pub denials: BTreeMap<DenialKey, Denial>,
    /// Failed and short get/pin calls by (call site, variant, outcome,
    /// flags); in a delta only the keys with calls in the interval.
    pub failures: BTreeMap<FailureKey, FailureStats>,
}

/// All counters at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When the maps were read.
    pub taken: Instant,
    /// The counters (also reached through `Deref`).
    pub counts: CounterSet,
}

impl std::ops::Deref for Snapshot {
    type Target = CounterSet;
    fn deref(&self) -> &CounterSet {
        &self.counts
    }
}

impl std::ops::DerefMut for Snapshot {
    fn deref_mut(&mut self) -> &mut CounterSet {
        &mut self.counts
    }
}

/// Entries of the LRU tables (`PROCS`, `CALLERS`, `CGROUPS`, `FAILURES`)
/// the kernel evicted, taking their per-process / per-call-site /
/// per-cgroup / per-failure counts with them (the per-variant totals keep
/// every call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evictions {
    /// Per-process entries evicted.
    pub procs: u64,
    /// Per-call-site entries evicted.
    pub callers: u64,
    /// Per-cgroup entries evicted.
    pub cgroups: u64,
    /// Failed-call entries evicted.
    pub failures: u64,
}

crate::counters::counters!(Evictions {
    sum: [procs, callers, cgroups, failures],
    hist: [],
    max: [],
    stamp: [],
    latest: [],
});

impl Evictions {
    /// Entries evicted, from the number the kernel created (`inserted`, read
    /// first), the monotonic time read right after it (`read_ns`), and the
    /// creation times of the entries a walk of the table found afterwards.
    ///
    /// Every entry counted in `inserted` was created before `read_ns`; each
    /// is either found by the walk (created before `read_ns`) or was evicted
    /// by the time the walk ended. Entries created after `read_ns` are not
    /// in `inserted` and are left out. So this is exact when no entry is
    /// created during the read, and otherwise at most the evictions done by
    /// the end of the walk (never more than happened). Entries whose creation
    /// time is 0 were created by an older object and do not count.
    pub fn evicted(
        inserted: u64,
        read_ns: u64,
        found_created_ns: impl Iterator<Item = u64>,
    ) -> u64 {
        let found_old = found_created_ns
            .filter(|&ns| ns != 0 && ns < read_ns)
            .count() as u64;
        inserted.saturating_sub(found_old)
    }
}

/// Each entry of a per-CPU array of counters, summed over CPUs.
fn sum_entries<V: Pod + Counters>(
    entries: PerCpuEntries<'_, V>,
    zero: V,
) -> Result<Vec<V>, KernelMapError> {
    entries
        .map(|cpus| Ok(counters::sum(zero, cpus?.iter())))
        .collect()
}

/// Per-variant counters (`GUP_STATS`), summed over CPUs.
fn read_gup(maps: KernelMaps<'_>) -> Result<Vec<GupStats>, KernelMapError> {
    sum_entries(maps.gup_stats()?, GupStats::ZERO)
}

/// Per-release-function counters (`RELEASE_STATS`), summed over CPUs.
fn read_release(maps: KernelMaps<'_>) -> Result<Vec<ReleaseStats>, KernelMapError> {
    sum_entries(maps.release_stats()?, ReleaseStats::default())
}

/// FOLL_PIN pages taken and released (`PIN_BALANCE`), summed over CPUs.
fn read_balance(maps: KernelMaps<'_>) -> Result<PinBalance, KernelMapError> {
    Ok(counters::sum(
        PinBalance::default(),
        maps.pin_balance()?.iter(),
    ))
}

/// One process's counters, with the comm of its latest caller.
fn proc_totals(stats: &ProcStats) -> ProcTotals {
    ProcTotals {
        calls: stats.calls,
        pages: stats.pages,
        pinned: stats.pinned,
        released: stats.released,
        first_ns: stats.first_ns,
        comm: Comm::new(stats.comm),
    }
}

/// Per-process counters (`PROCS`). Entries can be evicted or added while
/// we iterate: the ones that vanish are skipped rather than failing the
/// whole snapshot.
fn read_procs(maps: KernelMaps<'_>) -> Result<ProcTable, KernelMapError> {
    // Converted in place (same size), then sorted in place: the table's
    // only copy is the batch read's buffer.
    let mut rows: Vec<(u32, ProcTotals)> = batch::entries(&maps.procs()?)
        .into_iter()
        .map(|(tgid, stats)| (tgid, proc_totals(&stats)))
        .collect();
    rows.sort_unstable_by_key(|(tgid, _)| *tgid);
    // A batch pass yields each key once; aya's entry-by-entry walk (the
    // fallback) can come back to a key after an eviction.
    rows.dedup_by_key(|(tgid, _)| *tgid);
    // The batch buffer grew by doubling.
    rows.shrink_to_fit();
    Ok(ProcTable::from_sorted_store_unchecked(rows))
}

/// Per-cgroup counters (`CGROUPS`); entries that vanish
/// during the walk are skipped, as in [`read_procs`].
fn read_cgroups(maps: KernelMaps<'_>) -> Result<BTreeMap<u64, CgroupTotals>, KernelMapError> {
    Ok(batch::entries(&maps.cgroups()?)
        .into_iter()
        .map(|(id, stats)| (id, cgroup_totals(&stats)))
        .collect())
}

/// The kernel's memlock refusals (`LIMIT_DENIALS`); rows that vanish
/// during the walk are skipped, as in [`read_procs`].
fn read_denials(maps: KernelMaps<'_>) -> Result<BTreeMap<DenialKey, Denial>, KernelMapError> {
    Ok(maps.limit_denials()?.iter().flatten().collect())
}

/// One cgroup's counters.
fn cgroup_totals(stats: &CgroupStats) -> CgroupTotals {
    CgroupTotals {
        calls: stats.calls,
        pages: stats.pages,
        pinned: stats.pinned,
        released: stats.released,
        errors: stats.errors,
        first_ns: stats.first_ns,
    }
}

/// The `[irq]` rows: pages released in interrupt context, which belong to
/// no process or cgroup. The kernel counts them in the pin balance
/// (`PinBalance::irq_released`, no hash lookup per page) rather than in
/// rows of their own; shown under `IRQ_TGID` and `IRQ_CGROUP` once there
/// are any. Their creation stamp is 0: a counter that is never evicted.
fn add_irq_rows(
    procs: &mut ProcTable,
    cgroups: &mut BTreeMap<u64, CgroupTotals>,
    balance: &PinBalance,
) {
    if balance.irq_released == 0 {
        return;
    }
    procs.insert(
        pin_common::IRQ_TGID,
        ProcTotals {
            comm: Comm::new(pin_common::IRQ_COMM),
            released: balance.irq_released,
            ..ProcTotals::default()
        },
    );
    cgroups.insert(
        pin_common::IRQ_CGROUP,
        CgroupTotals {
            released: balance.irq_released,
            ..CgroupTotals::default()
        },
    );
}

/// The LRU tables (`PROCS`, `CALLERS`, `CGROUPS`) and what the kernel
/// evicted from them.
struct Tables {
    procs: ProcTable,
    callers: BTreeMap<CallerKey, CallerStats>,
    cgroups: BTreeMap<u64, CgroupTotals>,
    failures: BTreeMap<FailureKey, FailureStats>,
    evicted: Evictions,
}

/// Reads the LRU tables, given the entries created in each (`inserted`,
/// read at `inserts_read_ns`, before the walks as [`Evictions::evicted`]
/// needs).
fn read_tables(
    maps: KernelMaps<'_>,
    inserted: [u64; pin_common::INSERTS_LEN as usize],
    inserts_read_ns: u64,
) -> Result<Tables, KernelMapError> {
    let procs = read_procs(maps)?;
    let callers = attribution::read_callers(maps)?;
    let cgroups = read_cgroups(maps)?;
    let failures: BTreeMap<FailureKey, FailureStats> = maps.failures()?.iter().flatten().collect();
    let evicted = Evictions {
        procs: Evictions::evicted(
            inserted[INSERTS_PROCS as usize],
            inserts_read_ns,
            procs.values().map(|p: &ProcTotals| p.first_ns),
        ),
        callers: Evictions::evicted(
            inserted[INSERTS_CALLERS as usize],
            inserts_read_ns,
            callers.values().map(|c| c.first_ns),
        ),
        cgroups: Evictions::evicted(
            inserted[INSERTS_CGROUPS as usize],
            inserts_read_ns,
            cgroups.values().map(|c| c.first_ns),
        ),
        failures: Evictions::evicted(
            inserted[INSERTS_FAILURES as usize],
            inserts_read_ns,
            failures.values().map(|f| f.first_ns),
        ),
    };
    Ok(Tables {
        procs,
        callers,
        cgroups,
        failures,
        evicted,
    })
}

impl Snapshot {
    /// Folds the probes' pending counts, then reads every counter map of a
    /// loaded object (and /proc/vmstat).
    pub fn read(maps: KernelMaps<'_>) -> Result<Self, KernelMapError> {
        maps.fold_pending()?;
        let gup = read_gup(maps)?;
        let release = read_release(maps)?;
        let balance = read_balance(maps)?;
        // Entries created so far, then the time: both before the table
        // walks (see `Evictions::evicted`).
        let counts = maps.probe_counts()?;
        let inserts_read_ns = attribution::lifetimes::monotonic_ns();
        let health = counts.health;
        let misses = maps.misses();
        let Tables {
            mut procs,
            callers,
            mut cgroups,
            failures,
            evicted,
        } = read_tables(maps, counts.inserts, inserts_read_ns)?;
        add_irq_rows(&mut procs, &mut cgroups, &balance);
        // The instant and vmstat belong with the counters. Call sites are
        // named later, where a view shows them (`Delta::named`): naming
        // can wait for kallsyms to be parsed.
        let denials = read_denials(maps)?;
        let taken = Instant::now();
        let vmstat = PinCounters::read().ok().flatten();
        Ok(Snapshot {
            taken,
            counts: CounterSet {
                gup,
                release,
                procs,
                cgroups,
                health,
                misses,
                vmstat,
                callers,
                evicted,
                balance,
                denials,
                failures,
            },
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Delta {
        Delta {
            seconds: self.taken.duration_since(earlier.taken).as_secs_f64(),
            counts: self.counts.since(&earlier.counts),
            sites: BTreeMap::new(),
            cgroup_names: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pin_common::{FUNCS, GUP_FUNC_COUNT};

    fn snapshot(procs: &[(u32, u64, u64)], evicted_procs: u64) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            counts: CounterSet {
                gup: vec![GupStats::ZERO; GUP_FUNC_COUNT],
                release: vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT],
                procs: procs
                    .iter()
                    .map(|&(tgid, calls, first_ns)| {
                        let totals = ProcTotals {
                            calls,
                            first_ns,
                            ..Default::default()
                        };
                        (tgid, totals)
                    })
                    .collect(),
                cgroups: BTreeMap::new(),
                health: [0; HEALTH_COUNT],
                misses: Default::default(),
                vmstat: None,
                callers: BTreeMap::new(),
                evicted: Evictions {
                    procs: evicted_procs,
                    ..Evictions::default()
                },
                balance: PinBalance::default(),
                denials: BTreeMap::new(),
                failures: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn evictions_are_entries_created_before_the_read_and_not_found() {
        // 5 created before the read at t=100; 3 of them still there, plus
        // one created during the walk (t=150) that the count leaves out.
        assert_eq!(Evictions::evicted(5, 100, [10, 20, 30, 150].into_iter()), 2);
        // Nothing evicted: every counted entry found.
        assert_eq!(Evictions::evicted(3, 100, [10, 20, 30].into_iter()), 0);
        // Entries without a creation time (older object) are not counted.
        assert_eq!(Evictions::evicted(2, 100, [0, 0, 10].into_iter()), 1);
    }

    #[test]
    fn a_process_entry_created_anew_counts_from_zero() {
        let earlier = snapshot(&[(7, 100, 1_000), (8, 50, 2_000)], 0);
        // 7 evicted and created again (new first_ns) with 4 calls; 8 kept.
        let later = snapshot(&[(7, 4, 9_000), (8, 60, 2_000)], 1);
        let d = later.since(&earlier);
        assert_eq!(d.procs[&7].calls, 4, "not 4 - 100 saturated to 0");
        assert_eq!(d.procs[&8].calls, 10);
        assert_eq!(d.evicted.procs, 1);
    }

    #[test]
    fn a_call_site_entry_created_anew_counts_from_zero() {
        let key = CallerKey::new(0xffff_ffff_8100_0000, 0);
        let stats = |calls, first_ns| CallerStats {
            calls,
            first_ns,
            ..CallerStats::ZERO
        };
        let mut earlier = snapshot(&[], 0);
        earlier.callers.insert(key, stats(100, 1_000));
        let mut later = snapshot(&[], 0);
        later.callers.insert(key, stats(3, 5_000));
        assert_eq!(later.since(&earlier).callers[&key].calls, 3);
        later.callers.insert(key, stats(130, 1_000));
        assert_eq!(later.since(&earlier).callers[&key].calls, 30);
    }

    /// Releases in interrupt context reach the views as the `[irq]`
    /// process and cgroup rows, from the balance's one counter.
    #[test]
    fn irq_releases_become_the_irq_rows() {
        let mut procs = ProcTable::new();
        let mut cgroups = BTreeMap::new();
        add_irq_rows(&mut procs, &mut cgroups, &PinBalance::default());
        assert!(procs.is_empty() && cgroups.is_empty());
        let balance = PinBalance {
            released: 600,
            irq_released: 512,
            ..PinBalance::default()
        };
        add_irq_rows(&mut procs, &mut cgroups, &balance);
        let row = procs
            .get(&pin_common::IRQ_TGID)
            .expect("the [irq] process row");
        assert_eq!(
            (row.released, row.calls, row.comm.to_string()),
            (512, 0, "[irq]".into())
        );
        assert_eq!(cgroups[&pin_common::IRQ_CGROUP].released, 512);
    }
}
