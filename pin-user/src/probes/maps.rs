//! The typed facade over the loaded object's maps, the one place that
//! opens them by name: [`KernelMaps`] reads (borrowed from
//! [`Probes::maps`](super::Probes::maps)), [`KernelMapsMut`] sets the
//! probes up and takes the event ring
//! ([`Probes::maps_mut`](super::Probes::maps_mut)). Each method opens one
//! map by its name in [`pin_common::maps`] with the key and value types
//! the kernel side writes; [`KernelMapError`] says which map was missing or
//! not what the agent expects. The test below checks every name, type and
//! layout against both embedded objects, without a kernel.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, Pod,
    maps::{Array, CgroupArray, HashMap, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
};
use pin_common::{
    CallerKey, CallerStats, CgroupStats, FUNC_COUNT, GUP_FUNC_COUNT, GupStats, PinBalance,
    PinRecord, ProbeCounts, ProcStats, ReleaseStats, maps, release_hook::ReleaseAtHook,
};

use super::misses::{self, Misses};

/// A map the agent cannot use: missing from the object, or not readable
/// as the type it expects.
#[derive(Debug, thiserror::Error)]
pub enum KernelMapError {
    /// A map is missing from the object.
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    /// Opening or reading a map failed.
    #[error("reading map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// Writing a map failed before the kernel was asked (the possible
    /// CPUs unknown).
    #[error("writing map {map}: {source}")]
    Io {
        /// Map name.
        map: &'static str,
        /// What failed.
        source: std::io::Error,
    },
    /// Running the task iterator that folds the pending counts failed.
    #[error("folding the probes' pending counts: {0}")]
    Fold(std::io::Error),
}

impl KernelMapError {
    /// Wraps aya's error about `map` (for `map_err`).
    fn on(map: &'static str) -> impl Fn(aya::maps::MapError) -> Self {
        move |source| Self::Map { map, source }
    }
}

/// The entries of a per-CPU array, read one at a time in index order
/// (so only one entry's per-CPU values are held at once), each as its
/// per-CPU values or the error naming the map.
pub struct PerCpuEntries<'a, V: Pod> {
    name: &'static str,
    map: PerCpuArray<&'a MapData, V>,
    indexes: std::ops::Range<u32>,
}

impl<V: Pod> Iterator for PerCpuEntries<'_, V> {
    type Item = Result<PerCpuValues<V>, KernelMapError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.indexes.next()?;
        Some(
            self.map
                .get(&index, 0)
                .map_err(KernelMapError::on(self.name)),
        )
    }
}

/// The maps of a loaded object, for reading. Copy: a shared borrow.
///
/// Per-CPU arrays come as typed reads ([`PerCpuEntries`]); hash maps as
/// the typed aya map, to iterate.
#[derive(Clone, Copy)]
pub struct KernelMaps<'a> {
    ebpf: &'a Ebpf,
    /// The kprobe_multi programs and links, whose skipped runs are read
    /// with the others'.
    multi: Option<&'a super::multi::Multi>,
    /// The task iterator that folds the probes' pending counts, if the
    /// probes defer any.
    fold: Option<&'a super::fold::PendingFold>,
}

impl<'a> KernelMaps<'a> {
    /// The maps of `ebpf` (and the kprobe_multi programs and the pending
    /// fold beside it).
    pub(super) fn new(
        ebpf: &'a Ebpf,
        multi: Option<&'a super::multi::Multi>,
        fold: Option<&'a super::fold::PendingFold>,
    ) -> Self {
        Self { ebpf, multi, fold }
    }

    /// Folds every thread's pending counts into the maps (see
    /// [`super::fold`]), so that a read right after is exact for every
    /// call that returned before it; nothing to do where the probes defer
    /// none.
    pub fn fold_pending(self) -> Result<(), KernelMapError> {
        match self.fold {
            Some(fold) => fold.run().map_err(KernelMapError::Fold),
            None => Ok(()),
        }
    }

    /// The map `name`, typed as `T`.
    fn open<T>(self, name: &'static str) -> Result<T, KernelMapError>
    where
        T: TryFrom<&'a Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map(name).ok_or(KernelMapError::Missing(name))?;
        T::try_from(map).map_err(KernelMapError::on(name))
    }

    /// Entry `index` of the per-CPU array `name`.
    fn per_cpu_entry<V: Pod>(
        self,
        name: &'static str,
        index: u32,
    ) -> Result<PerCpuValues<V>, KernelMapError> {
        let map: PerCpuArray<&MapData, V> = self.open(name)?;
        map.get(&index, 0).map_err(KernelMapError::on(name))
    }

    /// Entries `0..count` of the per-CPU array `name`.
    fn per_cpu_entries<V: Pod>(
        self,
        name: &'static str,
        count: usize,
    ) -> Result<PerCpuEntries<'a, V>, KernelMapError> {
        Ok(PerCpuEntries {
            name,
            map: self.open(name)?,
            indexes: 0..count as u32,
        })
    }

    /// `GUP_STATS`: per outermost get/pin variant, by function id.
    pub fn gup_stats(self) -> Result<PerCpuEntries<'a, GupStats>, KernelMapError> {
        self.per_cpu_entries(maps::GUP_STATS, GUP_FUNC_COUNT)
    }

    /// `RELEASE_STATS`: per release function (id - `GUP_FUNC_COUNT`).
    pub fn release_stats(self) -> Result<PerCpuEntries<'a, ReleaseStats>, KernelMapError> {
        self.per_cpu_entries(maps::RELEASE_STATS, FUNC_COUNT - GUP_FUNC_COUNT)
    }

    /// `PIN_BALANCE`: FOLL_PIN pages taken and released, read together.
    pub fn pin_balance(self) -> Result<PerCpuValues<PinBalance>, KernelMapError> {
        self.per_cpu_entry(maps::PIN_BALANCE, 0)
    }

    /// `PROBE_COUNTS` (the object's `.bss`): the unaccounted events by
    /// [`pin_common::Health`] index and the entries created in the LRU
    /// tables, in one read.
    pub fn probe_counts(self) -> Result<ProbeCounts, KernelMapError> {
        let map: Array<&MapData, ProbeCounts> = self.open(maps::PROBE_COUNTS)?;
        map.get(&0, 0)
            .map_err(KernelMapError::on(maps::PROBE_COUNTS))
    }

    /// `PROCS`: per process (tgid).
    pub fn procs(self) -> Result<HashMap<&'a MapData, u32, ProcStats>, KernelMapError> {
        self.open(maps::PROCS)
    }

    /// `CGROUPS`: per cgroup v2 id.
    pub fn cgroups(self) -> Result<HashMap<&'a MapData, u64, CgroupStats>, KernelMapError> {
        self.open(maps::CGROUPS)
    }

    /// `CALLERS`: per (call site, outermost function).
    pub fn callers(self) -> Result<HashMap<&'a MapData, CallerKey, CallerStats>, KernelMapError> {
        self.open(maps::CALLERS)
    }

    /// `LIMIT_DENIALS`: the kernel's memlock refusals by (process, check).
    pub fn limit_denials(
        self,
    ) -> Result<
        HashMap<&'a MapData, pin_common::limits::DenialKey, pin_common::limits::Denial>,
        KernelMapError,
    > {
        self.open(maps::LIMIT_DENIALS)
    }

    /// `FAILURES`: failed and short get/pin calls.
    pub fn failures(
        self,
    ) -> Result<
        HashMap<&'a MapData, pin_common::failures::FailureKey, pin_common::failures::FailureStats>,
        KernelMapError,
    > {
        self.open(maps::FAILURES)
    }

    /// `PIN_LIFETIMES`: outstanding pins by folio address.
    pub fn pin_lifetimes(self) -> Result<HashMap<&'a MapData, u64, PinRecord>, KernelMapError> {
        self.open(maps::PIN_LIFETIMES)
    }

    /// `FILTER`: 1 at index 0 while only a followed tree is counted.
    pub fn filter(self) -> Result<Array<&'a MapData, u32>, KernelMapError> {
        self.open(maps::FILTER)
    }

    /// Runs the kernel skipped, per loaded program: read with the maps,
    /// though the kernel keeps them with the programs (see [`misses`]).
    pub fn misses(self) -> Misses {
        misses::read(self.ebpf, self.multi)
    }
}

/// The maps of a loaded object, for the writes that set the probes up and
/// for taking the event ring out of it.
pub struct KernelMapsMut<'a> {
    ebpf: &'a mut Ebpf,
}

impl<'a> KernelMapsMut<'a> {
    /// The maps of `ebpf`.
    pub(super) fn new(ebpf: &'a mut Ebpf) -> Self {
        Self { ebpf }
    }

    /// The map `name`, typed as `T`.
    fn open<'m, T>(&'m mut self, name: &'static str) -> Result<T, KernelMapError>
    where
        T: TryFrom<&'m mut Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelMapError::Missing(name))?;
        T::try_from(map).map_err(KernelMapError::on(name))
    }

    /// `SETTINGS`: what changes after load, by `pin_common::settings::SETTING_*` index.
    pub fn settings(&mut self) -> Result<Array<&mut MapData, u64>, KernelMapError> {
        self.open(maps::SETTINGS)
    }

    /// `TRACKED`: the followed process tree.
    pub fn tracked(&mut self) -> Result<HashMap<&mut MapData, u32, u8>, KernelMapError> {
        self.open(maps::TRACKED)
    }

    /// `FILTER`: 1 at index 0 counts only the followed tree.
    pub fn filter(&mut self) -> Result<Array<&mut MapData, u32>, KernelMapError> {
        self.open(maps::FILTER)
    }

    /// `CGROUP_FILTER`: puts the cgroup directory `dir` (`--cgroup`) in
    /// slot 0.
    pub fn set_cgroup_filter(&mut self, dir: &std::fs::File) -> Result<(), KernelMapError> {
        let mut array: CgroupArray<&mut MapData> = self.open(maps::CGROUP_FILTER)?;
        array
            .set(0, dir.as_fd(), 0)
            .map_err(KernelMapError::on(maps::CGROUP_FILTER))
    }

    /// `EVENT_FILTER`: which calls become events, by `EVENTS_*` index.
    pub fn event_filter(&mut self) -> Result<Array<&mut MapData, u32>, KernelMapError> {
        self.open(maps::EVENT_FILTER)
    }

    /// `RELEASE_AT_HOOK`: what the release hook counts besides GUP's own
    /// releases (`plan`), the same on every possible CPU.
    pub fn set_release_at_hook(&mut self, plan: ReleaseAtHook) -> Result<(), KernelMapError> {
        let name = maps::RELEASE_AT_HOOK;
        let mut array: PerCpuArray<&mut MapData, ReleaseAtHook> = self.open(name)?;
        let io = |source| KernelMapError::Io { map: name, source };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io(e))?;
        let values = PerCpuValues::try_from(vec![plan; cpus]).map_err(io)?;
        array.set(0, values, 0).map_err(KernelMapError::on(name))
    }

    /// Takes the `EVENTS` ring buffer out of the object (once: a second
    /// call finds it missing).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelMapError> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(KernelMapError::Missing(maps::EVENTS))?;
        RingBuf::try_from(map).map_err(KernelMapError::on(maps::EVENTS))
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use aya_obj::{Object, generated::bpf_map_type};

    use super::*;
    use crate::probes::{BASELINE_OBJECT, EBPF_OBJECT};

    /// A map's name, type, key size and value size.
    type Shape = (&'static str, bpf_map_type, usize, usize);

    fn shape<K, V>(name: &'static str, map_type: bpf_map_type) -> Shape {
        (name, map_type, size_of::<K>(), size_of::<V>())
    }

    /// Each map the agent opens, as it opens it.
    fn shapes() -> [Shape; maps::ALL.len()] {
        use bpf_map_type::*;
        [
            shape::<u32, GupStats>(maps::GUP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, ReleaseStats>(maps::RELEASE_STATS, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, ProcStats>(maps::PROCS, BPF_MAP_TYPE_LRU_HASH),
            shape::<u64, CgroupStats>(maps::CGROUPS, BPF_MAP_TYPE_LRU_HASH),
            shape::<u32, u32>(maps::CGROUP_FILTER, BPF_MAP_TYPE_CGROUP_ARRAY),
            shape::<u32, u32>(maps::FILTER, BPF_MAP_TYPE_ARRAY),
            shape::<u32, u8>(maps::TRACKED, BPF_MAP_TYPE_HASH),
            shape::<u32, PinBalance>(maps::PIN_BALANCE, BPF_MAP_TYPE_PERCPU_ARRAY),
            // The `.bss`: nothing else of the object may be a writable
            // global, or its size would not be `ProbeCounts`'.
            shape::<u32, ProbeCounts>(maps::PROBE_COUNTS, BPF_MAP_TYPE_ARRAY),
            // A ring buffer has neither key nor value.
            shape::<(), ()>(maps::EVENTS, BPF_MAP_TYPE_RINGBUF),
            shape::<u32, u32>(maps::EVENT_FILTER, BPF_MAP_TYPE_ARRAY),
            shape::<u32, u64>(maps::SETTINGS, BPF_MAP_TYPE_ARRAY),
            shape::<CallerKey, CallerStats>(maps::CALLERS, BPF_MAP_TYPE_LRU_HASH),
            shape::<u64, PinRecord>(maps::PIN_LIFETIMES, BPF_MAP_TYPE_HASH),
            shape::<pin_common::limits::DenialKey, pin_common::limits::Denial>(
                maps::LIMIT_DENIALS,
                BPF_MAP_TYPE_LRU_HASH,
            ),
            shape::<pin_common::failures::FailureKey, pin_common::failures::FailureStats>(
                maps::FAILURES,
                BPF_MAP_TYPE_LRU_HASH,
            ),
            shape::<u32, ReleaseAtHook>(maps::RELEASE_AT_HOOK, BPF_MAP_TYPE_PERCPU_ARRAY),
        ]
    }

    /// A renamed static in pin-ebpf, or a map whose type or layout changed
    /// on one side only, fails here rather than at run time.
    #[test]
    fn every_map_name_is_a_map_of_the_embedded_objects() {
        let shapes = shapes();
        let named: Vec<&str> = shapes.iter().map(|(name, ..)| *name).collect();
        assert_eq!(named, maps::ALL, "one shape per name, in ALL's order");
        for (object, which) in [(EBPF_OBJECT, "full"), (BASELINE_OBJECT, "baseline")] {
            let parsed = Object::parse(object).expect("the embedded object parses");
            for (name, map_type, key, value) in shapes {
                let map = parsed
                    .maps
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} is not a map of the {which} object"));
                assert_eq!(map.map_type(), map_type as u32, "{name} ({which}): type");
                assert_eq!(map.key_size() as usize, key, "{name} ({which}): key size");
                assert_eq!(
                    map.value_size() as usize,
                    value,
                    "{name} ({which}): value size"
                );
            }
            // The per-CPU arrays are read entry by entry up to these counts.
            for (name, count) in [
                (maps::GUP_STATS, GUP_FUNC_COUNT),
                (maps::RELEASE_STATS, FUNC_COUNT - GUP_FUNC_COUNT),
                (maps::PIN_BALANCE, 1),
                (maps::PROBE_COUNTS, 1),
            ] {
                let entries = parsed.maps[name].max_entries() as usize;
                assert!(entries >= count, "{name} ({which}): {entries} entries");
            }
        }
    }
}
