use std::{fs, os::unix::fs::MetadataExt, path::Path};

use super::*;

// Ids and UIDs of the shape the runtimes and the API server generate.
const C1: &str = "f73c59d64e3a465424ac610dec1cfeb860d7fff2ff4140dc36539286e8a57ec3";
const C2: &str = "709418277cb89da5a8dae06f98cb7f5490e6e6c14d021ccc65bc1c45c1e55890";
const UID: &str = "c6121a9a-f86b-42d7-bfab-087841ccd0f7";
/// `UID` as kubelet's systemd driver writes it.
const UID_: &str = "c6121a9a_f86b_42d7_bfab_087841ccd0f7";

/// Checks every field but the path.
fn check(
    path: &str,
    container: Option<&str>,
    runtime: Option<Runtime>,
    pod: Option<(&str, QosClass)>,
    unit: Option<&str>,
) {
    let got = CgroupIdentity::of_path(path);
    assert_eq!(got.container.as_deref(), container, "container of {path}");
    assert_eq!(got.runtime, runtime, "runtime of {path}");
    assert_eq!(got.pod.as_deref(), pod.map(|p| p.0), "pod of {path}");
    assert_eq!(got.qos, pod.map(|p| p.1), "qos of {path}");
    assert_eq!(got.unit.as_deref(), unit, "unit of {path}");
}

#[test]
fn systemd_units_have_a_unit_and_no_container() {
    check(
        "/system.slice/sshd.service",
        None,
        None,
        None,
        Some("sshd.service"),
    );
    let session = "/user.slice/user-1000.slice/session-3.scope";
    check(session, None, None, None, Some("session-3.scope"));
    check("/user.slice/user-1000.slice", None, None, None, None);
    check("/", None, None, None, None);
    // The last unit counts: a service inside a user's manager.
    let app = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope";
    check(app, None, None, None, Some("app-firefox.scope"));
}

#[test]
fn docker_with_either_driver() {
    let systemd = format!("/system.slice/docker-{C1}.scope");
    check(&systemd, Some(C1), Some(Runtime::Docker), None, None);
    check(
        &format!("/docker/{C1}"),
        Some(C1),
        Some(Runtime::Docker),
        None,
        None,
    );
    // Rootless docker, under the user's manager.
    let rootless =
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{C1}.scope");
    check(&rootless, Some(C1), Some(Runtime::Docker), None, None);
    // Docker in docker: the inner container is the one.
    let nested = format!("/docker/{C1}/docker/{C2}");
    check(&nested, Some(C2), Some(Runtime::Docker), None, None);
}

#[test]
fn containerd_and_nerdctl_scopes() {
    let cri = format!("/system.slice/cri-containerd-{C1}.scope");
    check(&cri, Some(C1), Some(Runtime::Containerd), None, None);
    let nerdctl = format!("/system.slice/nerdctl-{C1}.scope");
    check(&nerdctl, Some(C1), Some(Runtime::Containerd), None, None);
}

#[test]
fn crio_containers_but_not_conmon() {
    let scope = format!("/system.slice/crio-{C1}.scope");
    check(&scope, Some(C1), Some(Runtime::Crio), None, None);
    let conmon = format!("crio-conmon-{C1}.scope");
    check(
        &format!("/system.slice/{conmon}"),
        None,
        None,
        None,
        Some(&conmon),
    );
    // cgroupfs driver: no ".scope".
    let pod = Some((UID, QosClass::BestEffort));
    let dir = format!("/kubepods/besteffort/pod{UID}/crio-{C1}");
    check(&dir, Some(C1), Some(Runtime::Crio), pod, None);
    check(
        &format!("/kubepods/besteffort/pod{UID}/crio-conmon-{C1}"),
        None,
        None,
        pod,
        None,
    );
}

#[test]
fn podman_containers_but_not_conmon() {
    let scope = format!("/machine.slice/libpod-{C1}.scope");
    check(&scope, Some(C1), Some(Runtime::Podman), None, None);
    // A cgroup below the container's (podman's "container" child) is
    // still the container's.
    check(
        &format!("{scope}/container"),
        Some(C1),
        Some(Runtime::Podman),
        None,
        None,
    );
    let conmon = format!("libpod-conmon-{C1}.scope");
    check(
        &format!("/machine.slice/{conmon}"),
        None,
        None,
        None,
        Some(&conmon),
    );
    check(
        &format!("/libpod_parent/libpod-{C1}"),
        Some(C1),
        Some(Runtime::Podman),
        None,
        None,
    );
    // --cgroups=split: the payload below podman's own cgroup, here a
    // login session, which is still the unit it runs in.
    let split = format!("/user.slice/user-1000.slice/session-3.scope/libpod-payload-{C1}");
    let session = Some("session-3.scope");
    check(&split, Some(C1), Some(Runtime::Podman), None, session);
}

#[test]
fn kubepods_with_the_systemd_driver() {
    let burstable = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/\
         cri-containerd-{C1}.scope"
    );
    let pod = Some((UID, QosClass::Burstable));
    check(&burstable, Some(C1), Some(Runtime::Containerd), pod, None);
    let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{C1}.scope");
    let pod = Some((UID, QosClass::Guaranteed));
    check(&guaranteed, Some(C1), Some(Runtime::Crio), pod, None);
    let besteffort = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/\
         docker-{C1}.scope"
    );
    let pod = Some((UID, QosClass::BestEffort));
    check(&besteffort, Some(C1), Some(Runtime::Docker), pod, None);
    // The pod's own cgroup: a pod, no container.
    let pod_slice = "/kubepods.slice/kubepods-besteffort.slice";
    let pod_slice = format!("{pod_slice}/kubepods-besteffort-pod{UID_}.slice");
    check(&pod_slice, None, None, pod, None);
    // The QoS tiers themselves hold no pod.
    check(
        "/kubepods.slice/kubepods-burstable.slice",
        None,
        None,
        None,
        None,
    );
    check("/kubepods.slice", None, None, None, None);
}

#[test]
fn kubepods_with_the_cgroupfs_driver() {
    // A bare id under a pod is a container, of a runtime the path does not show.
    let pod = Some((UID, QosClass::Burstable));
    check(
        &format!("/kubepods/burstable/pod{UID}/{C1}"),
        Some(C1),
        None,
        pod,
        None,
    );
    let pod = Some((UID, QosClass::Guaranteed));
    check(
        &format!("/kubepods/pod{UID}/{C1}"),
        Some(C1),
        None,
        pod,
        None,
    );
    let pod = Some((UID, QosClass::BestEffort));
    check(
        &format!("/kubepods/besteffort/pod{UID}/{C1}"),
        Some(C1),
        None,
        pod,
        None,
    );
    check(
        &format!("/kubepods/besteffort/pod{UID}"),
        None,
        None,
        pod,
        None,
    );
    // A static pod's UID is an md5 in hex.
    let md5 = "3b2ad2a0b5b5fd9a4c1d0b2ad3fd8c1e";
    let pod = Some((md5, QosClass::Guaranteed));
    check(
        &format!("/kubepods/pod{md5}/{C1}"),
        Some(C1),
        None,
        pod,
        None,
    );
}

#[test]
fn kubepods_nested_under_another_cgroup() {
    // kind: the node is a docker container; its kubelet's cgroup root is
    // /kubelet. The pod's container is the one named, not the node.
    let kind = format!(
        "/system.slice/docker-{C1}.scope/kubelet.slice/kubelet-kubepods.slice/\
         kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/\
         cri-containerd-{C2}.scope"
    );
    let pod = Some((UID, QosClass::BestEffort));
    check(&kind, Some(C2), Some(Runtime::Containerd), pod, None);
    let cgroupfs = format!("/docker/{C1}/kubelet/kubepods/burstable/pod{UID}/{C2}");
    check(
        &cgroupfs,
        Some(C2),
        None,
        Some((UID, QosClass::Burstable)),
        None,
    );
    // The pod's own cgroup is not the node container.
    let kind_pod = kind.rsplit_once('/').unwrap().0;
    check(kind_pod, None, None, pod, None);
    // The node's own cgroups are the node container's.
    let node = format!("/system.slice/docker-{C1}.scope/system.slice/containerd.service");
    check(
        &node,
        Some(C1),
        Some(Runtime::Docker),
        None,
        Some("containerd.service"),
    );
}

#[test]
fn what_merely_looks_like_a_container_is_not_one() {
    // Bare hex outside docker's parent or a cgroupfs pod.
    check(&format!("/system.slice/{C1}"), None, None, None, None);
    check(&format!("/default/{C1}"), None, None, None, None);
    // Bare hex under a systemd-driver pod: that driver always makes scopes.
    let slice = format!("/kubepods.slice/kubepods-pod{UID_}.slice/{C1}");
    check(&slice, None, None, Some((UID, QosClass::Guaranteed)), None);
    // Not exactly 64 lowercase hex digits.
    check(&format!("/docker/{}", &C1[..63]), None, None, None, None);
    check(&format!("/docker/{C1}0"), None, None, None, None);
    check(
        &format!("/docker/{}", C1.to_uppercase()),
        None,
        None,
        None,
        None,
    );
    let short = format!("docker-{}.scope", &C1[..12]);
    check(
        &format!("/system.slice/{short}"),
        None,
        None,
        None,
        Some(&short),
    );
    // A prefix no runtime uses, or a unit that is not a scope.
    let other = format!("runc-{C1}.scope");
    check(
        &format!("/system.slice/{other}"),
        None,
        None,
        None,
        Some(&other),
    );
    let service = format!("docker-{C1}.service");
    check(
        &format!("/system.slice/{service}"),
        None,
        None,
        None,
        Some(&service),
    );
    // Not pods: no UID, a UID of the wrong length, a QoS tier kubelet
    // never makes, "kubepods" not a part of its own.
    check(
        &format!("/kubepods/burstable/podnot-a-uid/{C1}"),
        None,
        None,
        None,
        None,
    );
    check(
        &format!("/kubepods/pod{}/{C1}", &UID[..35]),
        None,
        None,
        None,
        None,
    );
    check(
        &format!("/kubepods/guaranteed/pod{UID}/{C1}"),
        None,
        None,
        None,
        None,
    );
    check(
        "/kubepods.slice/kubepods-podman.slice",
        None,
        None,
        None,
        None,
    );
    check(
        &format!("/mykubepods/pod{UID}/{C1}"),
        None,
        None,
        None,
        None,
    );
}

#[test]
fn paths_are_kept_as_given() {
    let id = CgroupIdentity::of_path("/system.slice/sshd.service");
    assert_eq!(id.path, "/system.slice/sshd.service");
    assert_eq!(CgroupIdentity::of_path("[irq]"), CgroupIdentity::irq());
}

#[test]
fn resolve_shares_one_cache_for_the_process() {
    let named = resolve([IRQ_CGROUP]);
    assert_eq!(named[&IRQ_CGROUP], CgroupIdentity::irq());
}

#[test]
fn short_labels() {
    let short = |p: &str| CgroupIdentity::of_path(p).short();
    let in_pod = format!("/kubepods/burstable/pod{UID}/{C1}");
    assert_eq!(short(&in_pod), "pod c6121a9a/f73c59d64e3a");
    assert_eq!(
        short(&format!("/system.slice/docker-{C1}.scope")),
        "docker f73c59d64e3a"
    );
    assert_eq!(short(&format!("/kubepods/pod{UID}")), "pod c6121a9a");
    assert_eq!(short("/system.slice/sshd.service"), "sshd.service");
    assert_eq!(short("/user.slice"), "/user.slice");
    assert_eq!(CgroupIdentity::irq().short(), "[irq]");
    // Hand-made identities with odd lengths do not panic.
    let odd = CgroupIdentity {
        container: Some("é".repeat(7)),
        pod: Some("abcdefgé".to_string()),
        ..CgroupIdentity::default()
    };
    assert!(odd.short().starts_with("pod "));
}

#[test]
fn serializes_lowercase_and_skips_what_is_absent() {
    let id = CgroupIdentity::of_path(&format!("/kubepods/besteffort/pod{UID}/crio-{C1}"));
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["runtime"], "crio");
    assert_eq!(json["qos"], "besteffort");
    assert!(json.get("unit").is_none());
    let back: CgroupIdentity = serde_json::from_value(json).unwrap();
    assert_eq!(back, id);
    let unit = serde_json::to_value(CgroupIdentity::of_path("/a.service")).unwrap();
    assert_eq!(
        unit,
        serde_json::json!({"path": "/a.service", "unit": "a.service"})
    );
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

#[test]
fn names_ids_with_one_walk_per_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cg");
    let sshd = root.join("system.slice/sshd.service");
    let docker = root.join(format!("system.slice/docker-{C1}.scope"));
    fs::create_dir_all(&sshd).unwrap();
    fs::create_dir_all(&docker).unwrap();
    fs::write(root.join("cgroup.procs"), "").unwrap();
    // A symlink to a directory outside the hierarchy is not followed.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

    let mut names = CgroupNames::new(&root);
    assert_eq!(names.name(IRQ_CGROUP).path, "[irq]");
    assert_eq!((names.walks(), names.last_walk()), (0, None));

    let named = names.name_all([ino(&root), ino(&sshd), ino(&docker), IRQ_CGROUP]);
    assert_eq!(names.walks(), 1);
    assert!(names.last_walk().is_some());
    assert_eq!(named[&ino(&root)].path, "/");
    assert_eq!(named[&ino(&sshd)].path, "/system.slice/sshd.service");
    assert_eq!(named[&ino(&sshd)].unit.as_deref(), Some("sshd.service"));
    assert_eq!(named[&ino(&docker)].container.as_deref(), Some(C1));
    assert_eq!(named[&IRQ_CGROUP].path, "[irq]");

    // Known ids cost no walk.
    assert_eq!(names.name(ino(&sshd)).path, "/system.slice/sshd.service");
    assert_eq!(names.walks(), 1);

    // Cgroups made after the first walk: several unknown ids, one walk.
    let a = root.join("a.slice");
    let b = root.join("a.slice/b.scope");
    fs::create_dir_all(&b).unwrap();
    let named = names.name_all([ino(&a), ino(&b), ino(&sshd)]);
    assert_eq!(names.walks(), 2);
    assert_eq!(named[&ino(&a)].path, "/a.slice");
    assert_eq!(named[&ino(&b)].path, "/a.slice/b.scope");

    // Not in the hierarchy (the symlink was not followed): removed, and
    // remembered as such.
    let gone = ino(&outside);
    let expected = format!("[removed cgroup {gone}]");
    assert_eq!(names.name(gone).path, expected);
    assert_eq!(names.walks(), 3);
    assert_eq!(names.name(gone), CgroupIdentity::marker(expected));
    assert_eq!(names.walks(), 3);
}

#[test]
fn an_unreadable_root_names_nothing_and_remembers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut names = CgroupNames::new(tmp.path().join("missing"));
    assert_eq!(names.name(7).path, "[cgroup 7]");
    assert_eq!(names.name(7).path, "[cgroup 7]");
    assert_eq!(names.walks(), 2);
}

#[test]
fn filter_errors_name_the_path_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir(root.join("system.slice")).unwrap();
    fs::write(root.join("cgroup.procs"), "").unwrap();

    let err = CgroupFilter::open("/no.slice", root).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&root.join("no.slice").display().to_string()),
        "{text}"
    );
    assert!(text.contains("systemd-cgls"), "{text}");

    // A temporary directory is on tmpfs or a disk filesystem, not cgroup2:
    // given relative, absolute under the root, or as the root itself.
    let absolute = root.join("system.slice").display().to_string();
    for path in ["system.slice", "/system.slice", absolute.as_str(), "/"] {
        let err = CgroupFilter::open(path, root).unwrap_err();
        assert!(
            matches!(err, CgroupError::NotCgroup2 { .. }),
            "{path}: {err:?}"
        );
        assert!(
            err.to_string().contains("is not a cgroup v2 directory"),
            "{err}"
        );
    }

    let err = CgroupFilter::open("cgroup.procs", root).unwrap_err();
    assert!(matches!(err, CgroupError::NotADirectory { .. }), "{err:?}");
    let err = CgroupFilter::open("system.slice/../..", root).unwrap_err();
    assert!(matches!(err, CgroupError::Escapes { .. }), "{err:?}");
}

/// Where /proc/self/mounts says cgroup2 is mounted, and whether the last
/// mount on [`CGROUP2_ROOT`] (the one visible) is cgroup2.
fn cgroup2_mounts() -> (Vec<PathBuf>, bool) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let mut cgroup2 = Vec::new();
    let mut root_is_cgroup2 = false;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(dir), Some(fstype)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if *dir == CGROUP2_ROOT {
            root_is_cgroup2 = *fstype == "cgroup2";
        }
        if *fstype == "cgroup2" {
            cgroup2.push(PathBuf::from(dir));
        }
    }
    (cgroup2, root_is_cgroup2)
}

#[test]
fn filter_opens_what_this_machine_mounts() {
    let (mounts, root_is_cgroup2) = cgroup2_mounts();
    // The default root: a cgroup exactly when the mount table says so.
    let opened = CgroupFilter::open("/", Path::new(CGROUP2_ROOT));
    match &opened {
        Ok(filter) => assert!(root_is_cgroup2, "opened {filter:?} on a non-cgroup2 mount"),
        Err(err) => assert!(!root_is_cgroup2, "cgroup2 at {CGROUP2_ROOT}, yet {err}"),
    }
    if root_is_cgroup2 {
        let root_id = ino(Path::new(CGROUP2_ROOT));
        assert_eq!(resolve([root_id])[&root_id].path, "/");
    }
    // Every cgroup2 mount opens, its id is the directory's inode number,
    // and the walk names it "/".
    for mount in &mounts {
        let filter = CgroupFilter::open("/", mount).unwrap();
        assert_eq!((filter.id, filter.path.as_str()), (ino(mount), "/"));
        let by_absolute = CgroupFilter::open(&mount.display().to_string(), mount).unwrap();
        assert_eq!(by_absolute.id, filter.id);
        assert_eq!(CgroupNames::new(mount).name(filter.id).path, "/");
    }
    // No cgroup2 mount at all: nothing opens at the default root either.
    if mounts.is_empty() {
        assert!(opened.is_err());
    }
}
