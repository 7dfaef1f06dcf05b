//! The `pinwatch` binary's general commands that need no kernel probes:
//! `diff` as a CI gate, the validate catalogue, and a reduced `serve` on
//! loopback. Stopping and ending long-running commands (signals, a
//! recorded command that ignores SIGTERM, `serve` under a connection
//! flood) is in `stopping.rs`; bad input is in `faults.rs`.
//!
//! Every wait on a child here is bounded: a hung pinwatch fails its test
//! (killed) instead of hanging the run.

mod common;

use std::{collections::BTreeMap, path::Path, process::Command};

use common::{HANG, STOP_BOUND, run_to_end, scrape, start_reduced_serve};
use pinwatch::export::record::{
    Counts, FastPath, Interval, Latency, Meta, Record, SCHEMA, VariantTotals,
};

/// Runs pinwatch; returns (exit code, stderr).
fn pinwatch(args: &[&str]) -> (i32, String) {
    let out = run_to_end(args);
    (out.status.code().unwrap_or(-1), out.stderr)
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
    let out = run_to_end(&["validate", "--list"]);
    assert!(out.status.success());
    assert!(out.stdout.lines().count() >= 12, "{}", out.stdout);
    assert!(out.stdout.contains("uring-file-longterm"), "{}", out.stdout);
}

#[test]
fn reduced_serve_exports_the_mode_on_loopback() {
    let (mut serve, addr) = start_reduced_serve(&mut Command::new(env!("CARGO_BIN_EXE_pinwatch")));
    let body = scrape(&addr, HANG);
    assert!(
        body.contains("pinwatch_mode_info{mode=\"reduced\""),
        "{body}"
    );
    assert!(
        body.contains("pinwatch_vmstat_foll_pin_acquired_total"),
        "{body}"
    );
    assert!(!body.contains("pinwatch_gup_calls_total"), "{body}");
    serve.signal(libc::SIGHUP);
    assert_eq!(serve.finish(STOP_BOUND, "serve").status.code(), Some(0));
}

/// `--version` names the commit it was built from and the SHA-256 of both
/// embedded eBPF objects; `-V` is the one-line form of the same.
#[test]
fn version_names_the_revision_and_the_ebpf_objects() {
    let out = run_to_end(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = out.stdout;
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "this test runs in a git checkout");
    assert!(text.contains(&format!("git revision: {head}\n")), "{text}");
    let hashes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(": sha256:").map(|(_, h)| h))
        .collect();
    assert_eq!(hashes.len(), 2, "{text}");
    for hash in &hashes {
        assert!(
            hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{text}"
        );
    }
    let short = run_to_end(&["-V"]).stdout;
    assert_eq!(
        short.trim(),
        format!(
            "pinwatch {} (git {head}, eBPF {}/{})",
            env!("CARGO_PKG_VERSION"),
            &hashes[0][..12],
            &hashes[1][..12]
        )
    );
}
