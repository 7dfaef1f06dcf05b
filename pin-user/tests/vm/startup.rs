//! `pinwatch probes` says where start-up time went: every phase from
//! reading BTF to the first read of the maps, in the order they ran.

use std::process::Command;

use crate::harness::{harness, pinwatch_bin};

/// The phases an attach that succeeds goes through, in order (the kernel's
/// discovery, then loading and attaching, then the first read).
const PHASES: [&str; 13] = [
    "BTF",
    "mechanisms",
    "features",
    "kallsyms",
    "load+verify",
    "type ids for attach",
    "attach functions",
    "attach release hook",
    "attach memlock checks",
    "attach task watches",
    "attach pending fold",
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
    assert!(ms[7] > 0.0, "attach functions took {} ms", ms[7]);
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

/// `--attach kprobe-multi` puts every present function on the two
/// kprobe_multi links where the kernel has them with returns on rethook
/// (5.18 to 6.13, built with fprobe), and elsewhere refuses in one line that names the way
/// out; start-up time is printed beside the harness's own mechanism's for
/// the note (a benchmark, not asserted).
#[test]
fn kprobe_multi_attaches_every_function_at_once_or_says_why_not() {
    let h = harness();
    let out = Command::new(pinwatch_bin())
        .args(["probes", "--json", "--attach", "kprobe-multi"])
        .output()
        .expect("run pinwatch probes");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    // The links need fprobe, which the kernel's build configuration (the
    // VM carries it) says; Debian builds 6.1 without it.
    let fprobe = pinwatch::kernel::config::built_with(&h.release, "CONFIG_FPROBE")
        .expect("the kernel's build configuration");
    let supported = fprobe && h.version >= (5, 18) && h.version < (6, 14);
    if !supported {
        assert!(
            !out.status.success(),
            "probes exited 0 on {}: {text}",
            h.release
        );
        let error = report["error"].as_str().expect("error said");
        assert!(
            error.contains("--attach kprobe-multi") && error.contains("--attach auto"),
            "{error}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        eprintln!(
            "OBSERVED kernel={} kprobe-multi refused: {error}",
            h.release
        );
        return;
    }
    assert!(
        out.status.success(),
        "probes exited {}: {text} {stderr}",
        out.status
    );
    let functions = report["probes"].as_array().expect("probes");
    let mut on_links = 0;
    for f in functions {
        if f["symbol"].is_null() || f["not_needed"] == true {
            continue;
        }
        // Where the release hook counts a release function (6.12's
        // unpin_user_folio), that function has the hook's kprobe.
        if report["release_at_hook"]["Ok"] == f["function"] {
            assert_eq!(report["release_hook"]["Ok"], "gup_put_folio via kprobe");
            assert_eq!(f["attached"], "kprobe", "{f}");
            continue;
        }
        assert_eq!(f["attached"], "kprobe_multi", "{f}");
        on_links += 1;
    }
    assert!(on_links >= 12, "{on_links} functions on the links: {text}");
    assert!(
        report["self_check"]["Ok"].is_string(),
        "self-check: {}",
        report["self_check"]
    );
    let attach_ms = report["startup"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "attach functions"))
        .and_then(|p| p["ms"].as_f64())
        .expect("attach functions phase");
    eprintln!(
        "OBSERVED kernel={} kprobe-multi: {on_links} functions attached in {attach_ms:.0} ms",
        h.release
    );
}
