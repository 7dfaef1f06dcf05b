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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Component, Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
    time::Instant,
};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

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
/// The key pinwatch uses for releases made in interrupt context (no cgroup).
pub const IRQ_CGROUP: u64 = 0;

/// `statfs().f_type` of a cgroup2 filesystem (`CGROUP2_SUPER_MAGIC`,
/// include/uapi/linux/magic.h). Our own constant because libc's is typed
/// `c_long` or `c_uint` depending on the target.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// Which runtime's naming convention a container id was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Docker (moby).
    Docker,
    /// containerd: its CRI plugin, or nerdctl.
    Containerd,
    /// CRI-O.
    Crio,
    /// Podman (libpod).
    Podman,
}

impl Runtime {
    /// The lowercase name, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
        }
    }
}

/// A Kubernetes pod's QoS class, from the kubepods path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Limits equal requests: the pod sits directly under kubepods.
    Guaranteed,
    /// Under kubepods' `burstable` child.
    Burstable,
    /// Under kubepods' `besteffort` child.
    BestEffort,
}

/// The systemd scope prefixes under which a runtime puts a container: the
/// OCI runtime (runc, crun) turns a `slice:prefix:id` cgroupsPath into
/// `prefix-id.scope` (runc libcontainer/specconv/spec_linux.go parses the
/// triple; opencontainers/cgroups systemd/common.go `getUnitName` names
/// the scope). Where each prefix comes from:
/// - `docker`: moby daemon/oci_linux.go `WithCgroups` (`scopePrefix`).
/// - `cri-containerd`: containerd internal/cri/server/helpers.go
///   `getCgroupsPath`.
/// - `nerdctl`: nerdctl pkg/cmd/container/run_cgroup_linux.go
///   `generateCgroupPath` (nerdctl runs on containerd).
/// - `crio`: cri-o internal/config/cgmgr/systemd_linux.go
///   `ContainerCgroupPath` (`CrioPrefix`, cgmgr_linux.go).
/// - `libpod`: podman libpod/container_internal_linux.go
///   `getOCICgroupPath`.
///
/// The monitors beside containers, `crio-conmon-<id>.scope` (cri-o
/// systemd_linux.go `MoveConmonToCgroup`) and `libpod-conmon-<id>.scope`
/// (podman libpod/oci_conmon_linux.go), are not containers; they fall out
/// of the match by themselves, since `conmon-<id>` is not a container id.
const CONTAINER_SCOPES: [(&str, Runtime); 5] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("nerdctl-", Runtime::Containerd),
    ("crio-", Runtime::Crio),
    ("libpod-", Runtime::Podman),
];

/// The cgroupfs-driver forms (no `.scope`) that carry a prefix:
/// `<parent>/crio-<id>` (cri-o internal/config/cgmgr/cgroupfs_linux.go
/// `ContainerCgroupPath`), `<parent>/libpod-<id>` and, with
/// `--cgroups=split`, `<own cgroup>/libpod-payload-<id>` (podman
/// libpod/container_internal_linux.go `getOCICgroupPath`).
const CONTAINER_DIRS: [(&str, Runtime); 3] = [
    ("crio-", Runtime::Crio),
    ("libpod-payload-", Runtime::Podman),
    ("libpod-", Runtime::Podman),
];

/// What a cgroup's path says about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupIdentity {
    /// Path relative to the cgroup2 root, starting with '/' ("/" is the
    /// root cgroup); "[irq]" for [`IRQ_CGROUP`]; a bracketed marker for an
    /// id no longer in the hierarchy (see [`CgroupNames::name`]).
    pub path: String,
    /// Full container id (hex, as the runtime named it) where the path
    /// shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The runtime whose convention matched (none for a bare id under a
    /// cgroupfs-driver pod, which containerd and docker name alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Pod UID (with dashes, the form `kubectl get pod -o
    /// jsonpath={.metadata.uid}` prints) where the path is under kubepods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's QoS class where the path is under kubepods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<QosClass>,
    /// The systemd unit (the last `*.service` or `*.scope` component) where
    /// there is one and it is not a container scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl CgroupIdentity {
    /// Reads the identity from a path relative to the cgroup2 root. Pure.
    /// The path is kept as given, so a marker such as "[irq]" stays one
    /// (its one component matches no convention).
    pub fn of_path(path: &str) -> CgroupIdentity {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut identity = CgroupIdentity {
            path: path.to_string(),
            ..CgroupIdentity::default()
        };
        // The innermost match wins: a kind node is itself a docker
        // container holding the pods, so a path can show two containers,
        // and a pod below a container is not that container's.
        let mut container_at = None;
        let mut after_cgroupfs_pod = false;
        for (i, comp) in comps.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| comps[p]);
            if let Some((runtime, id)) = container_component(prev, comp, after_cgroupfs_pod) {
                identity.container = Some(id.to_string());
                identity.runtime = runtime;
                container_at = Some(i);
            }
            // A name cannot be both: a cgroupfs pod has no ".slice".
            let cgroupfs = cgroupfs_pod(&comps[..=i]);
            after_cgroupfs_pod = cgroupfs.is_some();
            if let Some((qos, uid)) = systemd_pod(comp).or(cgroupfs) {
                identity.qos = Some(qos);
                identity.pod = Some(uid);
                identity.container = None;
                identity.runtime = None;
            }
        }
        let unit_at = comps
            .iter()
            .rposition(|c| c.ends_with(".service") || c.ends_with(".scope"));
        if let Some(at) = unit_at
            && Some(at) != container_at
        {
            identity.unit = Some(comps[at].to_string());
        }
        identity
    }

    /// A short label for tables: "pod 1a2b3c4d/0123456789ab" (the pod
    /// UID's first 8 characters, the container id's first 12, docker's
    /// short form), "docker 0123456789ab" for a container outside a pod,
    /// "pod 1a2b3c4d" for a pod's own cgroup; else the unit, else the path.
    pub fn short(&self) -> String {
        let pod = self.pod.as_deref().map(|p| p.get(..8).unwrap_or(p));
        let container = self.container.as_deref().map(|c| c.get(..12).unwrap_or(c));
        match (pod, container) {
            (Some(pod), Some(container)) => format!("pod {pod}/{container}"),
            (Some(pod), None) => format!("pod {pod}"),
            (None, Some(container)) => match self.runtime {
                Some(runtime) => format!("{} {container}", runtime.name()),
                None => container.to_string(),
            },
            (None, None) => self.unit.clone().unwrap_or_else(|| self.path.clone()),
        }
    }

    /// The identity of [`IRQ_CGROUP`].
    fn irq() -> CgroupIdentity {
        CgroupIdentity {
            path: "[irq]".to_string(),
            ..CgroupIdentity::default()
        }
    }

    /// A path-only identity for a marker such as "[removed cgroup 7]".
    fn marker(path: String) -> CgroupIdentity {
        CgroupIdentity {
            path,
            ..CgroupIdentity::default()
        }
    }
}

/// Whether `s` is a container id as docker, containerd's CRI, cri-o and
/// podman generate them: 32 random bytes in lowercase hex.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container `comp` names, given the component before it and whether
/// that one is a cgroupfs-driver pod.
fn container_component<'a>(
    prev: Option<&str>,
    comp: &'a str,
    after_cgroupfs_pod: bool,
) -> Option<(Option<Runtime>, &'a str)> {
    if let Some(stem) = comp.strip_suffix(".scope") {
        return CONTAINER_SCOPES.iter().find_map(|(prefix, runtime)| {
            let id = stem.strip_prefix(prefix)?;
            is_container_id(id).then_some((Some(*runtime), id))
        });
    }
    if let Some(found) = CONTAINER_DIRS.iter().find_map(|(prefix, runtime)| {
        let id = comp.strip_prefix(prefix)?;
        is_container_id(id).then_some((Some(*runtime), id))
    }) {
        return Some(found);
    }
    if !is_container_id(comp) {
        return None;
    }
    if prev == Some("docker") {
        // Docker's cgroupfs driver: `/docker/<id>` (moby daemon/oci_linux.go
        // `WithCgroups`, default parent "/docker").
        Some((Some(Runtime::Docker), comp))
    } else if after_cgroupfs_pod {
        // A CRI runtime on the cgroupfs driver joins the pod cgroup and the
        // bare id (containerd helpers.go `getCgroupsPath`; cri-dockerd via
        // docker's `filepath.Join(parent, id)`): which runtime is not shown.
        Some((None, comp))
    } else {
        None
    }
}

/// A pod UID as kubelet names pod cgroups ("pod" + UID, kubernetes
/// pkg/kubelet/cm/pod_container_manager_linux.go `GetPodContainerName`):
/// an API pod's UUID (8-4-4-4-12 hex), or a static pod's md5 hex
/// (pkg/kubelet/config/common.go): 32 hex digits either way.
fn pod_uid(name: &str) -> Option<String> {
    let uid = name.strip_prefix("pod")?;
    let digits = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    let well_formed = uid
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
        && !uid.starts_with('-')
        && !uid.ends_with('-');
    (digits == 32 && well_formed).then(|| uid.to_string())
}

/// The QoS class and pod of a pod cgroup's name parts after "kubepods":
/// burstable and besteffort pods sit under a child of that name,
/// guaranteed pods directly under kubepods (kubernetes
/// pkg/kubelet/cm/qos_container_manager_linux.go `Start`).
fn qos_and_pod(rest: &[&str]) -> Option<(QosClass, String)> {
    match rest {
        [pod] => Some((QosClass::Guaranteed, pod_uid(pod)?)),
        ["burstable", pod] => Some((QosClass::Burstable, pod_uid(pod)?)),
        ["besteffort", pod] => Some((QosClass::BestEffort, pod_uid(pod)?)),
        _ => None,
    }
}

/// A pod slice of kubelet's systemd driver, e.g.
/// `kubepods-burstable-pod1a2b_..._.slice`: kubelet writes each name part
/// with '-' escaped as '_' and joins the parts with '-', and reads them
/// back the same way (kubernetes pkg/kubelet/cm/cgroup_manager_linux.go
/// `ToSystemd`, `ParseSystemdToCgroupName`). "kubepods" may be preceded by
/// a cgroup root of its own, e.g. kind's `kubelet-kubepods-...`.
fn systemd_pod(comp: &str) -> Option<(QosClass, String)> {
    let parts: Vec<String> = comp
        .strip_suffix(".slice")?
        .split('-')
        .map(|part| part.replace('_', "-"))
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let at = parts.iter().position(|p| *p == "kubepods")?;
    qos_and_pod(&parts[at + 1..])
}

/// A pod cgroup of kubelet's cgroupfs driver, `.../kubepods[/burstable|
/// /besteffort]/pod<UID>`, ending at the last of `comps` (kubernetes
/// cgroup_manager_linux.go `ToCgroupfs`). kubepods may lie under another
/// cgroup (kind's `--cgroup-root=/kubelet`), so any component may be it.
fn cgroupfs_pod(comps: &[&str]) -> Option<(QosClass, String)> {
    let at = comps.iter().rposition(|c| *c == "kubepods")?;
    qos_and_pod(&comps[at + 1..])
}

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

/// Errors opening a cgroup for the kernel filter.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path climbs out of the hierarchy with "..".
    #[error("cgroup path {path} may not contain \"..\" (give a path under {})", root.display())]
    Escapes {
        /// The path as given.
        path: String,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// Nothing is at the path.
    #[error(
        "cgroup {} does not exist (see {} for the hierarchy, or systemd-cgls)",
        path.display(),
        root.display()
    )]
    NotFound {
        /// The directory looked for.
        path: PathBuf,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// The path is a file, e.g. a cgroup's control file.
    #[error(
        "{} is not a cgroup (a cgroup is a directory under {})",
        path.display(),
        root.display()
    )]
    NotADirectory {
        /// The path opened.
        path: PathBuf,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// The directory is not on a cgroup2 filesystem.
    #[error(
        "{} is not a cgroup v2 directory (pinwatch needs the unified hierarchy mounted at {})",
        path.display(),
        root.display()
    )]
    NotCgroup2 {
        /// The directory opened.
        path: PathBuf,
        /// Where pinwatch expected the cgroup2 mount.
        root: PathBuf,
    },
    /// Opening or examining the directory failed otherwise (permissions).
    #[error("cannot open cgroup {}: {source}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A cgroup chosen on the command line (`--cgroup PATH`), opened for the
/// kernel filter.
#[derive(Debug)]
pub struct CgroupFilter {
    /// The directory, open (its fd goes into the kernel's cgroup array).
    pub dir: File,
    /// Its id (the directory's inode number).
    pub id: u64,
    /// Its path relative to the cgroup2 root.
    pub path: String,
}

impl CgroupFilter {
    /// Opens `path`: as given if it lies under `root`, the cgroup2 mount;
    /// otherwise relative to `root`, with or without a leading '/' (so
    /// "/system.slice" and "system.slice" both mean the same cgroup, the
    /// form `/proc/PID/cgroup` prints). Checks that it is a directory on a
    /// cgroup2 filesystem: an id from any other directory would silently
    /// match nothing in the kernel.
    pub fn open(path: &str, root: &Path) -> Result<CgroupFilter, CgroupError> {
        if Path::new(path)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(CgroupError::Escapes {
                path: path.to_string(),
                root: root.to_path_buf(),
            });
        }
        let full = if Path::new(path).starts_with(root) {
            PathBuf::from(path)
        } else {
            root.join(path.trim_start_matches('/'))
        };
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => CgroupError::NotFound {
                    path: full.clone(),
                    root: root.to_path_buf(),
                },
                io::ErrorKind::NotADirectory => CgroupError::NotADirectory {
                    path: full.clone(),
                    root: root.to_path_buf(),
                },
                _ => CgroupError::Open {
                    path: full.clone(),
                    source: e,
                },
            })?;
        let open_error = |source| CgroupError::Open {
            path: full.clone(),
            source,
        };
        if !is_cgroup2(&dir).map_err(open_error)? {
            return Err(CgroupError::NotCgroup2 {
                path: full,
                root: root.to_path_buf(),
            });
        }
        let id = dir.metadata().map_err(open_error)?.ino();
        let rel = full.strip_prefix(root).unwrap_or(&full);
        let path = format!("/{}", rel.to_string_lossy().trim_matches('/'));
        Ok(CgroupFilter { dir, id, path })
    }
}

/// Whether the open file is on a cgroup2 filesystem.
fn is_cgroup2(file: &File) -> io::Result<bool> {
    // SAFETY: `statfs` is a plain C struct, valid all-zero; fstatfs
    // only writes into it, and `file` keeps the descriptor open.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::fstatfs(file.as_raw_fd(), &mut st), st)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(st.f_type).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC))
}
