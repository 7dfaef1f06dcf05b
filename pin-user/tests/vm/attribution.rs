//! Who pins and for how long: each workload's calls are attributed to its
//! own kernel call site, and io_uring's long-term pins stay outstanding
//! (per process, per caller, matching VmPin) until unregistration or
//! process exit, after which their hold time is reported.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pinwatch::{
    attribution::{
        lifetimes::{Outstanding, read_outstanding},
        name_sites,
    },
    figures::{CallerView, caller_views},
    kernel::KernelFacts,
    probes::{self, AttachMode, AttachOptions},
    snapshot::{Delta, Snapshot},
};

use crate::harness::{
    Harness, harness, id_of, io_uring_variant, measure, odirect_variant, pinwatch_bin,
    spawn_io_uring_hold,
};

fn callers(delta: &Delta) -> Vec<CallerView> {
    caller_views(&delta.callers, &name_sites(&delta.callers))
}

/// The single caller of `variant` in `delta`, failing when there are more.
fn only_caller<'a>(views: &'a [CallerView], variant: &str, what: &str) -> &'a CallerView {
    let of_variant: Vec<&CallerView> = views.iter().filter(|v| v.variant == variant).collect();
    assert_eq!(
        of_variant.len(),
        1,
        "{what}: callers of {variant}: {views:#?}"
    );
    of_variant[0]
}

#[test]
fn process_vm_readv_is_attributed_to_process_vm_rw() {
    let h = harness();
    let (report, delta) = measure(&h, &["process-vm-readv", "--calls", "6", "--pages", "4"]);
    let views = callers(&delta);
    let caller = only_caller(&views, "pin_user_pages_remote", "process_vm_readv");
    eprintln!(
        "OBSERVED attribution process_vm_readv: {} via {} calls={} pages={} sites={:?}",
        caller.caller, caller.variant, caller.calls, caller.pages, caller.sites
    );
    assert!(
        caller.caller.starts_with("process_vm_rw"),
        "caller {}",
        caller.caller
    );
    assert_eq!(caller.calls, report.calls);
    assert_eq!(caller.pages, 6 * 4);
    // Every pin was released again, each one timed.
    if h.lifetimes_on() {
        assert_eq!(caller.pins_tracked, 24, "{caller:#?}");
        assert_eq!(caller.pins_released, 24, "{caller:#?}");
        assert!(caller.hold.as_ref().and_then(|h| h.mean).is_some());
    }
    assert_eq!(delta.health[5], 0, "calls without a visible caller");
}

/// Another tracer's kretprobes on the traced functions (a kprobe-mode
/// pinwatch beside this one: kprobes whatever this agent's mechanism)
/// put the return-probe trampoline over the return address into each
/// watched call's caller. The caller is still named: the address behind
/// the trampoline is the current task's return-probe instance's (5.11+:
/// rethook nodes, or kretprobe instances on the task's list), at a kprobe
/// and in an fentry trampoline's frame alike. 5.10 keeps its instances in
/// a global table pinwatch does not read: there the trampoline is what
/// callers read, and this test pins that limit down.
#[test]
fn callers_are_named_beside_another_tracers_kretprobes() {
    let h = harness();
    let facts = KernelFacts::discover();
    let other = probes::attach(
        &facts,
        AttachOptions {
            callers: false,
            ..AttachOptions::new(AttachMode::Kprobe)
        },
    )
    .expect("the other tracer attaches");
    let (report, delta) = measure(&h, &["process-vm-readv", "--calls", "6", "--pages", "4"]);
    drop(other);
    let views = callers(&delta);
    let caller = only_caller(&views, "pin_user_pages_remote", "process_vm_readv");
    eprintln!(
        "OBSERVED attribution beside kretprobes kernel={} attach={}: {} calls={} pages={}",
        h.release,
        h.probes.status[id_of("pin_user_pages_remote")]
            .attached
            .expect("attached"),
        caller.caller,
        caller.calls,
        caller.pages
    );
    if h.version >= (5, 11) {
        assert!(
            caller.caller.starts_with("process_vm_rw"),
            "caller {}",
            caller.caller
        );
    } else {
        assert!(
            caller.caller.starts_with("kretprobe_trampoline"),
            "5.10 names the trampoline, not {}",
            caller.caller
        );
    }
    assert_eq!(caller.calls, report.calls);
    assert_eq!(caller.pages, 6 * 4);
}

#[test]
fn odirect_is_attributed_to_the_iov_iter_code() {
    let h = harness();
    let (report, delta) = measure(
        &h,
        &[
            "odirect-read",
            "--calls",
            "5",
            "--pages",
            "8",
            "--file",
            "/dev/ram0",
        ],
    );
    let views = callers(&delta);
    let variant = odirect_variant(&h);
    let caller = only_caller(&views, variant, "O_DIRECT read");
    eprintln!(
        "OBSERVED attribution odirect-read: {} via {} calls={} pages={}",
        caller.caller, caller.variant, caller.calls, caller.pages
    );
    // 6.3+ extracts pages (iov_iter_extract_pages); before, the block
    // layer got them through __iov_iter_get_pages_alloc (6.1), and 5.10's
    // iov_iter_get_pages called get_user_pages_fast itself.
    let want = if h.version >= (6, 3) {
        "iov_iter_extract_pages"
    } else if h.version >= (6, 0) {
        "__iov_iter_get_pages_alloc"
    } else {
        "iov_iter_get_pages"
    };
    assert_eq!(caller.caller, want);
    assert_eq!(caller.calls, report.calls);
    assert_eq!(caller.pages, 5 * 8);
}

/// Starts an io-uring-hold workload of one 16-page registration and
/// returns it once it holds the pins, with the delta of its calls.
struct Holding {
    child: std::process::Child,
    /// Its stdout, kept open: the workload reports there after releasing.
    out: BufReader<std::process::ChildStdout>,
    pid: u32,
}

fn start_holding(h: &Harness) -> (Holding, Delta, Snapshot) {
    let (mut child, mut out) = spawn_io_uring_hold(16, &["--wait-stdin"]);
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert!(line.contains("\"ready\""), "{line:?}");
    let before = Snapshot::read(h.probes.maps()).expect("snapshot");
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    line.clear();
    out.read_line(&mut line).expect("holding line");
    assert!(line.contains("\"holding\""), "{line:?}");
    let pid: u32 = line
        .trim()
        .trim_start_matches("{\"holding\":")
        .trim_end_matches('}')
        .parse()
        .expect("pid");
    let after = Snapshot::read(h.probes.maps()).expect("snapshot");
    (Holding { child, out, pid }, after.since(&before), after)
}

fn check_outstanding(out: &Outstanding, pid: u32, want_caller: &str) {
    let proc = out
        .by_process
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} holds nothing: {out:#?}"));
    eprintln!(
        "OBSERVED outstanding while holding: pid {pid} {} pages, VmPin {:?} pages; total {} tracked, vmstat {:?}",
        proc.pages, proc.vm_pin_pages, out.pages, out.vmstat_outstanding
    );
    assert_eq!(proc.pages, 16, "{out:#?}");
    // io_uring accounts registered buffers in the owner's pinned_vm.
    assert_eq!(proc.vm_pin_pages, Some(16), "{out:#?}");
    let caller = out
        .by_caller
        .iter()
        .find(|c| c.caller == want_caller)
        .unwrap_or_else(|| panic!("no outstanding pins of {want_caller}: {out:#?}"));
    assert!(caller.pages >= 16, "{out:#?}");
    let suspect = out.oldest.iter().find(|s| s.pid == pid);
    assert!(
        suspect.is_some(),
        "pid {pid} not among the oldest: {out:#?}"
    );
    assert!(
        out.vmstat_outstanding
            .is_some_and(|v| v >= out.pages as i64),
        "vmstat holds at least what pinwatch tracks: {out:#?}"
    );
}

/// Polls until `pid` holds no tracked pins (io_uring tears rings down in
/// a worker after exit).
fn wait_released(h: &Harness, pid: u32) -> Outstanding {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = read_outstanding(h.probes.maps()).expect("outstanding");
        if out.by_process.iter().all(|p| p.pid != pid) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn held_and_released(h: &Harness, how: &[u8]) {
    let (variant, _) = io_uring_variant(h);
    let (mut holding, delta, pinned) = start_holding(h);
    let pid = holding.pid;
    let views = callers(&delta);
    let caller = only_caller(&views, variant, "io_uring registration");
    // 5.10 pinned in io_sqe_buffer_register itself; io_pin_pages was
    // split out of it later.
    let want_caller = if h.version >= (6, 0) {
        "io_pin_pages"
    } else {
        "io_sqe_buffer_register"
    };
    assert_eq!(caller.caller, want_caller, "{views:#?}");
    let lifetimes = h.lifetimes_on();
    if lifetimes {
        assert_eq!(caller.pins_tracked, 16, "{caller:#?}");
        assert_eq!(caller.pins_released, 0, "{caller:#?}");
        let out = read_outstanding(h.probes.maps()).expect("outstanding");
        check_outstanding(&out, pid, want_caller);
    }

    std::thread::sleep(Duration::from_millis(300));
    holding
        .child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(how)
        .expect("release");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut holding.out, &mut rest);
    let status = holding.child.wait().expect("wait");
    assert!(status.success(), "{status}");
    if !lifetimes {
        return;
    }
    let out = wait_released(h, pid);
    assert!(
        out.by_process.iter().all(|p| p.pid != pid),
        "pid {pid} still holds pins after {}: {out:#?}",
        String::from_utf8_lossy(how).trim()
    );
    let released = Snapshot::read(h.probes.maps())
        .expect("snapshot")
        .since(&pinned);
    let views = callers(&released);
    let caller = only_caller(&views, variant, "io_uring release");
    let hold = caller.hold.clone().expect("hold times");
    eprintln!(
        "OBSERVED io_uring pins released by {}: {} pages, held mean {} ns (p50 <= {:?} ns)",
        String::from_utf8_lossy(how).trim(),
        caller.pins_released,
        hold.mean.unwrap_or(0),
        hold.p50
    );
    assert_eq!(caller.pins_released, 16, "{caller:#?}");
    // Held across the 300 ms pause at least.
    assert!(hold.mean.unwrap_or(0) >= 300_000_000, "{hold:#?}");
}

#[test]
fn io_uring_pins_stay_outstanding_until_unregister() {
    let h = harness();
    held_and_released(&h, b"unregister\n");
}

#[test]
fn io_uring_pins_of_an_exiting_process_are_released_at_teardown() {
    let h = harness();
    held_and_released(&h, b"exit\n");
}

#[test]
fn trace_prints_each_call_of_one_process_with_its_caller() {
    let h = harness();
    let attach = h.attach_arg();
    let mut workload = Command::new(pinwatch_bin())
        .args([
            "workload",
            "process-vm-readv",
            "--calls",
            "3",
            "--pages",
            "4",
            "--wait-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let mut out = BufReader::new(workload.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let pid: u32 = line
        .trim()
        .trim_start_matches("{\"ready\":")
        .trim_end_matches('}')
        .parse()
        .expect("pid");
    let pid_arg = pid.to_string();
    let mut trace = Command::new(pinwatch_bin())
        .args(["trace", "--pid", &pid_arg, "--json", "--attach", &attach])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trace");
    let mut trace_err = BufReader::new(trace.stderr.take().expect("stderr"));
    crate::processes::read_until(&mut trace_err, "tracing GUP calls", "trace's start line");
    workload
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    assert!(workload.wait().expect("wait").success());
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(trace.id() as i32, libc::SIGTERM) };
    let output = trace.wait_with_output().expect("trace output");
    assert!(output.status.success(), "{:?}", output.status);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let pins: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["function"] == "pin_user_pages_remote")
        .collect();
    eprintln!(
        "OBSERVED trace --pid {pid}: {} lines, {} pin_user_pages_remote; first {}",
        lines.len(),
        pins.len(),
        pins.first().map(|l| l.to_string()).unwrap_or_default()
    );
    assert!(lines.iter().all(|l| l["pid"] == pid), "only pid {pid}");
    assert_eq!(pins.len(), 3, "{lines:#?}");
    for pin in pins {
        assert_eq!(pin["nr_pages"], 4);
        assert_eq!(pin["ret"], 4);
        assert!(
            pin["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("process_vm_rw")),
            "{pin}"
        );
    }
    let releases = lines
        .iter()
        .filter(|l| l["release"] == true)
        .map(|l| l["nr_pages"].as_i64().unwrap_or(0))
        .sum::<i64>();
    assert_eq!(releases, 12, "every pinned page released: {lines:#?}");
    let mut summary = String::new();
    let _ = std::io::Read::read_to_string(&mut trace_err, &mut summary);
    assert!(summary.contains("0 dropped"), "{summary}");
}
