//! The maps of the embedded eBPF objects as the agent knows them: every
//! name in [`pin_common::maps`] is checked here, without a kernel, to be a
//! map of both objects with the type and key and value sizes the agent
//! opens it with.

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use aya_obj::{Object, generated::bpf_map_type};
    use pin_common::{
        CallerKey, CallerStats, FuncConfig, GupStats, PinBalance, PinRecord, ProcStats,
        ReleaseStats, maps,
    };

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
            shape::<u32, FuncConfig>(maps::CONFIG, BPF_MAP_TYPE_ARRAY),
            shape::<u32, GupStats>(maps::GUP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, ReleaseStats>(maps::RELEASE_STATS, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, ProcStats>(maps::PROCS, BPF_MAP_TYPE_LRU_PERCPU_HASH),
            shape::<u32, u32>(maps::FILTER, BPF_MAP_TYPE_ARRAY),
            shape::<u32, u8>(maps::TRACKED, BPF_MAP_TYPE_HASH),
            shape::<u32, PinBalance>(maps::PIN_BALANCE, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, u64>(maps::TABLE_INSERTS, BPF_MAP_TYPE_PERCPU_ARRAY),
            shape::<u32, u64>(maps::HEALTH, BPF_MAP_TYPE_PERCPU_ARRAY),
            // A ring buffer has neither key nor value.
            shape::<(), ()>(maps::EVENTS, BPF_MAP_TYPE_RINGBUF),
            shape::<u32, u32>(maps::EVENT_FILTER, BPF_MAP_TYPE_ARRAY),
            shape::<u32, u64>(maps::SETTINGS, BPF_MAP_TYPE_ARRAY),
            shape::<CallerKey, CallerStats>(maps::CALLERS, BPF_MAP_TYPE_LRU_PERCPU_HASH),
            shape::<u64, PinRecord>(maps::PIN_LIFETIMES, BPF_MAP_TYPE_HASH),
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
        }
    }
}
