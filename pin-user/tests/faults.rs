//! Every bad input and host-side fault pinwatch is fed, run against the
//! real binary: each must end with its documented exit code and a single
//! actionable line on stderr, with no panic and no backtrace. The observed
//! outcomes form the table committed at `docs/faults/host.snap` (insta
//! snapshot): a changed outcome fails here until the table is reviewed.
//!
//! Needs no kernel feature: the privilege cases drop to an unprivileged
//! user or shed capabilities in the child, and the seccomp case denies
//! bpf() itself, so they behave the same on any host.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
};

use pinwatch::export::record::{Counts, Meta, Record, SCHEMA};

#[path = "common/sandbox.rs"]
mod sandbox;

/// How the child is started.
#[derive(Clone, Copy)]
enum As {
    /// As the test runs (root in CI).
    Invoker,
    /// As user and group 65534 (nobody), no capabilities.
    Nobody,
    /// Root without CAP_BPF and CAP_SYS_ADMIN.
    RootWithoutCapBpf,
    /// Under a seccomp filter that fails bpf() with EPERM, as container
    /// runtimes' default profiles do.
    SeccompDeniesBpf,
}

struct Fault {
    what: &'static str,
    args: Vec<String>,
    run_as: As,
    /// Expected exit code.
    code: i32,
}

fn fault(what: &'static str, args: &[&str], code: i32) -> Fault {
    Fault {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        run_as: As::Invoker,
        code,
    }
}

/// Runs pinwatch; returns (exit code, stderr, stdout).
fn run(fault: &Fault) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinwatch"));
    cmd.args(&fault.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match fault.run_as {
        As::Invoker => {}
        As::Nobody => {
            // SAFETY: setgroups, setgid and setuid are async-signal-safe.
            unsafe { cmd.pre_exec(sandbox::become_nobody) };
        }
        As::RootWithoutCapBpf => {
            // SAFETY: only raw syscalls between fork and exec.
            unsafe { cmd.pre_exec(sandbox::drop_cap_bpf) };
        }
        As::SeccompDeniesBpf => {
            sandbox::deny_bpf(&mut cmd);
        }
    }
    let out = cmd.output().expect("run pinwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn record(reduced: bool) -> Record {
    Record {
        schema: SCHEMA.into(),
        meta: Meta {
            kernel: "6.12".into(),
            hostname: "ci".into(),
            started: "2026-11-22T00:00:00Z".into(),
            duration_s: 1.0,
            interval_s: 1.0,
            attach: BTreeMap::new(),
            command: None,
            exit_status: None,
            reduced: reduced.then(pinwatch::reduced::ReducedReason::requested),
        },
        counts: Counts::default(),
        intervals: Vec::new(),
    }
}

/// Replaces the temporary directory and the host's cgroup2 mount (which
/// differs between unified and hybrid hosts) in messages so the table is
/// stable.
fn stable(text: &str, dir: &Path) -> String {
    let cgroup2 = pinwatch::cgroups::cgroup2_root().display().to_string();
    text.replace(&dir.display().to_string(), "$TMP")
        .replace(&cgroup2, "$CGROUP2")
}

#[test]
fn every_fault_has_its_exit_code_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let good = path("good.json");
    record(false).write_json(Path::new(&good)).unwrap();
    let reduced = path("reduced.json");
    record(true).write_json(Path::new(&reduced)).unwrap();
    let full_text = std::fs::read_to_string(&good).unwrap();
    let files: [(&str, Vec<u8>); 7] = [
        ("empty.json", Vec::new()),
        ("corrupt.json", b"{not json".to_vec()),
        (
            "truncated.json",
            full_text.as_bytes()[..full_text.len() / 2].to_vec(),
        ),
        ("binary.json", vec![0xff, 0xfe, 0x00, 0x9c, 0x01]),
        (
            "foreign.json",
            br#"{"schema": "pinwatch.record/v9"}"#.to_vec(),
        ),
        ("noschema.json", br#"{"meta": {}}"#.to_vec()),
        (
            "badfields.json",
            br#"{"schema": "pinwatch.record/v1", "meta": {"kernel": 7}}"#.to_vec(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(path(name), bytes).unwrap();
    }
    let diff = |what, file: &str| fault(what, &["diff", &good, &path(file)], 2);

    let mut faults = vec![
        fault("unknown subcommand", &["frobnicate"], 2),
        fault("unknown flag", &["stat", "--frequency", "9"], 2),
        fault(
            "interval not a duration",
            &["stat", "--interval", "soon"],
            2,
        ),
        fault("interval below 10ms", &["stat", "--interval", "1ms"], 2),
        fault("count of zero", &["stat", "--count", "0"], 2),
        fault("negative count", &["stat", "--count", "-3"], 2),
        fault(
            "zero duration",
            &["record", "--duration", "0s", "-o", &path("x.json")],
            2,
        ),
        fault(
            "duration not a duration",
            &["trace", "--duration", "forever"],
            2,
        ),
        fault("unknown pid (top)", &["top", "--pid", "4000000"], 2),
        fault("unknown pid (trace)", &["trace", "--pid", "4000000"], 2),
        fault("pid not a number", &["trace", "--pid", "self"], 2),
        fault(
            "listen address not an address",
            &["serve", "--listen", "everywhere"],
            2,
        ),
        fault(
            "record command not found",
            &["record", "-o", &path("y.json"), "--", "/nonexistent/cmd"],
            2,
        ),
        fault(
            "record output directory missing",
            &[
                "record",
                "--duration",
                "1s",
                "-o",
                "/nonexistent/dir/r.json",
            ],
            2,
        ),
        fault(
            "record output is a directory",
            &["record", "--duration", "1s", "-o", "/"],
            2,
        ),
        fault(
            "top without a terminal",
            &["top", "--reduced", "--interval", "1s"],
            2,
        ),
        fault("trace unknown variant", &["trace", "--variant", "gup"], 2),
        fault(
            "cgroup missing",
            &["stat", "--cgroup", "no-such.slice", "--count", "1"],
            2,
        ),
        fault(
            "cgroup outside the cgroup2 mount",
            &["trace", "--cgroup", "/nonexistent/dir"],
            2,
        ),
        diff("diff: missing file", "missing.json"),
        fault("diff: a directory", &["diff", &good, "/"], 2),
        diff("diff: empty file", "empty.json"),
        diff("diff: corrupt JSON", "corrupt.json"),
        diff("diff: truncated recording", "truncated.json"),
        diff("diff: binary garbage", "binary.json"),
        diff("diff: other schema version", "foreign.json"),
        diff("diff: no schema", "noschema.json"),
        diff("diff: wrong field types", "badfields.json"),
        fault(
            "diff: reduced-mode recording",
            &["diff", &good, &reduced],
            2,
        ),
        fault(
            "diff: threshold not a percentage",
            &["diff", "--threshold", "lots", &good, &good],
            2,
        ),
        fault(
            "workload: zero pages",
            &["workload", "vmsplice", "--pages", "0"],
            2,
        ),
        fault(
            "workload: O_DIRECT without --file",
            &["workload", "odirect-read"],
            2,
        ),
        fault(
            "workload: offset beyond a page",
            &["workload", "futex-wake", "--offset", "5000"],
            2,
        ),
        fault(
            "validate: unknown scenario",
            &["validate", "--scenario", "nope"],
            2,
        ),
        fault(
            "validate: missing device",
            &["validate", "--device", "/nonexistent/dev"],
            2,
        ),
    ];
    for (what, args) in [
        ("not root: stat", vec!["stat", "--count", "1"]),
        ("not root: trace", vec!["trace", "--duration", "1s"]),
        ("not root: probes", vec!["probes"]),
    ] {
        let mut f = fault(what, &args, 5);
        f.run_as = As::Nobody;
        faults.push(f);
    }
    let mut f = fault(
        "root without CAP_BPF: stat",
        &["stat", "--count", "1", "--interval", "100ms"],
        5,
    );
    f.run_as = As::RootWithoutCapBpf;
    faults.push(f);
    let mut f = fault(
        "seccomp denies bpf(): stat falls back to reduced mode",
        &["stat", "--count", "1", "--interval", "100ms"],
        0,
    );
    f.run_as = As::SeccompDeniesBpf;
    faults.push(f);
    let mut f = fault(
        "seccomp denies bpf(): trace cannot run reduced",
        &["trace", "--duration", "1s"],
        3,
    );
    f.run_as = As::SeccompDeniesBpf;
    faults.push(f);

    let mut table = String::from(
        "| fault | command | exit | message (stderr's first line, else stdout's last) |\n|---|---|--:|---|\n",
    );
    let mut wrong = Vec::new();
    for f in &faults {
        let (code, stderr, stdout) = run(f);
        let stderr = stable(&stderr, dir.path());
        // `probes` reports on stdout, its verdict last.
        let message = match stderr.lines().next() {
            Some(line) => line.trim().to_string(),
            None => stdout.lines().last().unwrap_or("").trim().to_string(),
        };
        if code != f.code
            || stderr.contains("panicked")
            || stderr.contains("RUST_BACKTRACE")
            || stderr.contains("stack backtrace")
            || (code != 0 && stderr.trim().lines().count() > 3)
        {
            wrong.push(format!(
                "{}: exit {code}, want {}: {stderr}",
                f.what, f.code
            ));
        }
        let command = stable(&f.args.join(" "), dir.path());
        table.push_str(&format!(
            "| {} | `pinwatch {}` | {code} | {} |\n",
            f.what,
            command.replace('|', "\\|"),
            message.replace('|', "\\|")
        ));
    }
    assert!(
        wrong.is_empty(),
        "faults with the wrong outcome:\n{}",
        wrong.join("\n")
    );
    insta::with_settings!({
        snapshot_path => "../../docs/faults",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => "Bad input and host faults: `cargo test -p pin-user --test faults` runs each against the real binary.",
    }, {
        insta::assert_snapshot!("host", table);
    });
}
