//! Stopping hands the links over: `stat`, stopped by SIGINT, says where
//! its links went (freed by the kernel's worker on 6.5+, otherwise left to
//! a `pinwatch-detach` child that outlives it and detaches them as it
//! exits), and the kernel holds nothing of it afterwards either way.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    fault,
    objects::{BpfObjects, settle},
    signal,
};
use crate::harness::{harness, pinwatch_bin};
use crate::processes::{lines_of, wait_for_line, wait_within};

/// Attaching takes up to ~8 s under TCG (2 vCPUs); far beyond it.
const START_WITHIN: Duration = Duration::from_secs(120);

/// A stop that hangs ends the test rather than the suite: detaching in
/// the process itself took 3-4 s idle under TCG.
const STOP_WITHIN: Duration = Duration::from_secs(60);

pub(super) fn stop_hands_the_links_over() {
    let h = harness();
    let baseline = BpfObjects::now();
    let mut stat = Command::new(pinwatch_bin())
        .args(["stat", "--interval", "10s", "--attach", &h.attach_arg()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pinwatch stat");
    let lines = lines_of(stat.stderr.take().expect("stderr"));
    wait_for_line(&lines, "pinwatch: kernel", START_WITHIN);
    let running = BpfObjects::now().beyond(&baseline);
    signal(&stat, libc::SIGINT);
    let sent = Instant::now();
    let status = wait_within(&mut stat, STOP_WITHIN, "stat after SIGINT");
    let took = sent.elapsed();
    let links_at_exit = BpfObjects::now().beyond(&baseline).1;
    let detached = wait_for_line(&lines, "detached in", Duration::from_secs(5));
    let left = settle(&baseline);
    fault(
        &h,
        "stop: where the links went (stat, SIGINT)",
        &format!(
            "exit {} {:.2} s after SIGINT; {} links while running, {links_at_exit} when it had \
             exited; {}; {} {} {} left after",
            status.code().unwrap_or(-1),
            took.as_secs_f64(),
            running.1,
            detached
                .split_once("detached in")
                .map_or("", |(_, d)| d.trim()),
            left.0,
            left.1,
            left.2
        ),
    );
    assert_eq!(status.code(), Some(0));
    assert!(running.1 > 0, "stat holds no link");
    // Every link was pinned (the tests run as root: the mount is allowed).
    let pinned = format!("{n} of {n} links pinned", n = running.1);
    assert!(detached.contains(&pinned), "{detached:?}: want {pinned:?}");
    let frees_on_worker = pinwatch::kernel::parse_version(&h.release).is_some_and(|v| v >= (6, 5));
    if frees_on_worker {
        assert!(detached.contains("freed by the kernel"), "{detached:?}");
    } else {
        assert!(
            detached.contains("left to pinwatch-detach (pid "),
            "{detached:?}"
        );
    }
    // Whoever detached them, nothing is left.
    assert_eq!(left, (0, 0, 0), "stat left objects after SIGINT");
    // And the child ends: it does not wait for anything but the agent's
    // exit and its own (the kernel's detach may still run in its exit
    // after the objects' ids are gone: 'D' seen on 6.1). Gone, or a
    // zombie until init reaps it.
    if let Some(pid) = detacher_pid(&detached) {
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.chars().next())
                })
        };
        let deadline = Instant::now() + STOP_WITHIN;
        while !matches!(state(), None | Some('Z')) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "pinwatch-detach {pid} ended {:.2} s after SIGINT",
            sent.elapsed().as_secs_f64()
        );
        assert!(
            matches!(state(), None | Some('Z')),
            "pinwatch-detach {pid} still running ({:?}) {STOP_WITHIN:?} after",
            state()
        );
    }
}

/// The detaching child's pid from the stop's log line.
fn detacher_pid(line: &str) -> Option<u32> {
    let (_, after) = line.split_once("pinwatch-detach (pid ")?;
    after.split(')').next()?.parse().ok()
}
