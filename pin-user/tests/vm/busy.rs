//! Busy hosts: many calls in flight at once. Every call is counted, or
//! reported as missed; a missed return never leaves a thread uncounted.

use pin_common::Health;
use pinwatch::probes::{
    Mechanism,
    misses::{self, Cause},
};

use crate::harness::{harness, id_of, measure};

/// Threads blocked inside GUP at once: more than a kretprobe's instances
/// (max(10, 2 x CPUs) on these kernels), so with kretprobes some returns
/// are never seen.
const THREADS: u64 = 32;
/// Rounds of calls: the blocked one, then warm ones by the same threads,
/// which show whether a thread whose return was missed is counted again.
const ROUNDS: u64 = 11;
const PAGES: u64 = 4;

/// Whether the running kernel preempts tasks in kernel code, BPF programs
/// included (they run with migration disabled, not preemption):
/// PREEMPT_RT, or a full or lazy preemption model. PREEMPT_DYNAMIC kernels
/// name their current model in debugfs (6.12: "none (voluntary) full",
/// 7.3: "full (lazy)"); the others say PREEMPT or PREEMPT_RT in their
/// version string (5.10's says neither).
fn preempts_in_kernel(release: &str) -> bool {
    let version = std::fs::read_to_string("/proc/sys/kernel/version").unwrap_or_default();
    if release.contains("-rt-") || version.contains("PREEMPT_RT") {
        return true;
    }
    let models = "/sys/kernel/debug/sched/preempt";
    if !std::path::Path::new(models).exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"])
            .status();
    }
    match std::fs::read_to_string(models) {
        Ok(models) => {
            let current = models
                .split_whitespace()
                .find(|m| m.starts_with('('))
                .map(|m| m.trim_matches(|c| c == '(' || c == ')'));
            matches!(current, Some("full" | "lazy"))
        }
        Err(_) => version.split_whitespace().any(|word| word == "PREEMPT"),
    }
}

#[test]
fn many_calls_in_flight_are_counted_or_reported_missed() {
    let h = harness();
    let (report, delta) = measure(
        &h,
        &[
            "stalled-readv",
            "--threads",
            &THREADS.to_string(),
            "--calls",
            &ROUNDS.to_string(),
            "--pages",
            &PAGES.to_string(),
        ],
    );
    assert_eq!(report.calls, THREADS * ROUNDS);
    let id = id_of("pin_user_pages_remote");
    let got = &delta.gup[id];
    let mechanism = h.probes.status[id].attached.expect("attached");
    let skipped: u64 = delta
        .misses
        .iter()
        .filter(|(key, _)| key.function == "pin_user_pages_remote" && key.cause == Cause::Recursion)
        .map(|(_, runs)| *runs)
        .sum();
    // The kernel's own count of the kretprobe's missed returns (6.7+).
    let kernel_missed: Option<u64> = delta
        .misses
        .iter()
        .filter(|(key, _)| {
            key.function == "pin_user_pages_remote" && key.cause == Cause::Kprobe && key.at_return()
        })
        .map(|(_, runs)| *runs)
        .reduce(|a, b| a + b);
    eprintln!(
        "OBSERVED kernel={} attach={mechanism} stalled-readv threads={THREADS} rounds={ROUNDS}: \
         counted={} missed_returns={} skipped_runs={skipped} kretprobe_missed={kernel_missed:?} of {} calls; pages={}",
        h.release, got.calls, got.missed_returns, report.calls, got.pages_returned,
    );
    let others: Vec<String> = (0..pin_common::GUP_FUNC_COUNT)
        .filter(|&i| delta.gup[i].calls + delta.gup[i].missed_returns != 0)
        .map(|i| {
            format!(
                "{}={}+{}",
                pin_common::FUNCS[i].name,
                delta.gup[i].calls,
                delta.gup[i].missed_returns
            )
        })
        .collect();
    let skipped_by: Vec<String> = delta
        .misses
        .iter()
        .filter(|(_, runs)| **runs > 0)
        .map(|(key, runs)| format!("{} {}={runs}", key.function, key.program))
        .collect();
    eprintln!(
        "OBSERVED variants {others:?} health {:?} skipped runs {skipped_by:?} exit watch {:?}",
        delta.health, h.probes.exit_watch
    );
    let proc = delta.procs.get(&report.pid).expect("per-process entry");
    if preempts_in_kernel(&h.release) {
        // PREEMPT_RT, or full or lazy preemption (Debian's 7.x runs lazy):
        // BPF programs run preemptible, and the kernel skips a program on a
        // CPU where a preempted task is still inside it (and task storage
        // where a preempted task holds its lock). Those calls cannot be
        // counted; each must show up as a reported miss. (Seen on 7.3: one
        // pin_user_pages_remote fentry run skipped, 351 of 352 counted.)
        let health = |which: Health| delta.health[which as usize];
        let all_skipped: u64 = delta.misses.values().sum();
        let reported = health(Health::TaskStateLost)
            + health(Health::UnmatchedExit)
            + health(Health::MissedReturn)
            + all_skipped;
        assert!(got.calls <= report.calls, "more calls counted than made");
        assert!(
            report.calls - got.calls <= reported,
            "{} calls neither counted nor reported missed (reported: {reported})",
            report.calls - got.calls
        );
        return;
    }
    // Every call is counted or reported: the state a missed return leaves
    // behind is found stale at the thread's next call (or when it exits)
    // and counted there. Returns can be missed in any round: a thread can
    // be scheduled out inside GUP (cond_resched) while the others run.
    assert_eq!(
        got.calls + got.missed_returns,
        report.calls,
        "counted + missed must be every call"
    );
    assert_eq!(
        got.pages_returned,
        got.calls * PAGES,
        "pages of counted calls"
    );
    if mechanism == Mechanism::Kprobe && misses::kprobe_missed_readable() {
        // Each return the kretprobe could not follow is a call whose return
        // pinwatch did not see; with more threads in the call at once than
        // kretprobe instances, the kernel says it missed some.
        let kernel_missed = kernel_missed.expect("kretprobe misses read on 6.7+");
        assert!(
            kernel_missed <= got.missed_returns,
            "the kernel missed {kernel_missed} returns, pinwatch counted {} missed",
            got.missed_returns
        );
        // A return neither skipped by the program's recursion guard nor
        // missed by the kretprobe would be one the kernel did not report.
        if got.missed_returns > skipped {
            assert!(
                kernel_missed > 0,
                "{} missed returns, {skipped} skipped runs, none missed by the kretprobe",
                got.missed_returns
            );
        }
    } else {
        assert_eq!(
            kernel_missed, None,
            "kprobe misses reported where unreadable"
        );
    }
    assert_eq!(got.errors + got.partial + got.zero, 0);
    // Every page is released by the thread that pinned it, and counted as
    // such, missed returns or not: a release after a return pinwatch did
    // not see is not GUP's own (that would leave phantom pins held).
    let released: u64 = delta.release.iter().map(|r| r.pages).sum();
    let internal = delta.balance.gup_released;
    assert_eq!(
        (released, internal),
        (report.calls * PAGES, 0),
        "pages released by the callers, by GUP itself"
    );
    assert_eq!(
        delta.health[Health::MissedReturn as usize],
        got.missed_returns,
        "health counts each missed return once"
    );
    // The process also makes one get_user_pages_fast per exiting thread:
    // the kernel wakes the thread's clear_child_tid futex, a shared futex
    // whose key GUP looks up.
    assert_eq!(
        proc.calls,
        got.calls + delta.gup[id_of("get_user_pages_fast")].calls,
        "per-process calls"
    );
    if mechanism == pinwatch::probes::Mechanism::Fentry {
        // A trampoline has no instance limit, and these kernels do not
        // preempt BPF programs: nothing may be missed.
        assert_eq!(got.missed_returns, 0, "fexit missed returns");
        assert_eq!(skipped, 0, "fentry/fexit runs skipped");
    }
}
