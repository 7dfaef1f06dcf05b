//! What the fleet runs beside pinwatch, checked on the host: the Prometheus
//! alert and recording rules in `deploy/prometheus/` pass promtool's checker
//! and their unit tests (every alert fires in one case and stays quiet in
//! another), and every pinwatch series they name is one pinwatch exports;
//! the systemd unit passes systemd-analyze; the Kubernetes DaemonSet in
//! `deploy/kubernetes/` validates strictly against the Kubernetes schemas
//! (kubernetes-validate) and mounts and holds only what pinwatch needs.
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

/// `deploy/kubernetes/pinwatch-daemonset.yaml`.
fn daemonset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/pinwatch-daemonset.yaml")
}

/// The kubernetes-validate virtualenv `cargo xtask setup` (and `cargo
/// xtask test`) installs.
fn kubernetes_validate_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/kubernetes-validate");
    assert!(
        venv.join("bin/kubernetes-validate").exists(),
        "kubernetes-validate missing from {}: run `cargo xtask setup`",
        venv.display()
    );
    venv
}

#[test]
fn the_daemonset_validates_strictly_against_the_kubernetes_schemas() {
    let out = Command::new(kubernetes_validate_venv().join("bin/kubernetes-validate"))
        .arg("--strict")
        .arg(daemonset())
        .output()
        .expect("run kubernetes-validate");
    let said = said(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("passed for resource daemonset/pinwatch"),
        "{said}"
    );
}

/// The DaemonSet as JSON (through the validator's own YAML parser).
fn daemonset_json() -> serde_json::Value {
    let out = Command::new(kubernetes_validate_venv().join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(daemonset())
        .output()
        .expect("run the virtualenv's python");
    assert!(out.status.success(), "{}", said(&out));
    serde_json::from_slice(&out.stdout).expect("JSON from the YAML")
}

/// It mounts what pinwatch reads from the host (BTF, tracefs, the cgroup
/// filesystem), read-only, and nothing else; it runs with the README's
/// capabilities only, not privileged, in the host's pid namespace.
#[test]
fn the_daemonset_mounts_and_holds_only_what_pinwatch_needs() {
    let ds = daemonset_json();
    let pod = &ds["spec"]["template"]["spec"];
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            v["hostPath"]["path"]
                .as_str()
                .expect("only hostPath volumes")
        })
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from(["/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/tracing"])
    );
    assert_eq!(
        pod["hostPID"], true,
        "per-process rows need the host's /proc"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert_eq!(mounts.len(), host_paths.len());
    for m in mounts {
        assert_eq!(m["readOnly"], true, "{m}");
        assert!(host_paths.contains(m["mountPath"].as_str().unwrap()), "{m}");
    }
    let security = &c["securityContext"];
    assert_ne!(security["privileged"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "SYSLOG"])
    );
    // serve listens where the scrape reaches it: the pod's port.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args, ["serve", "--listen", "0.0.0.0:9435"]);
    assert_eq!(c["ports"][0]["containerPort"], 9435);
}
