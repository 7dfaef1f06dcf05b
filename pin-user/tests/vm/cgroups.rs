//! Per-cgroup counting: workloads started inside cgroups made the way a
//! systemd service, a docker container and a Kubernetes pod's container
//! are (same paths, same naming conventions) are counted exactly in their
//! cgroup's row and named as what they are; `--cgroup` counts that cgroup
//! and the ones below it, nothing else, and `/metrics` labels the rows.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use pinwatch::cgroups::{self, QosClass, Runtime, cgroup2_root};

use crate::harness::{get_metrics, harness, measure_in, pinwatch_in, sample};
use crate::processes::{start_pinwatch, wait_within};

/// A container id as docker and containerd write them: 64 hex digits.
const CONTAINER: &str = "5f0c6e1d2b3a49587a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
/// A pod UID, as the API server gives it.
const POD_UID: &str = "6b1d2c3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

/// Creates the cgroup `relative` (and its parents) under the cgroup2 root;
/// returns its directory and id (the directory's inode number).
fn make_cgroup(relative: &str) -> (PathBuf, u64) {
    let dir = cgroup2_root().join(relative);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let id = std::fs::metadata(&dir).expect("cgroup metadata").ino();
    (dir, id)
}

/// process_vm_writev of `calls` x `pages` pages in cgroup `dir`:
/// `calls` pin_user_pages_remote calls, `calls * pages` pages pinned and
/// released again by the same task.
fn writev_args(calls: u64, pages: u64) -> Vec<String> {
    ["process-vm-writev", "--calls"]
        .iter()
        .map(|s| s.to_string())
        .chain([calls.to_string(), "--pages".into(), pages.to_string()])
        .collect()
}

#[test]
fn cgroups_are_counted_exactly_and_named_by_their_runtime_conventions() {
    let h = harness();
    let pod_slice = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    let cases = [
        (
            "pinwatch-test.slice/pinwatch-app.service".to_string(),
            12,
            4,
        ),
        (format!("system.slice/docker-{CONTAINER}.scope"), 30, 8),
        (
            format!("{pod_slice}/cri-containerd-{CONTAINER}.scope"),
            20,
            2,
        ),
    ];
    for (relative, calls, pages) in &cases {
        let (dir, id) = make_cgroup(relative);
        let args = writev_args(*calls, *pages);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (report, delta) = measure_in(&h, Some(&dir), &args);
        let row = delta.cgroups.get(&id).copied().unwrap_or_default();
        let want = calls * pages;
        eprintln!(
            "OBSERVED kernel={} attach={:?} cgroup={relative}: calls={}/{calls} pages={}/{want} pinned={}/{want} released={}/{want} errors={}/0 (workload pid {})",
            h.release,
            h.mode,
            row.calls,
            row.pages,
            row.pinned,
            row.released,
            row.errors,
            report.pid
        );
        assert_eq!(
            (row.calls, row.pages, row.pinned, row.released, row.errors),
            (*calls, want, want, want, 0),
            "cgroup {relative}"
        );
        // Every call and release of the interval is in some cgroup's row.
        let variant_calls: u64 = delta.gup.iter().map(|g| g.calls).sum();
        let released: u64 = delta.release.iter().map(|r| r.pages).sum();
        let cgroup_calls: u64 = delta.cgroups.values().map(|c| c.calls).sum();
        let cgroup_released: u64 = delta.cgroups.values().map(|c| c.released).sum();
        assert_eq!((cgroup_calls, cgroup_released), (variant_calls, released));
    }

    let ids: Vec<u64> = cases
        .iter()
        .map(|(relative, ..)| make_cgroup(relative).1)
        .collect();
    let names = cgroups::resolve(ids.iter().copied());
    let service = &names[&ids[0]];
    assert_eq!(service.path, "/pinwatch-test.slice/pinwatch-app.service");
    assert_eq!(service.unit.as_deref(), Some("pinwatch-app.service"));
    assert_eq!((&service.container, &service.pod), (&None, &None));
    let docker = &names[&ids[1]];
    assert_eq!(docker.container.as_deref(), Some(CONTAINER));
    assert_eq!(docker.runtime, Some(Runtime::Docker));
    assert_eq!(docker.pod, None);
    let pod = &names[&ids[2]];
    assert_eq!(pod.container.as_deref(), Some(CONTAINER));
    assert_eq!(pod.runtime, Some(Runtime::Containerd));
    assert_eq!(pod.pod.as_deref(), Some(POD_UID));
    assert_eq!(pod.qos, Some(QosClass::Burstable));
}

/// Runs `args` (a workload) inside cgroup `dir` and waits for it.
fn run_in(dir: &Path, args: &[String]) {
    let status = pinwatch_in(Some(dir))
        .arg("workload")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("workload");
    assert!(status.success(), "workload {args:?} in {}", dir.display());
}

#[test]
fn the_cgroup_filter_counts_that_cgroup_and_below_only() {
    let h = harness();
    let attach = h.attach_arg();
    let (parent, parent_id) = make_cgroup("pinwatch-filter.slice");
    let (child, child_id) = make_cgroup("pinwatch-filter.slice/pinwatch-filter-child.scope");
    let (outside, _) = make_cgroup("pinwatch-outside.slice");
    let addr = "127.0.0.1:9437";
    let mut serve = start_pinwatch(
        &[
            "serve",
            "--listen",
            addr,
            "--attach",
            &attach,
            "--cgroup",
            "pinwatch-filter.slice",
        ],
        "serving metrics",
    );
    run_in(&parent, &writev_args(30, 8));
    run_in(&child, &writev_args(20, 4));
    run_in(&outside, &writev_args(50, 2));
    let (_, text) = get_metrics(addr, "text/plain");
    let calls = sample(
        &text,
        "pinwatch_gup_calls_total{variant=\"pin_user_pages_remote\"}",
    );
    let pages = sample(
        &text,
        "pinwatch_gup_pages_total{variant=\"pin_user_pages_remote\",outcome=\"returned\"}",
    );
    let row = |path: &str, family: &str| {
        sample(
            &text,
            &format!("pinwatch_cgroup_{family}_total{{cgroup=\"{path}\"}}"),
        )
        .unwrap_or(0)
    };
    let rows = |path: &str| {
        (
            row(path, "calls"),
            row(path, "pinned_pages"),
            row(path, "released_pages"),
        )
    };
    let parent_row = rows("/pinwatch-filter.slice");
    let child_row = rows("/pinwatch-filter.slice/pinwatch-filter-child.scope");
    // Every call counted is one of the two cgroups' (exec's argument
    // copies included: the workloads exec inside their cgroup).
    let all_calls: u64 = text
        .lines()
        .filter(|l| l.starts_with("pinwatch_gup_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    eprintln!(
        "OBSERVED kernel={} attach={attach} serve --cgroup pinwatch-filter.slice: pin_user_pages_remote calls={calls:?}/50 pages={pages:?}/320 parent(id {parent_id}) (calls, pinned, released)={parent_row:?}/(_,240,240) child(id {child_id})={child_row:?}/(_,80,80) all calls={all_calls} = parent+child {} outside cgroup series={}",
        h.release,
        parent_row.0 + child_row.0,
        text.contains("pinwatch-outside.slice")
    );
    assert_eq!((calls, pages), (Some(50), Some(320)), "{text}");
    assert_eq!((parent_row.1, parent_row.2), (240, 240), "{text}");
    assert_eq!((child_row.1, child_row.2), (80, 80), "{text}");
    assert_eq!(parent_row.0 + child_row.0, all_calls, "{text}");
    assert!(parent_row.0 >= 30 && child_row.0 >= 20, "{text}");
    assert!(!text.contains("pinwatch-outside.slice"), "{text}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut serve, Duration::from_secs(60), "serve after SIGTERM");
    assert!(status.success(), "serve exited with {status}");
}
