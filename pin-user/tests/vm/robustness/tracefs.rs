//! An unmounted tracefs (where `record -- CMD` finds the sched
//! tracepoints it follows forks with) is mounted again.

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
};

use super::fault;
use crate::harness::{harness, pinwatch_bin};

pub(super) fn unmounted_tracefs_is_mounted_again() {
    let h = harness();
    let tracing = c"/sys/kernel/tracing";
    // SAFETY: umount2 on a valid path; it may be busy or not mounted.
    let unmounted = unsafe { libc::umount2(tracing.as_ptr(), libc::MNT_DETACH) } == 0;
    let status = Command::new(pinwatch_bin())
        .args([
            "record",
            "-o",
            "/tmp/tracefs.json",
            "--attach",
            &h.attach_arg(),
        ])
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let mounted = Path::new("/sys/kernel/tracing/events/sched").exists();
    let mut err = String::new();
    let _ = status.stderr.as_slice().read_to_string(&mut err);
    fault(
        &h,
        "tracefs unmounted: record -- CMD (follows forks via sched tracepoints)",
        &format!(
            "unmounted first: {unmounted}; exit {}; tracefs mounted after: {mounted}",
            status.status.code().unwrap_or(-1)
        ),
    );
    assert!(unmounted, "could not unmount tracefs for the test");
    assert!(status.status.success(), "{err}");
    assert!(mounted);
}
