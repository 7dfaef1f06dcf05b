//! Cgroup v2 names: which cgroup an id is, and which container, pod or
//! systemd unit its path shows, for the per-cgroup rows and the
//! `--cgroup` filter.
//!
//! The id the kernel programs record (`bpf_get_current_cgroup_id()`) is
//! the cgroup's kernfs node id, which is the inode number of its directory
//! under the cgroup2 mount (the root cgroup is 1). [`CgroupNames`] turns
//! ids back into paths by walking that hierarchy; [`CgroupIdentity`] reads
//! a path; [`CgroupFilter`] opens the directory `--cgroup` names, whose
//! descriptor the kernel's cgroup filter takes.
//!
//! Identities come from path conventions only: the container scopes and
//! directories of docker, containerd (CRI, nerdctl), CRI-O and podman, and
//! kubelet's kubepods tree, each taken from the source that creates it
//! (cited where it is matched). A component that merely looks like a
//! container id outside these conventions is not called one: a wrong name
//! in a table is worse than a path. Not recognized, because no source
//! fixes their shape: plain containerd's default `/<namespace>/<id>`, a
//! `--cgroup-parent` other than docker's default, and podman pods.
//!
//! One file per concern: `identity` reads paths (the runtimes'
//! conventions), `names` walks the hierarchy to name ids, `filter` opens
//! the `--cgroup` directory.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

mod filter;
mod identity;
mod names;
#[cfg(test)]
mod tests;

pub use filter::{CgroupError, CgroupFilter};
pub use identity::{CgroupIdentity, QosClass, Runtime};
pub use names::CgroupNames;
/// The key pinwatch uses for releases made in interrupt context (no cgroup).
pub use pin_common::IRQ_CGROUP;

/// Where cgroup v2 is mounted on hosts with the unified layout (and where
/// pinwatch looks when /proc/self/mountinfo lists no cgroup2 mount).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Where the unified (cgroup v2) hierarchy is mounted: the first cgroup2
/// mount in /proc/self/mountinfo (/sys/fs/cgroup on hosts with the unified
/// layout, /sys/fs/cgroup/unified on hybrid ones, where the ids the probes
/// record are still this hierarchy's), else [`CGROUP2_ROOT`]. Read once.
pub fn cgroup2_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .ok()
            .and_then(|mounts| {
                mounts
                    .into_iter()
                    .find(|m| m.fs_type == "cgroup2")
                    .map(|m| m.mount_point)
            })
            .unwrap_or_else(|| PathBuf::from(CGROUP2_ROOT))
    })
}

/// Names `ids` under [`cgroup2_root`], with at most one walk per call,
/// through one [`CgroupNames`] for the whole process: every view that
/// names cgroups then shares one cache, and the hierarchy is walked only
/// for ids nobody has named yet.
pub fn resolve(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, CgroupIdentity> {
    static NAMES: OnceLock<Mutex<CgroupNames>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(CgroupNames::new(cgroup2_root())));
    // Entries go into the cache whole, so a panic elsewhere while the lock
    // was held cannot have left it half-written: a poisoned lock is usable.
    names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .name_all(ids)
}
