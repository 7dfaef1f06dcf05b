//! `pinwatch probes` says where start-up time went: every phase from
//! reading BTF to the first read of the maps, in the order they ran; and
//! a start while the kernel still detaches an earlier run says so.

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{ProgramFd, ProgramInfo};
use pinwatch::probes::{Mechanism, earlier_run};

use crate::harness::{Harness, harness, pinwatch_bin};
use crate::processes::{start_pinwatch, wait_within};

/// The phases an attach that succeeds goes through, in order (the kernel's
/// discovery, then loading and attaching, then the first read).
const PHASES: [&str; 13] = [
    "BTF",
    "mechanisms",
    "features",
    "kallsyms",
    "load+verify",
    "type ids for attach",
    "attach functions",
    "attach release hook",
    "attach memlock checks",
    "attach task watches",
    "attach pending fold",
    "stop handoff",
    "first read",
];

#[test]
fn probes_says_where_start_up_time_went() {
    let h = harness();
    let out = Command::new(pinwatch_bin())
        .args(["probes", "--json", "--attach", &h.attach_arg()])
        .output()
        .expect("run pinwatch probes");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "probes exited {}: {text}", out.status);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    let phases = report["startup"].as_array().expect("startup phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, PHASES, "{text}");
    let ms: Vec<f64> = phases.iter().filter_map(|p| p["ms"].as_f64()).collect();
    assert_eq!(ms.len(), PHASES.len());
    assert!(ms.iter().all(|m| m.is_finite() && *m >= 0.0), "{ms:?}");
    // Attaching makes the kernel patch code and wait for RCU: it cannot
    // take no time at all.
    assert!(ms[7] > 0.0, "attach functions took {} ms", ms[7]);
    eprintln!(
        "OBSERVED kernel={} attach={} start-up ms: {}",
        h.release,
        h.attach_arg(),
        names
            .iter()
            .zip(&ms)
            .map(|(n, m)| format!("{n} {m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// `--attach kprobe-multi` puts every present function on the two
/// kprobe_multi links where the kernel has them with returns on rethook
/// (5.18 to 6.13, built with fprobe), and elsewhere refuses in one line
/// that names the way out; start-up time is printed beside the harness's
/// own mechanism's for the note (a benchmark, not asserted).
#[test]
fn kprobe_multi_attaches_every_function_at_once_or_says_why_not() {
    let h = harness();
    // The links need fprobe, which the kernel's build configuration (the
    // VM carries it) says; Debian builds 6.1 without it.
    let fprobe = pinwatch::kernel::config::built_with(&h.release, "CONFIG_FPROBE")
        .expect("the kernel's build configuration");
    let supported = fprobe && h.version >= (5, 18) && h.version < (6, 14);
    multi_links_attach_every_function_or_say_why_not(&h, "kprobe-multi", supported);
}

/// `--attach fentry-multi` puts every present function on the two tracing
/// multi links where the kernel has them (7.3 of the matrix's kernels;
/// its uapi is the first this project read them in), and elsewhere
/// refuses in one line that names the way out.
#[test]
fn fentry_multi_attaches_every_function_at_once_or_says_why_not() {
    let h = harness();
    let supported = h.version >= (7, 3);
    multi_links_attach_every_function_or_say_why_not(&h, "fentry-multi", supported);
}

/// `pinwatch probes --json --attach <option>` (a multi-link mode): where
/// `supported`, every present function on the links (but the one the
/// release hook counts, which has the hook's mechanism) and the
/// self-check passed; elsewhere a one-line refusal naming the way out.
fn multi_links_attach_every_function_or_say_why_not(h: &Harness, option: &str, supported: bool) {
    let out = Command::new(pinwatch_bin())
        .args(["probes", "--json", "--attach", option])
        .output()
        .expect("run pinwatch probes");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    if !supported {
        assert!(
            !out.status.success(),
            "probes exited 0 on {}: {text}",
            h.release
        );
        let error = report["error"].as_str().expect("error said");
        assert!(
            error.contains(&format!("--attach {option}")) && error.contains("--attach auto"),
            "{error}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        eprintln!("OBSERVED kernel={} {option} refused: {error}", h.release);
        return;
    }
    assert!(
        out.status.success(),
        "probes exited {}: {text} {stderr}",
        out.status
    );
    // "kprobe-multi" attaches as "kprobe_multi", its hook as a kprobe.
    let (mechanism, hook) = match option {
        "kprobe-multi" => ("kprobe_multi", "kprobe"),
        _ => ("fentry_multi", "fentry"),
    };
    let functions = report["probes"].as_array().expect("probes");
    let mut on_links = 0;
    for f in functions {
        if f["symbol"].is_null() || f["not_needed"] == true {
            continue;
        }
        // Where the release hook counts a release function (6.12's
        // unpin_user_folio), that function has the hook's own probe.
        if report["release_at_hook"]["Ok"] == f["function"] {
            assert_eq!(
                report["release_hook"]["Ok"],
                format!("gup_put_folio via {hook}")
            );
            assert_eq!(f["attached"], hook, "{f}");
            continue;
        }
        assert_eq!(f["attached"], mechanism, "{f}");
        on_links += 1;
    }
    assert!(on_links >= 12, "{on_links} functions on the links: {text}");
    assert!(
        report["self_check"]["Ok"].is_string(),
        "self-check: {}",
        report["self_check"]
    );
    let attach_ms = report["startup"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "attach functions"))
        .and_then(|p| p["ms"].as_f64())
        .expect("attach functions phase");
    eprintln!(
        "OBSERVED kernel={} {option}: {on_links} functions attached in {attach_ms:.0} ms",
        h.release
    );
}

/// `pinwatch probes --json` with the harness's mechanism: its report and
/// its stderr.
fn probes_report(h: &Harness) -> (serde_json::Value, String) {
    let out = Command::new(pinwatch_bin())
        .args(["probes", "--json", "--attach", &h.attach_arg()])
        .output()
        .expect("run pinwatch probes");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "probes exited {}: {text} {stderr}",
        out.status
    );
    let report =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    (report, stderr)
}

/// Whether a `pinwatch-detach` child (kernels before 6.5) still runs: it
/// holds an earlier run's links, so their programs do not look unlinked
/// yet.
fn a_detach_child_runs() -> bool {
    procfs::process::all_processes()
        .expect("/proc")
        .filter_map(Result::ok)
        .any(|p| p.stat().is_ok_and(|s| s.comm == "pinwatch-detach"))
}

/// Waits until earlier tests' runs are detached: no `pinwatch-detach`
/// child left and no pinwatch trampoline program without a link. The
/// kernel is done within seconds (15 s is four times the longest detach
/// measured, 3-4 s on 6.12).
fn settle_earlier_runs() {
    wait_for(|| !a_detach_child_runs() && earlier_run::programs_being_detached() == 0);
}

/// Waits up to 15 s (see [`settle_earlier_runs`]) for `done`.
fn wait_for(done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "earlier runs still being detached after 15 s: {} unlinked pinwatch programs, \
             a pinwatch-detach child: {}",
            earlier_run::programs_being_detached(),
            a_detach_child_runs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pinwatch trampoline programs (fentry, fexit) loaded now.
fn trampoline_programs() -> Vec<ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(earlier_run::is_trampoline_program)
        })
        .collect()
}

/// A start while the kernel still holds an earlier run's programs says
/// that it waits for the kernel to detach them, how many are left, and a
/// start once they are gone says nothing.
///
/// The kernel's state after a stop is held, not raced: the test keeps a
/// descriptor on each of the earlier run's trampoline programs, so they
/// stay loaded with their links gone, as during the kernel's detach, until
/// it lets them go. Racing the detach would not do: the harness's own
/// probes keep the trampolines, so the earlier run's detach needs no grace
/// period, and on 6.1 it had ended before the next start looked.
#[test]
fn a_start_while_the_kernel_detaches_an_earlier_run_says_so() {
    let h = harness();
    let attach = h.attach_arg();
    settle_earlier_runs();
    let before: HashSet<u32> = trampoline_programs().iter().map(|p| p.id()).collect();
    let mut stat = start_pinwatch(&["stat", "--attach", &attach], "pinwatch: kernel");
    let held: Vec<(u32, ProgramFd)> = trampoline_programs()
        .into_iter()
        .filter(|p| !before.contains(&p.id()))
        .map(|p| {
            let fd = p.fd().expect("a descriptor on the earlier run's program");
            (p.id(), fd)
        })
        .collect();
    // SAFETY: a signal to the child this test spawned.
    unsafe { libc::kill(stat.id() as i32, libc::SIGINT) };
    let status = wait_within(&mut stat, Duration::from_secs(30), "stat after SIGINT");
    assert!(status.success(), "stat exited {status}");
    // Until the kernel (or, before 6.5, the detach child) has dropped
    // their links.
    let ids: HashSet<u32> = held.iter().map(|(id, _)| *id).collect();
    wait_for(|| {
        !a_detach_child_runs()
            && !aya::programs::loaded_links()
                .filter_map(Result::ok)
                .any(|link| ids.contains(&link.program_id()))
    });
    let on_trampolines = h
        .probes
        .status
        .iter()
        .any(|st| st.attached == Some(Mechanism::Fentry))
        || h.probes.release_hook == Ok(Mechanism::Fentry);
    assert_eq!(
        !held.is_empty(),
        on_trampolines,
        "{} trampoline programs of stat --attach {attach}",
        held.len()
    );

    let (report, stderr) = probes_report(&h);
    // Exactly the held ones: the kernel has detached them, and nothing
    // else of pinwatch's is unlinked (settled above).
    assert_eq!(
        report["earlier_run_detaching"].as_u64(),
        Some(held.len() as u64),
        "{stderr}"
    );
    if held.is_empty() {
        assert!(!stderr.contains("still detaching"), "{stderr}");
    } else {
        assert!(
            stderr.contains(&earlier_run::notice(held.len())),
            "{stderr}"
        );
    }
    drop(held);
    settle_earlier_runs();
    let (quiet, stderr) = probes_report(&h);
    assert_eq!(quiet["earlier_run_detaching"], 0, "{stderr}");
    assert!(!stderr.contains("still detaching"), "{stderr}");
    let attach_ms = |r: &serde_json::Value| {
        r["startup"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "attach functions"))
            .and_then(|p| p["ms"].as_f64())
            .expect("attach functions phase")
    };
    eprintln!(
        "OBSERVED kernel={} attach={attach} a start with {} of an earlier run's programs \
         held: attach functions {:.0} ms (once they were gone: {:.0} ms)",
        h.release,
        report["earlier_run_detaching"],
        attach_ms(&report),
        attach_ms(&quiet)
    );
}
