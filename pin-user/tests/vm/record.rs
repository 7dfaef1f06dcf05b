//! `pinwatch record -- CMD`: only the command's process tree counts (an
//! unrelated workload runs beside it), the totals equal the command's exact
//! expectation, intervals add up to the totals, and the exit status is the
//! command's.

use std::process::{Command, Stdio};

use pinwatch::export::record::Record;

use crate::harness::{harness, pinwatch_bin};

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
    let script =
        format!("{bin} workload process-vm-writev --calls 30 --pages 8 > /dev/null; exit 7");
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
        "record exits with the command's status"
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
