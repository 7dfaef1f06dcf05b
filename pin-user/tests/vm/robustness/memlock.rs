//! pinwatch under a low RLIMIT_MEMLOCK it may not raise. Linux before 5.11
//! charges BPF maps and programs to the user's `locked_vm`, checked
//! against RLIMIT_MEMLOCK with no capability bypass (docs/limits.md, "BPF");
//! aya raises the limit there, which takes CAP_SYS_RESOURCE once the hard
//! limit is low. Without it pinwatch must name the limit and how to raise
//! it (not blame seccomp or run reduced); from 5.11 on the limit must not
//! matter.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
};

use super::fault;
use crate::harness::{harness, pinwatch_bin};

/// The limit, soft and hard: 5.10's own default (MLOCK_LIMIT).
const LIMIT: libc::rlim_t = 64 * 1024;
/// CAP_SYS_RESOURCE, which raising a hard limit takes.
const CAP_SYS_RESOURCE: libc::c_ulong = 24;

/// Whether kernel `release` ("5.10.0-...") charges BPF memory to
/// RLIMIT_MEMLOCK: before 5.11 (memcg accounting replaced it there).
fn charges_memlock(release: &str) -> bool {
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        panic!("kernel release {release:?} does not start with MAJOR.MINOR");
    };
    (major, minor) < (5, 11)
}

/// Runs `cmd` under RLIMIT_MEMLOCK `soft` (hard: `soft` when
/// `drop_resource`, else unlimited), without CAP_SYS_RESOURCE when
/// `drop_resource` (dropped from the bounding set, so the exec'd program
/// is not given it).
fn under_memlock_limit(cmd: &mut Command, soft: libc::rlim_t, drop_resource: bool) {
    // SAFETY: setrlimit and prctl are async-signal-safe; the values live
    // on the stack.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: if drop_resource {
                    soft
                } else {
                    libc::RLIM_INFINITY
                },
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0
                || (drop_resource
                    && libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where aya raised pinwatch's limit (before 5.11), `record` gives the
/// command the limit pinwatch started with: a recorded workload meets its
/// own memlock limit, as it would without pinwatch.
fn recorded_command_keeps_its_memlock_limit(attach: &str) -> String {
    let seen = "/tmp/memlock-of-recorded-command";
    let mut cmd = Command::new(pinwatch_bin());
    cmd.args([
        "record",
        "-o",
        "/tmp/memlock-record.json",
        "--attach",
        attach,
    ])
    .args(["--", "/bin/sh", "-c", &format!("ulimit -l > {seen}")])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    under_memlock_limit(&mut cmd, LIMIT, false);
    let out = cmd.output().expect("run pinwatch record");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "record: {stderr}");
    let limit = std::fs::read_to_string(seen).expect("the command wrote its limit");
    assert_eq!(
        limit.trim(),
        (LIMIT / 1024).to_string(),
        "ulimit -l in the recorded command"
    );
    format!("recorded command's ulimit -l {}", limit.trim())
}

pub(super) fn low_memlock_limit_is_named_where_it_counts() {
    let h = harness();
    let attach = h.attach_arg();
    let mut cmd = Command::new(pinwatch_bin());
    cmd.args(["probes", "--attach", &attach])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Root keeps every capability but the one that could raise the limit
    // back.
    under_memlock_limit(&mut cmd, LIMIT, true);
    let out = cmd.output().expect("run pinwatch probes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let charged = charges_memlock(&h.release);
    fault(
        &h,
        "probes under ulimit -l 64 (soft and hard) without CAP_SYS_RESOURCE",
        &format!(
            "exit {:?}; {}",
            out.status.code(),
            stdout
                .lines()
                .find(|l| l.starts_with("pinwatch cannot trace here:")
                    || l.starts_with("self-check:"))
                .unwrap_or("(no verdict)")
        ),
    );
    if charged {
        let recorded = recorded_command_keeps_its_memlock_limit(&attach);
        fault(
            &h,
            "record under ulimit -l 64 (soft; hard unlimited)",
            &recorded,
        );
        // `probes` is a report: its last line says why it cannot trace.
        assert_eq!(
            out.status.code(),
            Some(5),
            "stdout: {stdout}\nstderr: {stderr}"
        );
        let why = stdout
            .lines()
            .find(|l| l.starts_with("pinwatch cannot trace here:"))
            .unwrap_or_else(|| panic!("no reason given: {stdout}\n{stderr}"));
        for needed in [
            "RLIMIT_MEMLOCK",
            "64 KiB",
            "ulimit -l unlimited",
            "LimitMEMLOCK=infinity",
        ] {
            assert!(why.contains(needed), "{needed:?} missing: {why}");
        }
        assert!(!why.contains("seccomp"), "not seccomp's doing: {why}");
    } else {
        assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
        assert!(
            stdout.contains("self-check: ok"),
            "attached and counted as without the limit: {stdout}\n{stderr}"
        );
    }
}
