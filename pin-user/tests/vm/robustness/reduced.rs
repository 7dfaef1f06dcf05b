//! Reduced mode on a kernel that can trace but will not let pinwatch: a
//! kernel that refuses bpf() (seccomp) gives reduced mode with exact
//! vmstat counts, hidden kernel BTF gives reduced mode saying why, and
//! reduced mode shows each process's VmPin.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use pinwatch::export::record::Record;

use super::fault;
use crate::harness::{harness, pinwatch_bin};

#[path = "../../common/sandbox.rs"]
mod sandbox;

pub(super) fn refused_bpf_gives_reduced_mode_with_exact_vmstat() {
    let h = harness();
    let mut cmd = Command::new(pinwatch_bin());
    cmd.args([
        "record",
        "-o",
        "/tmp/reduced.json",
        "--interval",
        "200ms",
        "--",
    ])
    .args([&pinwatch_bin(), "workload", "process-vm-writev"])
    .args(["--calls", "30", "--pages", "8"])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    sandbox::deny_bpf(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reduced mode") && stderr.contains("seccomp"),
        "{stderr}"
    );
    let rec = Record::read(Path::new("/tmp/reduced.json")).expect("a reduced recording");
    assert!(rec.meta.reduced.is_some());
    assert!(rec.counts.totals.is_empty(), "no per-variant figures");
    let vm = rec.counts.vmstat.expect("vmstat counters");
    fault(
        &h,
        "bpf() denied by seccomp: record -- 30 x 8-page process_vm_writev",
        &format!(
            "reduced mode; vmstat acquired {} released {} (expected 240 240)",
            vm.nr_foll_pin_acquired, vm.nr_foll_pin_released
        ),
    );
    assert_eq!(
        (vm.nr_foll_pin_acquired, vm.nr_foll_pin_released),
        (240, 240)
    );
}

pub(super) fn missing_btf_gives_reduced_mode_saying_why() {
    let h = harness();
    let mut cmd = Command::new(pinwatch_bin());
    cmd.args(["stat", "--json", "--interval", "1s", "--count", "1"])
        .args(["--attach", &h.attach_arg()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sandbox::hide_btf(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let banner = stderr
        .lines()
        .find(|l| l.contains("reduced mode"))
        .unwrap_or_default();
    fault(
        &h,
        "kernel BTF hidden (empty tmpfs over /sys/kernel/btf): stat",
        &format!("exit {:?}; {banner}", out.status.code()),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        banner.contains("no kernel BTF") && banner.contains("CONFIG_DEBUG_INFO_BTF=y"),
        "{stderr}"
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["mode"], "reduced");
}

/// An application's io_uring (no CAP_IPC_LOCK, see
/// `workload::application_ring`), set up on a thread of its own: io_uring
/// decides on accounting at setup, and the test's thread keeps its
/// capabilities.
fn ring_without_ipc_lock() -> io_uring::IoUring {
    std::thread::spawn(|| pinwatch::workload::application_ring().expect("io_uring_setup"))
        .join()
        .expect("ring setup thread")
}

pub(super) fn reduced_mode_shows_vmpin() {
    let h = harness();
    // This process registers a 16-page io_uring fixed buffer: VmPin 64 KiB.
    // io_uring accounts a whole compound page once any of it is pinned (a
    // buffer inside a transparent huge page shows as 2 MiB or more), so the
    // buffer gets its own mapping without THP. The ring is set up without
    // CAP_IPC_LOCK, as an application's: since 7.2 io_uring charges no
    // pinned_vm for rings of its holders (df0a52537c0f).
    let ring = ring_without_ipc_lock();
    let len = 16 * 4096;
    // SAFETY: a fresh anonymous mapping, unmapped below.
    let buffer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(buffer, libc::MAP_FAILED);
    // SAFETY: advice on our own mapping.
    assert_eq!(
        unsafe { libc::madvise(buffer, len, libc::MADV_NOHUGEPAGE) },
        0
    );
    let iov = libc::iovec {
        iov_base: buffer,
        iov_len: len,
    };
    // SAFETY: the buffer outlives the registration, ended below.
    unsafe { ring.submitter().register_buffers(&[iov]) }.unwrap();
    let out = Command::new(pinwatch_bin())
        .args([
            "stat",
            "--reduced",
            "--json",
            "--count",
            "1",
            "--interval",
            "200ms",
        ])
        .output()
        .unwrap();
    ring.submitter().unregister_buffers().unwrap();
    drop(ring);
    // SAFETY: our mapping, no longer registered.
    unsafe { libc::munmap(buffer, len) };
    assert!(out.status.success());
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = std::process::id();
    let mine = view["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == me)
        .map(|p| p["vm_pin_kb"].clone());
    fault(
        &h,
        "stat --reduced beside a 16-page io_uring fixed buffer",
        &format!(
            "VmPin of the registering process: {} KiB (expected 64)",
            mine.as_ref().map_or("absent".into(), |v| v.to_string())
        ),
    );
    assert_eq!(mine, Some(serde_json::json!(64)), "{view}");
}
