//! What the fleet runs beside pinwatch, checked on the host: the Prometheus
//! alert and recording rules in `deploy/prometheus/` pass promtool's checker
//! and their unit tests (every alert fires in one case and stays quiet in
//! another), and every pinwatch series they name is one pinwatch exports.
//! (A real Prometheus evaluating them against a running pinwatch is the VM
//! suite's `fleet` test.)

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// `deploy/prometheus/` of the workspace.
fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// What a command printed, stdout then stderr.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs promtool (Debian package `prometheus`, installed by `cargo xtask
/// setup`) in the rules directory; panics with what it said on failure.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool (Debian package prometheus): run `cargo xtask setup`");
    let said = said(&out);
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn promtool_checks_the_rules() {
    let said = promtool(&["check", "rules", "pinwatch-rules.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_alert_has_passing_unit_tests() {
    let said = promtool(&["test", "rules", "pinwatch-rules.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
    // Each alert is exercised by the unit tests (promtool does not check
    // that an alert has a test at all).
    let rules = std::fs::read_to_string(rules_dir().join("pinwatch-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("pinwatch-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7, "alerts found: {alerts:?}");
    for alert in alerts {
        let cases = tests
            .lines()
            .filter(|l| l.trim() == format!("alertname: {alert}"))
            .count();
        assert!(
            cases >= 2,
            "{alert}: {cases} alert_rule_test entries, want a firing and a quiet one"
        );
    }
}

/// The `pinwatch_*` names an expression text uses.
fn pinwatch_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("pinwatch_") && w.len() > "pinwatch_".len())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_rules_name_only_series_pinwatch_exports() {
    let exported: String = [
        "pinwatch__export__metrics__tests__prometheus_text_golden.snap",
        "pinwatch__export__reduced_metrics__tests__reduced_exposition_golden.snap",
    ]
    .iter()
    .map(|f| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/export/snapshots")
            .join(f);
        std::fs::read_to_string(path).unwrap()
    })
    .collect();
    let exported: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|name| name.starts_with("pinwatch_"))
        .map(str::to_string)
        .collect();
    let rules = std::fs::read_to_string(rules_dir().join("pinwatch-rules.yml")).unwrap();
    let named = pinwatch_names(&rules);
    assert!(named.len() >= 10, "names found: {named:?}");
    let unknown: Vec<&String> = named
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not exported by pinwatch: {unknown:?}");
}

/// The service unit passes `systemd-analyze verify` without a word: it
/// exits 0 even on an unknown key or a bad value, so any output fails.
/// verify insists that ExecStart's program exists, so it points at the
/// pinwatch cargo built instead of /usr/bin/pinwatch.
#[test]
fn systemd_accepts_the_service_unit() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/pinwatch.service");
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/pinwatch serve"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pinwatch.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/pinwatch", env!("CARGO_BIN_EXE_pinwatch")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd): run `cargo xtask setup`");
    let said = said(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
