//! Cgroup ids back to paths: a walk of the cgroup2 hierarchy, cached.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::Instant,
};

use super::{CgroupIdentity, IRQ_CGROUP};

/// Names cgroup ids by walking the cgroup2 hierarchy, with a cache.
///
/// Ids are not reused (on 64-bit kernels a kernfs id carries a
/// generation in its high bits), so a cached name stays right, and an id
/// the hierarchy no longer holds will never reappear: that marker is
/// cached too.
#[derive(Debug)]
pub struct CgroupNames {
    /// The cgroup2 mount whose hierarchy is walked.
    root: PathBuf,
    /// Every id named so far.
    cache: HashMap<u64, CgroupIdentity>,
    /// When the hierarchy was last walked.
    last_walk: Option<Instant>,
    /// How many walks so far.
    walks: u64,
}

impl CgroupNames {
    /// Names ids under `root` (normally [`cgroup2_root`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupNames {
            root: root.into(),
            cache: HashMap::new(),
            last_walk: None,
            walks: 0,
        }
    }

    /// The identity of cgroup `id`: "[irq]" for [`IRQ_CGROUP`]; else from
    /// the cache, walking the hierarchy once first if `id` is not there
    /// (cgroups are created after start). An id the walk does not find is
    /// a cgroup removed since it was counted: "[removed cgroup <id>]". If
    /// the root cannot be read at all the walk proves nothing, so the id
    /// is shown as "[cgroup <id>]" and looked for again next time.
    pub fn name(&mut self, id: u64) -> CgroupIdentity {
        self.name_all([id]).remove(&id).unwrap_or_default()
    }

    /// Names many ids with at most one walk, however many are unknown.
    pub fn name_all(
        &mut self,
        ids: impl IntoIterator<Item = u64>,
    ) -> BTreeMap<u64, CgroupIdentity> {
        let ids: BTreeSet<u64> = ids.into_iter().collect();
        let unknown = ids
            .iter()
            .any(|id| *id != IRQ_CGROUP && !self.cache.contains_key(id));
        let walked = unknown && self.walk();
        ids.into_iter()
            .map(|id| (id, self.settled(id, walked)))
            .collect()
    }

    /// How many times the hierarchy has been walked.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// When the hierarchy was last walked (None before the first walk).
    pub fn last_walk(&self) -> Option<Instant> {
        self.last_walk
    }

    /// The name of `id` once any walk is done; `walked` says whether a
    /// walk read the root, so that a miss means the cgroup is gone.
    fn settled(&mut self, id: u64, walked: bool) -> CgroupIdentity {
        if id == IRQ_CGROUP {
            return CgroupIdentity::irq();
        }
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        if !walked {
            return CgroupIdentity::marker(format!("[cgroup {id}]"));
        }
        let removed = CgroupIdentity::marker(format!("[removed cgroup {id}]"));
        self.cache.insert(id, removed.clone());
        removed
    }

    /// Walks the hierarchy, caching every directory's inode number with
    /// its path; false if the root itself cannot be read. By hand with
    /// std::fs: a loop over a stack is all it takes, and it must neither
    /// follow symlinks nor leave the cgroup2 filesystem (the hybrid layout
    /// mounts cgroup v1 hierarchies below a tmpfs, whose inode numbers
    /// would collide with cgroup ids). Unreadable subdirectories are
    /// skipped: the rest is still worth naming.
    fn walk(&mut self) -> bool {
        self.walks += 1;
        self.last_walk = Some(Instant::now());
        let root = match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => {
                log::warn!(
                    "cannot name cgroups: {} is not a directory",
                    self.root.display()
                );
                return false;
            }
            Err(e) => {
                log::warn!("cannot name cgroups: {}: {e}", self.root.display());
                return false;
            }
        };
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if rel.is_empty() => {
                    log::warn!("cannot name cgroups: {}: {e}", self.root.display());
                    return false;
                }
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                // DirEntry::file_type does not follow symlinks.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.dev() != root.dev() {
                    continue;
                }
                let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
                self.cache
                    .entry(meta.ino())
                    .or_insert_with(|| CgroupIdentity::of_path(&child));
                stack.push((entry.path(), child));
            }
        }
        self.cache
            .entry(root.ino())
            .or_insert_with(|| CgroupIdentity::of_path("/"));
        true
    }
}
