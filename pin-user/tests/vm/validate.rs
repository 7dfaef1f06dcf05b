//! `pinwatch validate`: every scenario of the catalogue must agree with the
//! reference model (or match a named deviation) on every kernel and attach
//! mechanism of the matrix; a scenario that cannot run is a failure here.

use std::process::Command;

use serde_json::Value;

use crate::harness::{harness, pinwatch_bin};

#[test]
fn validate_agrees_with_the_model() {
    // Held so that no other test's workload moves /proc/vmstat meanwhile.
    let h = harness();
    let out = Command::new(pinwatch_bin())
        .args(["validate", "--json", "--attach", &h.attach_arg()])
        .output()
        .expect("run pinwatch validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("validate --json output: {e}; stderr: {stderr}"));
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let mut wrong = Vec::new();
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        let verdict = &s["verdict"];
        let kind = verdict["verdict"].as_str().unwrap_or("?");
        let calls: usize = s["steps"].as_array().map_or(0, |steps| {
            steps
                .iter()
                .map(|st| st["observed"]["calls"].as_array().map_or(0, Vec::len))
                .sum()
        });
        let fields: usize = s["steps"].as_array().map_or(0, |steps| {
            steps
                .iter()
                .map(|st| st["fields"].as_array().map_or(0, Vec::len))
                .sum()
        });
        // Faults the measured thread took itself (not GUP's, not compared):
        // shown so that a run where they occur is visible.
        let own_faults: u64 = s["steps"].as_array().map_or(0, |steps| {
            steps
                .iter()
                .filter_map(|st| st["observed"]["exception_faults"].as_u64())
                .sum()
        });
        eprintln!(
            "OBSERVED validate {name}: {kind} ({fields} fields, {calls} GUP calls, {own_faults} own faults) {}",
            verdict["detail"]
        );
        if kind != "agrees" && kind != "known-deviation" {
            wrong.push(format!("{name}: {kind} {}", verdict["detail"]));
        }
    }
    assert!(scenarios.len() >= 12, "only {} scenarios", scenarios.len());
    assert!(
        wrong.is_empty(),
        "scenarios that do not agree:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "validate exit status; stderr: {stderr}"
    );
    // Per-call records carry decoded flags: io_uring's pin is LONGTERM|WRITE.
    let uring = scenarios
        .iter()
        .find(|s| s["name"] == "uring-memfd-longterm")
        .expect("uring scenario");
    let flags = &uring["steps"][0]["observed"]["calls"][0]["flag_names"];
    assert!(
        flags
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "LONGTERM") && f.iter().any(|x| x == "WRITE")),
        "io_uring registration flags: {flags}"
    );
}
