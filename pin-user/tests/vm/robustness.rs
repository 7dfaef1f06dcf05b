//! Faults on a kernel that can trace: signals end every long-running
//! command cleanly (probes detached, recordings complete), SIGKILL leaves
//! no program, link or map of pinwatch in the kernel, a kernel that
//! refuses bpf() (seccomp) gives reduced mode with exact vmstat counts,
//! and an unmounted tracefs is mounted again. Each outcome is printed as a
//! `FAULT|...` line; `cargo xtask test` gathers them into
//! `docs/faults/vm.md`.

use std::{
    collections::BTreeSet,
    io::Read as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pinwatch::export::record::Record;

use crate::harness::{
    Harness, harness, holds_signal, ignoring, pinning_workload, pinwatch_bin, start_pinwatch,
    wait_within,
};

#[path = "../common/sandbox.rs"]
mod sandbox;

/// One row of the VM fault table.
fn fault(h: &Harness, what: &str, outcome: &str) {
    eprintln!("FAULT|{}|{}|{what}|{outcome}", h.release, h.attach_arg());
}

/// BPF object ids the kernel holds: programs, links, maps.
#[derive(Debug, PartialEq, Eq, Clone)]
struct BpfObjects {
    programs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

impl BpfObjects {
    fn now() -> Self {
        Self {
            // Objects can vanish while being listed: skip those errors.
            programs: aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .collect(),
            links: aya::programs::loaded_links()
                .filter_map(Result::ok)
                .map(|l| l.id())
                .collect(),
            maps: aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|m| m.id())
                .collect(),
        }
    }

    /// Objects in `self` that `baseline` lacks: (programs, links, maps).
    fn beyond(&self, baseline: &Self) -> (usize, usize, usize) {
        (
            self.programs.difference(&baseline.programs).count(),
            self.links.difference(&baseline.links).count(),
            self.maps.difference(&baseline.maps).count(),
        )
    }
}

/// Waits until the kernel has released everything beyond `baseline` (it
/// frees programs after an RCU grace period); returns what is left.
fn settle(baseline: &BpfObjects) -> (usize, usize, usize) {
    let started = Instant::now();
    loop {
        let left = BpfObjects::now().beyond(baseline);
        if left == (0, 0, 0) || started.elapsed() > Duration::from_secs(15) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "signal",
    }
}

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

#[test]
fn signals_detach_and_finish_every_command() {
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

#[test]
fn stop_while_attaching_detaches_and_exits_cleanly() {
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

#[test]
fn sigkill_leaves_nothing_in_the_kernel() {
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

#[test]
fn refused_bpf_gives_reduced_mode_with_exact_vmstat() {
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

#[test]
fn missing_btf_gives_reduced_mode_saying_why() {
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

#[test]
fn reduced_mode_shows_vmpin() {
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

#[test]
fn unmounted_tracefs_is_mounted_again() {
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

/// (Uid line, CapEff as a number, NoNewPrivs) of a running process.
fn credentials(pid: u32) -> (String, u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (
        field("Uid:"),
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        field("NoNewPrivs:"),
    )
}

/// Capability bit numbers set in `mask`, by name where pinwatch uses them.
fn cap_names(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| match bit {
            1 => "CAP_DAC_OVERRIDE".into(),
            21 => "CAP_SYS_ADMIN".into(),
            34 => "CAP_SYSLOG".into(),
            38 => "CAP_PERFMON".into(),
            39 => "CAP_BPF".into(),
            other => format!("cap{other}"),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

const CAP_DAC_OVERRIDE: u64 = 1 << 1;
const CAP_SYSLOG: u64 = 1 << 34;
const CAP_BPF: u64 = 1 << 39;

#[test]
fn privileges_are_shed_after_attaching() {
    let h = harness();
    let attach = h.attach_arg();
    // pinwatch measures whether map reads need CAP_BPF here; either way,
    // what it keeps must be enough to go on counting exactly.
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();

    let stat = start_pinwatch(
        &["stat", "--json", "--interval", "60s", "--attach", &attach],
        "attached",
    );
    let (uid, caps, no_new_privs) = credentials(stat.id());
    pinning_workload();
    signal(&stat, libc::SIGTERM);
    let out = stat.wait_with_output().unwrap();
    assert!(out.status.success());
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one interval");
    let calls = view["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "pin_user_pages_remote")
        .map(|v| v["calls"].clone());
    // Call sites are still named: symbols were loaded before shedding.
    let named_callers = view["callers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["variant"] == "pin_user_pages_remote")
        .filter_map(|c| c["caller"].as_str())
        .any(|name| name.starts_with("process_vm"));
    fault(
        &h,
        "privileges after attaching (stat)",
        &format!(
            "unprivileged_bpf_disabled={}; Uid {uid}; CapEff {}; NoNewPrivs {no_new_privs}; \
             counted {}/30 calls after shedding; call sites named: {named_callers}",
            disabled.trim(),
            cap_names(caps),
            calls.as_ref().map_or("none".into(), |c| c.to_string())
        ),
    );
    let reads_need_cap_bpf = uid.starts_with("0\t");
    if reads_need_cap_bpf {
        assert_eq!(caps, CAP_BPF | CAP_SYSLOG);
    } else {
        assert!(uid.starts_with("65534\t65534\t65534\t65534"), "{uid}");
        assert_eq!(caps, 0);
    }
    assert_eq!(no_new_privs, "1");
    assert_eq!(calls, Some(serde_json::json!(30)), "{view}");
    assert!(named_callers, "{view}");

    // record stays root (it reaps and signals a root child) with what
    // writing its file and reading maps need.
    let record = start_pinwatch(
        &[
            "record",
            "-o",
            "/tmp/privileges.json",
            "--attach",
            &attach,
            "--",
            "sleep",
            "2",
        ],
        "recording to",
    );
    let (uid, caps, _) = credentials(record.id());
    let out = record.wait_with_output().unwrap();
    fault(
        &h,
        "privileges after attaching (record -- CMD)",
        &format!(
            "Uid {uid}; CapEff {}; exit {:?}",
            cap_names(caps),
            out.status.code()
        ),
    );
    assert!(out.status.success());
    assert!(uid.starts_with("0\t"), "{uid}");
    let want = CAP_DAC_OVERRIDE | CAP_SYSLOG | if reads_need_cap_bpf { CAP_BPF } else { 0 };
    assert_eq!(caps, want, "{}", cap_names(caps));
    Record::read(Path::new("/tmp/privileges.json")).expect("the recording is written");
}
