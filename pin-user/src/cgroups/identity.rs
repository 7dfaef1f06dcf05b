//! What a cgroup's path says: the container scopes and directories of the
//! runtimes, kubelet's kubepods tree and systemd units, each from the
//! source that fixes it.

use serde::{Deserialize, Serialize};

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
    pub(super) fn irq() -> CgroupIdentity {
        CgroupIdentity {
            path: "[irq]".to_string(),
            ..CgroupIdentity::default()
        }
    }

    /// A path-only identity for a marker such as "[removed cgroup 7]".
    pub(super) fn marker(path: String) -> CgroupIdentity {
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
