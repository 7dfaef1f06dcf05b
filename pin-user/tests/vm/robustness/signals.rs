//! Signals to a running command: each stop signal ends every long-running
//! command cleanly (probes detached, recordings complete, the last
//! interval printed), also while it is still attaching, and SIGKILL leaves
//! no program, link or map of pinwatch in the kernel and nothing in bpffs.

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pinwatch::export::record::Record;

use super::{
    fault,
    objects::{BpfObjects, settle},
    signal,
};
use crate::harness::{harness, pinning_workload, pinwatch_bin};
use crate::processes::{holds_signal, ignoring, start_pinwatch, wait_within};

/// The signal's name in the fault table.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "signal",
    }
}

/// pin_user_pages_remote calls in a recording (the pinning workload's).
fn remote_calls(rec: &Record) -> u64 {
    rec.counts
        .totals
        .get("pin_user_pages_remote")
        .map_or(0, |v| v.calls)
}

/// Which stop signal each command gets. Every command installs the same
/// handlers (`signals::install`, one flag for all three signals) and waits
/// on the same `StopSignals` (one tokio stream per signal), so each
/// command needs one signal and each signal one command; all twelve pairs
/// cost 8 more agent starts (~36 s per VM) and reach no other code.
const STOP_SIGNAL_OF: [(&str, i32); 4] = [
    ("record", libc::SIGINT),
    ("stat", libc::SIGTERM),
    ("trace", libc::SIGHUP),
    ("serve", libc::SIGTERM),
];

pub(super) fn signals_detach_and_finish_every_command() {
    let h = harness();
    let attach = h.attach_arg();
    let baseline = BpfObjects::now();
    for (command, sig) in STOP_SIGNAL_OF {
        let name = signal_name(sig);
        let path = format!("/tmp/signal-{name}.json");
        let (mut args, started): (Vec<&str>, &str) = match command {
            "record" => (
                vec!["record", "-o", &path, "--interval", "200ms"],
                "recording to",
            ),
            "stat" => (vec!["stat", "--interval", "10s"], "attached"),
            "trace" => (vec!["trace", "--json"], "tracing GUP calls"),
            _ => (vec!["serve", "--listen", "127.0.0.1:0"], "serving metrics"),
        };
        args.extend(["--attach", &attach]);
        let child = start_pinwatch(&args, started);
        let running = BpfObjects::now().beyond(&baseline);
        assert!(running.0 > 0, "{command} loaded no program");
        pinning_workload();
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let left = settle(&baseline);
        let mut outcome = format!(
            "exit {}; {} programs, {} links, {} maps while running, {} {} {} after",
            out.status.code().unwrap_or(-1),
            running.0,
            running.1,
            running.2,
            left.0,
            left.1,
            left.2
        );
        assert_eq!(out.status.code(), Some(0), "{command} after {name}");
        assert_eq!(left, (0, 0, 0), "{command} left objects after {name}");
        if command == "record" {
            let rec = Record::read(Path::new(&path)).expect("complete JSON");
            assert_eq!(remote_calls(&rec), 30, "{command} after {name}");
            outcome.push_str("; recording complete, 30/30 calls");
        }
        if command == "stat" {
            // The interval the signal cut short is printed.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("pin_user_pages_remote"), "{text}");
            outcome.push_str("; last interval printed");
        }
        fault(&h, &format!("{name} to {command}"), &outcome);
    }
    let signals: std::collections::BTreeSet<i32> =
        STOP_SIGNAL_OF.iter().map(|(_, sig)| *sig).collect();
    assert_eq!(
        signals.len(),
        3,
        "every stop signal is sent to some command"
    );
}

/// How soon a command told to stop while attaching must exit: it ends
/// the attach once the functions already being attached (all at once,
/// ~2 s under TCG) are, then detaches what it had, which waits for RCU-tasks grace
/// periods (3 s idle under TCG, up to 40 s with a pinning loop running:
/// none runs here). 90 s is beyond both together and still ends a hang.
const STOP_WHILE_ATTACHING_WITHIN: Duration = Duration::from_secs(90);

/// How long start-up may take before the test gives up waiting for the
/// moment to signal (attaching every probe takes ~8 s under TCG).
const START_UP_WITHIN: Duration = Duration::from_secs(120);

pub(super) fn stop_while_attaching_detaches_and_exits_cleanly() {
    let h = harness();
    let attach = h.attach_arg();
    let baseline = BpfObjects::now();
    // As `pinwatch stat &` from a script: SIGINT inherited ignored. The
    // signal comes as soon as pinwatch keeps it (first thing in main,
    // before kernel discovery), then once its first program is loaded.
    for moment in ["at start-up", "after its first program loaded"] {
        let mut cmd = Command::new(pinwatch_bin());
        cmd.args(["stat", "--interval", "10s", "--attach", &attach])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut stat = ignoring(&mut cmd, libc::SIGINT)
            .spawn()
            .expect("spawn pinwatch stat");
        let spawned = Instant::now();
        let mut loaded = 0;
        loop {
            assert!(
                stat.try_wait().unwrap().is_none(),
                "stat ended before the signal ({moment})"
            );
            assert!(
                spawned.elapsed() < START_UP_WITHIN,
                "no moment to signal ({moment})"
            );
            let now = if moment == "at start-up" {
                holds_signal(stat.id(), libc::SIGINT)
            } else {
                loaded = BpfObjects::now().beyond(&baseline).0;
                loaded > 0
            };
            if now {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = spawned.elapsed();
        signal(&stat, libc::SIGINT);
        let sent = Instant::now();
        let status = wait_within(
            &mut stat,
            STOP_WHILE_ATTACHING_WITHIN,
            &format!("stat after SIGINT {moment}"),
        );
        let took = sent.elapsed();
        // Exited: the pipes hold all there is.
        let (mut stdout, mut stderr) = (String::new(), String::new());
        stat.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        stat.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let left = settle(&baseline);
        let stopped = stderr.contains("stopped during start-up");
        fault(
            &h,
            &format!("SIGINT (inherited ignored) to stat {moment}"),
            &format!(
                "sent {:.1}s after spawn with {loaded} programs loaded; exit {} {:.1}s later; {}; \
                 {} {} {} left after",
                after.as_secs_f64(),
                status.code().unwrap_or(-1),
                took.as_secs_f64(),
                if stopped {
                    "stopped during start-up"
                } else {
                    "attached first, last interval printed"
                },
                left.0,
                left.1,
                left.2
            ),
        );
        assert_eq!(status.code(), Some(0), "{moment}: {stderr}");
        assert_eq!(left, (0, 0, 0), "stat left objects after SIGINT {moment}");
        if moment == "at start-up" {
            // Long before the first program: attaching never went on.
            assert!(stopped, "{stderr}");
        } else {
            // Stopped mid-attach, or (if attaching was done first) ended
            // as after any signal, its interval printed.
            assert!(
                stopped || (stderr.contains("attached") && !stdout.is_empty()),
                "{stderr}"
            );
        }
    }
}

pub(super) fn sigkill_leaves_nothing_in_the_kernel() {
    let h = harness();
    let attach = h.attach_arg();
    let baseline = BpfObjects::now();
    // pinwatch pins nothing: bpffs must stay empty of it.
    let bpffs = Path::new("/sys/fs/bpf");
    let _ = std::fs::create_dir_all(bpffs);
    // SAFETY: mount(2) with valid C strings; failing is fine (mounted).
    unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let pinned_before = std::fs::read_dir(bpffs).map_or(0, |d| d.count());
    // With every program the kernel allows: lifetimes too where they run.
    let stat: (&str, Vec<&str>, &str) = if h.lifetimes_on() {
        (
            "stat --lifetimes",
            vec!["stat", "--lifetimes", "--interval", "1s"],
            "attached",
        )
    } else {
        ("stat", vec!["stat", "--interval", "1s"], "attached")
    };
    let commands: [(&str, Vec<&str>, &str); 3] = [
        stat,
        (
            "record -- CMD",
            vec!["record", "-o", "/tmp/killed.json", "--", "sleep", "600"],
            "recording to",
        ),
        ("trace", vec!["trace"], "tracing GUP calls"),
    ];
    for (command, mut args, started) in commands {
        // Right after the subcommand: after `--` it would be the command's.
        args.splice(1..1, ["--attach", &attach]);
        let mut child = start_pinwatch(&args, started);
        pinning_workload();
        let running = BpfObjects::now().beyond(&baseline);
        assert!(running.0 > 0 && running.2 > 0, "{command}: {running:?}");
        // Still running when killed, or this tests nothing.
        assert!(
            child.try_wait().unwrap().is_none(),
            "{command} ended before SIGKILL"
        );
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        let left = settle(&baseline);
        let pinned = std::fs::read_dir(bpffs).map_or(0, |d| d.count()) - pinned_before;
        fault(
            &h,
            &format!("SIGKILL to {command}"),
            &format!(
                "{} programs, {} links, {} maps while running; {} {} {} left after; {pinned} pinned in bpffs",
                running.0, running.1, running.2, left.0, left.1, left.2
            ),
        );
        assert_eq!(left, (0, 0, 0), "{command} left objects after SIGKILL");
        assert_eq!(pinned, 0);
    }
    // The killed recording's command is not left behind either: it got
    // no SIGKILL, but `sleep` is its own process. Reap it if it lingers.
    let _ = Command::new("pkill").args(["-x", "sleep"]).status();
}
