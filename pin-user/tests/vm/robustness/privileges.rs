//! Privileges after attaching: stat sheds root and every capability it
//! can (keeping what map reads need here), record keeps root with what its
//! file and map reads need, and both go on counting exactly.

use std::path::Path;

use pinwatch::export::record::Record;

use super::{fault, signal};
use crate::harness::{harness, pinning_workload};
use crate::processes::start_pinwatch;

/// (Uid line, CapEff as a number, NoNewPrivs) of a running process.
fn credentials(pid: u32) -> (String, u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (
        field("Uid:"),
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        field("NoNewPrivs:"),
    )
}

/// Capability bit numbers set in `mask`, by name where pinwatch uses them.
fn cap_names(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| match bit {
            1 => "CAP_DAC_OVERRIDE".into(),
            21 => "CAP_SYS_ADMIN".into(),
            34 => "CAP_SYSLOG".into(),
            38 => "CAP_PERFMON".into(),
            39 => "CAP_BPF".into(),
            other => format!("cap{other}"),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Capability bits pinwatch keeps, as in CapEff.
const CAP_DAC_OVERRIDE: u64 = 1 << 1;
const CAP_SYSLOG: u64 = 1 << 34;
const CAP_BPF: u64 = 1 << 39;

pub(super) fn privileges_are_shed_after_attaching() {
    let h = harness();
    let attach = h.attach_arg();
    // pinwatch measures whether map reads need CAP_BPF here; either way,
    // what it keeps must be enough to go on counting exactly.
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();

    let stat = start_pinwatch(
        &["stat", "--json", "--interval", "60s", "--attach", &attach],
        "attached",
    );
    let (uid, caps, no_new_privs) = credentials(stat.id());
    pinning_workload();
    signal(&stat, libc::SIGTERM);
    let out = stat.wait_with_output().unwrap();
    assert!(out.status.success());
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one interval");
    let calls = view["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "pin_user_pages_remote")
        .map(|v| v["calls"].clone());
    // Call sites are still named: symbols were loaded before shedding.
    let named_callers = view["callers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["variant"] == "pin_user_pages_remote")
        .filter_map(|c| c["caller"].as_str())
        .any(|name| name.starts_with("process_vm"));
    fault(
        &h,
        "privileges after attaching (stat)",
        &format!(
            "unprivileged_bpf_disabled={}; Uid {uid}; CapEff {}; NoNewPrivs {no_new_privs}; \
             counted {}/30 calls after shedding; call sites named: {named_callers}",
            disabled.trim(),
            cap_names(caps),
            calls.as_ref().map_or("none".into(), |c| c.to_string())
        ),
    );
    let reads_need_cap_bpf = uid.starts_with("0\t");
    if reads_need_cap_bpf {
        assert_eq!(caps, CAP_BPF | CAP_SYSLOG);
    } else {
        assert!(uid.starts_with("65534\t65534\t65534\t65534"), "{uid}");
        assert_eq!(caps, 0);
    }
    assert_eq!(no_new_privs, "1");
    assert_eq!(calls, Some(serde_json::json!(30)), "{view}");
    assert!(named_callers, "{view}");

    // record stays root (it reaps and signals a root child) with what
    // writing its file and reading maps need.
    let record = start_pinwatch(
        &[
            "record",
            "-o",
            "/tmp/privileges.json",
            "--attach",
            &attach,
            "--",
            "sleep",
            "2",
        ],
        "recording to",
    );
    let (uid, caps, _) = credentials(record.id());
    let out = record.wait_with_output().unwrap();
    fault(
        &h,
        "privileges after attaching (record -- CMD)",
        &format!(
            "Uid {uid}; CapEff {}; exit {:?}",
            cap_names(caps),
            out.status.code()
        ),
    );
    assert!(out.status.success());
    assert!(uid.starts_with("0\t"), "{uid}");
    let want = CAP_DAC_OVERRIDE | CAP_SYSLOG | if reads_need_cap_bpf { CAP_BPF } else { 0 };
    assert_eq!(caps, want, "{}", cap_names(caps));
    Record::read(Path::new("/tmp/privileges.json")).expect("the recording is written");
}
