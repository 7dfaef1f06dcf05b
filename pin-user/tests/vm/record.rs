//! `pinwatch record -- CMD`: only the command's process tree counts (an
//! unrelated workload runs beside it), the totals equal the command's exact
//! expectation, intervals add up to the totals, and the exit status is the
//! command's; a command that ignores SIGTERM is killed and the recording
//! still written.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pinwatch::export::record::Record;

use crate::harness::{harness, pinwatch_bin};
use crate::processes::{lines_of, wait_for_line, wait_within};

#[test]
fn record_follows_the_command_tree() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    // Outside the tree: shared-futex GUP calls that must not be recorded.
    let mut noise = Command::new(&bin)
        .args(["workload", "futex-wake", "--calls", "200000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("noise workload");
    // Inside: a shell that forks the workload, so following forks matters.
    // It first checks it got transparent huge pages back (the agent turns
    // them off for itself only): exit 9 otherwise.
    let script = format!(
        "grep -q 'THP_enabled:.1' /proc/self/status || exit 9; \
         {bin} workload process-vm-writev --calls 30 --pages 8 > /dev/null; exit 7"
    );
    let status = Command::new(&bin)
        .args([
            "record",
            "-o",
            "/tmp/rec.json",
            "--interval",
            "200ms",
            "--attach",
            &attach,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .status()
        .expect("pinwatch record");
    let _ = noise.kill();
    let _ = noise.wait();
    assert_eq!(
        status.code(),
        Some(7),
        "record exits with the command's status (9: the command ran without THP)"
    );

    let rec = Record::read(std::path::Path::new("/tmp/rec.json")).expect("a valid recording");
    let remote = rec
        .counts
        .totals
        .get("pin_user_pages_remote")
        .expect("pin_user_pages_remote recorded");
    let futex = rec
        .counts
        .totals
        .get("get_user_pages_fast")
        .map_or(0, |v| v.calls);
    let interval_calls: u64 = rec
        .intervals
        .iter()
        .filter_map(|i| i.counts.totals.get("pin_user_pages_remote"))
        .map(|v| v.calls)
        .sum();
    eprintln!(
        "OBSERVED kernel={} attach={attach} workload=record -- sh -c workload: pin_user_pages_remote calls={}/30 pages={}/240 \
         unrelated get_user_pages_fast={futex}/0 intervals={} interval_calls={interval_calls}/30 exit={:?}",
        h.release,
        remote.calls,
        remote.pages_pinned,
        rec.intervals.len(),
        rec.meta.exit_status
    );
    assert_eq!((remote.calls, remote.pages_pinned), (30, 240));
    assert_eq!(
        futex, 0,
        "the unrelated futex workload leaked into the recording"
    );
    assert_eq!(interval_calls, 30, "intervals add up to the totals");
    assert_eq!(rec.meta.exit_status, Some(7));
    assert_eq!(
        rec.counts
            .unpin
            .get("unpin_user_pages_dirty_lock")
            .map(|u| u.pages),
        Some(240)
    );
}

/// How long attaching and starting may take before the test gives up
/// (~8 s under TCG).
const START_WITHIN: Duration = Duration::from_secs(120);

/// How soon record must exit once its end came (the duration or SIGTERM)
/// with a command that ignores SIGTERM: 2 s of grace, SIGKILL, the last
/// sample, the file, then detaching, which waits for RCU-tasks grace
/// periods (seconds under TCG). 60 s is far beyond that; before the fix it
/// never exited.
const END_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn record_kills_a_command_that_ignores_sigterm() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    // Pins, says so (on the stdout it shares with pinwatch), then sits
    // deaf to SIGTERM. Short sleeps: one outlives the killed shell by that
    // long at most.
    let script = format!(
        "trap '' TERM; {bin} workload process-vm-writev --calls 30 --pages 8 > /dev/null; \
         echo pinned; while :; do sleep 0.2; done"
    );
    for ending in ["--duration", "SIGTERM"] {
        let path = format!("/tmp/stubborn-{}.json", ending.trim_start_matches('-'));
        let mut cmd = Command::new(&bin);
        cmd.args([
            "record",
            "-o",
            &path,
            "--interval",
            "200ms",
            "--attach",
            &attach,
        ]);
        if ending == "--duration" {
            // Ample for the workload under TCG (about a second).
            cmd.args(["--duration", "10s"]);
        }
        let mut record = cmd
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pinwatch record");
        let stdout = lines_of(record.stdout.take().unwrap());
        let stderr = lines_of(record.stderr.take().unwrap());
        wait_for_line(&stderr, "recording to", START_WITHIN);
        let counting = Instant::now();
        wait_for_line(&stdout, "pinned", START_WITHIN);
        let ended = if ending == "SIGTERM" {
            // SAFETY: signalling our own child.
            assert_eq!(unsafe { libc::kill(record.id() as i32, libc::SIGTERM) }, 0);
            Instant::now()
        } else {
            counting + Duration::from_secs(10)
        };
        let status = wait_within(
            &mut record,
            END_WITHIN + ended.saturating_duration_since(Instant::now()),
            &format!("record ended by {ending}, command ignoring SIGTERM"),
        );
        let took = ended.elapsed();
        let escalated = std::iter::from_fn(|| stderr.recv_timeout(Duration::from_secs(5)).ok())
            .any(|line| line.contains("sending SIGKILL"));
        let rec = Record::read(std::path::Path::new(&path)).expect("the recording is written");
        let calls = rec
            .counts
            .totals
            .get("pin_user_pages_remote")
            .map_or(0, |v| v.calls);
        eprintln!(
            "OBSERVED kernel={} attach={attach} record ended by {ending}, command ignoring SIGTERM: \
             exit {:?} {:.1}s after the end; SIGKILL said: {escalated}; recorded exit {:?}; \
             pin_user_pages_remote calls={calls}/30",
            h.release,
            status.code(),
            took.as_secs_f64(),
            rec.meta.exit_status
        );
        assert_eq!(
            status.code(),
            Some(128 + libc::SIGKILL),
            "ended by {ending}"
        );
        assert_eq!(rec.meta.exit_status, Some(128 + libc::SIGKILL));
        assert!(escalated, "record did not say it sent SIGKILL");
        assert_eq!(calls, 30, "ended by {ending}");
    }
}

/// A command whose main thread exits while a second thread goes on
/// pinning (`pthread_exit` in main): the process is followed, not its
/// leader thread, so every call is recorded.
#[test]
fn record_follows_a_process_whose_leader_thread_exited() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    let mut record = Command::new(&bin)
        .args([
            "record",
            "-o",
            "/tmp/rec-leader.json",
            "--interval",
            "200ms",
            "--attach",
            &attach,
            "--",
            &bin,
            "workload",
            "leader-exit-readv",
            "--calls",
            "40",
            "--pages",
            "4",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("pinwatch record");
    let status = wait_within(
        &mut record,
        START_WITHIN + END_WITHIN,
        "record -- workload leader-exit-readv",
    );
    assert!(status.success(), "record: {status}");
    let rec =
        Record::read(std::path::Path::new("/tmp/rec-leader.json")).expect("a valid recording");
    let remote = rec
        .counts
        .totals
        .get("pin_user_pages_remote")
        .map_or((0, 0), |v| (v.calls, v.pages_pinned));
    eprintln!(
        "OBSERVED kernel={} attach={attach} record -- workload leader-exit-readv: pin_user_pages_remote calls,pages={remote:?}/(40, 160)",
        h.release
    );
    assert_eq!(remote, (40, 160), "calls made after the leader exited");
}
