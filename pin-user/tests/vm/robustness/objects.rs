//! What pinwatch leaves in the kernel: the BPF object ids (programs,
//! links, maps) the kernel holds, compared with a baseline taken before
//! pinwatch started.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

/// BPF object ids the kernel holds: programs, links, maps.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct BpfObjects {
    programs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

impl BpfObjects {
    /// What the kernel holds now.
    pub(crate) fn now() -> Self {
        Self {
            // Objects can vanish while being listed: skip those errors.
            programs: aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .collect(),
            links: aya::programs::loaded_links()
                .filter_map(Result::ok)
                .map(|l| l.id())
                .collect(),
            maps: aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|m| m.id())
                .collect(),
        }
    }

    /// Objects in `self` that `baseline` lacks: (programs, links, maps).
    pub(crate) fn beyond(&self, baseline: &Self) -> (usize, usize, usize) {
        (
            self.programs.difference(&baseline.programs).count(),
            self.links.difference(&baseline.links).count(),
            self.maps.difference(&baseline.maps).count(),
        )
    }
}

/// Waits until the kernel has released everything beyond `baseline` (it
/// frees programs after an RCU grace period); returns what is left.
pub(crate) fn settle(baseline: &BpfObjects) -> (usize, usize, usize) {
    let started = Instant::now();
    loop {
        let left = BpfObjects::now().beyond(baseline);
        if left == (0, 0, 0) || started.elapsed() > Duration::from_secs(15) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
