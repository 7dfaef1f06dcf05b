//! Busy hosts: many calls in flight at once. Every call is counted, or
//! reported as missed; a missed return never leaves a thread uncounted.

use pin_common::Health;
use pinwatch::{
    kernel::KernelFacts,
    probes::{
        self, AttachMode, AttachOptions, Mechanism, Probes,
        misses::{self, Cause},
    },
    snapshot::Delta,
    workload::WorkloadReport,
};

use crate::harness::{harness, id_of, measure_by};

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

/// Runs the stalled-readv workload (`THREADS` threads blocked in GUP at
/// once, `ROUNDS` rounds) between two snapshots of `probes`' maps.
fn measure_stalled_readv(probes: &Probes) -> (WorkloadReport, Delta) {
    let (threads, rounds, pages) = (THREADS.to_string(), ROUNDS.to_string(), PAGES.to_string());
    let args = [
        "stalled-readv",
        "--threads",
        &threads,
        "--calls",
        &rounds,
        "--pages",
        &pages,
    ];
    let (report, delta) = measure_by(probes, None, &args);
    assert_eq!(report.calls, THREADS * ROUNDS);
    (report, delta)
}

#[test]
fn many_calls_in_flight_are_counted_or_reported_missed() {
    let h = harness();
    let (report, delta) = measure_stalled_readv(&h.probes);
    counted_or_reported_missed(&h.probes, &h.release, &report, &delta);
}

/// Another tracer's kretprobes on the same functions (attached after
/// ours, so they run first: the kernel runs the probes on one address
/// newest first; bpftrace, or a pinwatch started beside this one)
/// put the return-probe trampoline over the return address of every call
/// they watch, the callers' releases right after a missed return
/// included. Those releases are still the callers': the return address
/// behind the trampoline tells (rethook nodes, 5.11+). On 5.10 the
/// kernel keeps kretprobe instances in a global table: there at most the
/// missed returns' pages may be taken for GUP's own.
#[test]
fn another_tracers_kretprobes_leave_missed_returns_found() {
    let h = harness();
    let facts = KernelFacts::discover();
    let kprobes = |callers| AttachOptions {
        callers,
        ..AttachOptions::new(AttachMode::Kprobe)
    };
    let ours = probes::attach(&facts, kprobes(true)).expect("probes attach");
    let other = probes::attach(&facts, kprobes(false)).expect("the other tracer attaches");
    let (report, delta) = measure_stalled_readv(&ours);
    if h.version >= (5, 11) {
        counted_or_reported_missed(&ours, &h.release, &report, &delta);
    } else {
        let got = &delta.gup[id_of("pin_user_pages_remote")];
        eprintln!(
            "OBSERVED kernel={} beside another tracer: counted={} missed_returns={} gup_released={}",
            h.release, got.calls, got.missed_returns, delta.balance.gup_released
        );
        assert_eq!(got.calls + got.missed_returns, report.calls);
        assert!(
            delta.balance.gup_released <= got.missed_returns * PAGES,
            "{} pages taken for GUP's own, {} missed returns",
            delta.balance.gup_released,
            got.missed_returns
        );
    }
    drop(ours);
    drop(other);
}

/// Every call of the stalled-readv run `report` is counted or reported
/// missed in `delta` (read from `probes` on kernel `release`), and every
/// page is released by the callers, counted as such.
fn counted_or_reported_missed(
    probes: &Probes,
    release: &str,
    report: &WorkloadReport,
    delta: &Delta,
) {
    let id = id_of("pin_user_pages_remote");
    let got = &delta.gup[id];
    let mechanism = probes.status[id].attached.expect("attached");
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
        release, got.calls, got.missed_returns, report.calls, got.pages_returned,
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
        delta.health, probes.exit_watch
    );
    let proc = delta.procs.get(&report.pid).expect("per-process entry");
    // The calls come from threads named `stalled-caller`; the process's
    // row keeps the name of the process (its leader's).
    assert_eq!(proc.comm.to_string(), "pinwatch", "process row's name");
    if preempts_in_kernel(release) {
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
