//! `pinwatch probes` says where start-up time went: every phase from
//! reading BTF to the first read of the maps, in the order they ran.

use std::process::Command;

use crate::harness::{harness, pinwatch_bin};

/// The phases an attach that succeeds goes through, in order (the kernel's
/// discovery, then loading and attaching, then the first read).
const PHASES: [&str; 12] = [
    "BTF",
    "mechanisms",
    "features",
    "kallsyms",
    "load+verify",
    "BTF for attach",
    "attach functions",
    "attach release hook",
    "attach memlock checks",
    "attach exit watch",
    "stop handoff",
    "first read",
];

#[test]
fn probes_says_where_start_up_time_went() {
    let h = harness();
    let out = Command::new(pinwatch_bin())
        .args(["probes", "--json", "--attach", &h.attach_arg()])
        .output()
        .expect("run pinwatch probes");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "probes exited {}: {text}", out.status);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    let phases = report["startup"].as_array().expect("startup phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, PHASES, "{text}");
    let ms: Vec<f64> = phases.iter().filter_map(|p| p["ms"].as_f64()).collect();
    assert_eq!(ms.len(), PHASES.len());
    assert!(ms.iter().all(|m| m.is_finite() && *m >= 0.0), "{ms:?}");
    // Attaching makes the kernel patch code and wait for RCU: it cannot
    // take no time at all.
    assert!(ms[6] > 0.0, "attach functions took {} ms", ms[6]);
    eprintln!(
        "OBSERVED kernel={} attach={} start-up ms: {}",
        h.release,
        h.attach_arg(),
        names
            .iter()
            .zip(&ms)
            .map(|(n, m)| format!("{n} {m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
