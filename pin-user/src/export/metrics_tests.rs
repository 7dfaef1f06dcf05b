//! The exposition's golden files, content negotiation and promtool's
//! verdict, on a fixed input.

use std::{collections::BTreeMap, io::Write as _, process::Stdio, time::Instant};

use pin_common::ReleaseStats;

use super::*;
use crate::{
    probes::{Mechanism, ProbeStatus},
    snapshot::ProcTotals,
    vmstat::PinCounters,
};

fn id(name: &str) -> usize {
    FUNCS.iter().position(|f| f.name == name).unwrap()
}

/// A pod's container and the `[irq]` row: names and cumulative counters.
#[allow(clippy::type_complexity)]
fn cgroups() -> (
    BTreeMap<u64, crate::cgroups::CgroupIdentity>,
    BTreeMap<u64, crate::snapshot::CgroupTotals>,
) {
    let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1d2c3e_4f50_4a6b_8c7d_9e0f1a2b3c4d.slice/cri-containerd-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope";
    let cgroup = |calls, pages, released, errors| crate::snapshot::CgroupTotals {
        calls,
        pages,
        pinned: pages,
        released,
        errors,
        first_ns: 0,
    };
    let names = BTreeMap::from([
        (0, crate::cgroups::CgroupIdentity::of_path("[irq]")),
        (9001, crate::cgroups::CgroupIdentity::of_path(pod)),
    ]);
    let totals = BTreeMap::from([(0, cgroup(0, 0, 100, 0)), (9001, cgroup(13, 152, 50, 2))]);
    (names, totals)
}

/// fio, holding 152 pages under an 8 MiB limit.
fn fio_holder() -> crate::limits::Holder {
    crate::limits::Holder {
        pid: 7,
        comm: "fio".into(),
        memlock: crate::limits::MemlockState {
            limit: Some(8 << 20),
            limit_hard: None,
            locked: 0,
            pinned: 152 << 12,
        },
    }
}

/// One kind of failed call: 3 EFAULT returns of a LONGTERM remote pin.
fn failures() -> BTreeMap<pin_common::failures::FailureKey, pin_common::failures::FailureStats> {
    BTreeMap::from([(
        pin_common::failures::FailureKey {
            caller: 0,
            func: 8,
            outcome: -14,
            flags: pin_common::failures::FAILED_LONGTERM,
            _pad: 0,
        },
        pin_common::failures::FailureStats {
            calls: 3,
            pages_requested: 48,
            ..Default::default()
        },
    )])
}

/// Two io_uring refusals of one process.
fn denials() -> BTreeMap<pin_common::limits::DenialKey, pin_common::limits::Denial> {
    BTreeMap::from([(
        pin_common::limits::DenialKey { tgid: 7, check: 0 },
        pin_common::limits::Denial {
            denials: 2,
            pages: 512,
            limit_bytes: 1 << 20,
            ret: -12,
            ..Default::default()
        },
    )])
}

/// A fixed input: two variants with traffic, one error, releases.
pub(crate) fn input() -> MetricsInput {
    let mut gup = vec![GupStats::ZERO; GUP_FUNC_COUNT];
    let fast = &mut gup[id("pin_user_pages_fast")];
    fast.calls = 10;
    fast.pages_requested = 160;
    fast.pages_returned = 150;
    fast.partial = 1;
    fast.fallbacks = 2;
    fast.fast_pages = 120;
    fast.slow_pages = 30;
    fast.latency_sum_ns = 12_000;
    fast.latency_log2[9] = 8;
    fast.latency_log2[13] = 2;
    let remote = &mut gup[id("pin_user_pages_remote")];
    remote.calls = 3;
    remote.pages_requested = 8;
    remote.pages_returned = 2;
    remote.errors = 2;
    remote.errno[14] = 2;
    remote.latency_sum_ns = 90_000;
    remote.latency_log2[15] = 3;
    let mut release = vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT];
    release[id("unpin_user_folio") - GUP_FUNC_COUNT] = ReleaseStats {
        calls: 150,
        pages: 150,
    };
    let probes = FUNCS
        .iter()
        .enumerate()
        .map(|(i, f)| ProbeStatus {
            id: i as u32,
            function: f.name,
            role: "r",
            symbol: (f.name != "pin_user_pages_fast_only").then(|| f.name.to_string()),
            attached: match f.name {
                "pin_user_pages_fast_only" => None,
                "pin_user_pages_remote" => Some(Mechanism::Kprobe),
                _ => Some(Mechanism::Fentry),
            },
            not_needed: false,
            notes: vec![],
        })
        .collect();
    let (cgroup_names, cgroups) = cgroups();
    MetricsInput {
        sites: crate::attribution::sample_callers().1,
        cgroup_names,
        memlock: (vec![fio_holder()], 3),
        snapshot: Snapshot {
            taken: Instant::now(),
            counts: crate::snapshot::CounterSet {
                gup,
                release,
                procs: crate::snapshot::ProcTable::from_iter([(
                    7,
                    ProcTotals {
                        comm: "fio".into(),
                        calls: 13,
                        pages: 152,
                        pinned: 152,
                        released: 150,
                        first_ns: 0,
                    },
                )]),
                cgroups,
                health: [0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
                misses: crate::probes::misses::sample(),
                callers: crate::attribution::sample_callers().0,
                failures: failures(),
                denials: denials(),
                balance: pin_common::PinBalance {
                    pinned: 152,
                    released: 150,
                    gup_released: 16,
                    irq_released: 0,
                },
                evicted: crate::snapshot::Evictions {
                    procs: 21808,
                    callers: 3,
                    cgroups: 1,
                    failures: 0,
                },
                vmstat: Some(PinCounters {
                    nr_foll_pin_acquired: 1000,
                    nr_foll_pin_released: 990,
                }),
            },
        },
        probes,
        map_fill: vec![("PROCS", 1, 8192)],
        map_memory: vec![crate::probes::footprint::MapFootprint {
            name: "PROCS".into(),
            max_entries: 8192,
            bytes: 1_049_536,
        }],
        run_stats: vec![("pin_user_pages_fast", 250_000, 20)],
        agent_heap_bytes: 3_145_728,
    }
}

#[test]
fn prometheus_text_golden() {
    insta::assert_snapshot!(prometheus_text(&openmetrics(input())));
}

#[test]
fn openmetrics_golden() {
    let om = openmetrics(input());
    assert!(om.ends_with("# EOF\n"));
    insta::assert_snapshot!(om);
}

#[test]
fn content_negotiation() {
    assert!(wants_openmetrics_header(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )));
    assert!(!wants_openmetrics_header(Some("text/plain")));
    assert!(!wants_openmetrics_header(None));
}

fn wants_openmetrics_header(accept: Option<&str>) -> bool {
    crate::export::serve::wants_openmetrics(accept)
}

/// The real parser and linter: promtool (Debian package `prometheus`,
/// installed by `cargo xtask setup`).
#[test]
fn promtool_accepts_the_exposition() {
    let text = prometheus_text(&openmetrics(input()));
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus): run `cargo xtask setup`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}
