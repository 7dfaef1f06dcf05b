//! The `pinwatch` binary's commands that need no kernel probes: `diff` as a
//! CI gate, the validate catalogue, reduced mode. Bad input is in
//! `faults.rs`.

use std::{collections::BTreeMap, path::Path, process::Command};

use pinwatch::export::record::{
    Counts, FastPath, Interval, Latency, Meta, Record, SCHEMA, VariantTotals,
};

fn pinwatch(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(args)
        .output()
        .expect("run pinwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn record(p99: u64) -> Record {
    let totals = |calls: u64| {
        let v = VariantTotals {
            calls,
            pages_requested: calls * 4,
            pages_pinned: calls * 4,
            fast_path: Some(FastPath::default()),
            latency_ns: Latency {
                p50: Some(1024),
                p99: Some(p99),
                ..Default::default()
            },
            ..Default::default()
        };
        Counts {
            totals: BTreeMap::from([("pin_user_pages_fast".to_string(), v)]),
            ..Default::default()
        }
    };
    Record {
        schema: SCHEMA.into(),
        meta: Meta {
            kernel: "6.12".into(),
            hostname: "ci".into(),
            started: "2026-11-22T00:00:00Z".into(),
            duration_s: 3.0,
            interval_s: 1.0,
            attach: BTreeMap::new(),
            command: Some(vec!["fio".into()]),
            exit_status: Some(0),
            reduced: None,
        },
        counts: totals(300),
        intervals: (0..3)
            .map(|i| Interval {
                t_s: i as f64,
                duration_s: 1.0,
                counts: totals(100),
            })
            .collect(),
    }
}

fn write(dir: &Path, name: &str, r: &Record) -> String {
    let path = dir.join(name);
    r.write_json(&path).unwrap();
    path.display().to_string()
}

#[test]
fn diff_exit_codes_gate_ci() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "base.json", &record(8192));
    let same = write(dir.path(), "same.json", &record(8192));
    let slow = write(dir.path(), "slow.json", &record(65536));
    assert_eq!(pinwatch(&["diff", &base, &same]).0, 0);
    assert_eq!(pinwatch(&["diff", &base, &slow]).0, 1);
    assert_eq!(pinwatch(&["diff", "--json", &base, &slow]).0, 1);
}

#[test]
fn validate_lists_its_catalogue_without_root() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["validate", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() >= 12, "{text}");
    assert!(text.contains("uring-file-longterm"), "{text}");
}

/// Starts pinwatch with piped output.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pinwatch")
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn reduced_stat_is_labelled_and_ends_on_each_signal() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args([
            "stat",
            "--reduced",
            "--json",
            "--count",
            "2",
            "--interval",
            "50ms",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        assert_eq!(line["mode"], "reduced");
        assert!(line["vmstat"]["nr_foll_pin_acquired"].is_u64(), "{line}");
        // No per-variant figure exists in reduced mode, not even as zero.
        assert!(line.get("variants").is_none(), "{line}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("reduced mode").count(), 1, "{stderr}");

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let child = spawn(&["stat", "--reduced", "--interval", "10s"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "signal {sig}");
        // The interval cut short by the signal is still reported.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("[reduced mode"),
            "signal {sig}"
        );
    }
}

#[test]
fn reduced_record_is_complete_whatever_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reduced.json");
    let p = path.display().to_string();
    let status = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args([
            "record",
            "--reduced",
            "-o",
            &p,
            "--interval",
            "50ms",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "the command's exit status");
    let rec = Record::read(&path).expect("a valid recording");
    assert!(rec.meta.reduced.is_some());
    assert!(rec.counts.totals.is_empty());
    assert!(rec.intervals.len() >= 3, "{}", rec.intervals.len());
    let sum: u64 = rec
        .intervals
        .iter()
        .map(|i| i.counts.vmstat.unwrap().nr_foll_pin_acquired)
        .sum();
    assert_eq!(sum, rec.counts.vmstat.unwrap().nr_foll_pin_acquired);

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        std::fs::remove_file(&path).ok();
        let child = spawn(&["record", "--reduced", "-o", &p, "--interval", "50ms"]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "signal {sig}");
        let rec = Record::read(&path).expect("complete JSON after a signal");
        assert!(!rec.intervals.is_empty(), "signal {sig}");
    }

    let csv = dir.path().join("reduced.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args([
            "record",
            "--reduced",
            "--format",
            "csv",
            "--duration",
            "100ms",
        ])
        .args(["--interval", "50ms", "-o"])
        .arg(&csv)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("interval,t_s,duration_s,nr_foll_pin_acquired,nr_foll_pin_released\n"),
        "{text}"
    );
    assert!(text.contains("\ntotal,"), "{text}");
}

#[test]
fn reduced_serve_exports_the_mode_on_loopback() {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut child = spawn(&["serve", "--reduced", "--listen", "127.0.0.1:0"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    for _ in 0..3 {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        if let Some(rest) = line
            .trim()
            .strip_prefix("pinwatch: serving metrics at http://")
        {
            addr = rest.strip_suffix("/metrics").map(str::to_string);
            break;
        }
    }
    let addr = addr.expect("serve says where it listens");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("pinwatch_mode_info{mode=\"reduced\""),
        "{body}"
    );
    assert!(
        body.contains("pinwatch_vmstat_foll_pin_acquired_total"),
        "{body}"
    );
    assert!(!body.contains("pinwatch_gup_calls_total"), "{body}");
    signal(&child, libc::SIGHUP);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
