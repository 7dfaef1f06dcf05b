//! The `pinwatch` binary's exit codes and one-line errors for commands
//! that need no kernel probes: `diff` as a CI gate, bad input everywhere.

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
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "base.json", &record(8192));
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, r#"{"schema": "pinwatch.record/v9"}"#).unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["diff".into(), base.clone(), garbage.display().to_string()],
        vec!["diff".into(), base.clone(), foreign.display().to_string()],
        vec!["diff".into(), base.clone(), "/nonexistent/r.json".into()],
        vec![
            "diff".into(),
            "--threshold".into(),
            "lots".into(),
            base.clone(),
            base.clone(),
        ],
        vec!["stat".into(), "--interval".into(), "soon".into()],
        vec![
            "workload".into(),
            "vmsplice".into(),
            "--pages".into(),
            "0".into(),
        ],
        vec!["workload".into(), "odirect-read".into()],
        vec!["top".into(), "--pid".into(), "4000000".into()],
        vec!["validate".into(), "--scenario".into(), "nope".into()],
        vec![
            "validate".into(),
            "--device".into(),
            "/nonexistent/dev".into(),
        ],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = pinwatch(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.trim().lines().count() <= 3,
            "{args:?} error is long: {stderr}"
        );
    }
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
