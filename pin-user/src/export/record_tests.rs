//! Recordings: JSON and CSV goldens, round trips, older, foreign and broken files.

use std::collections::BTreeMap;

use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats, ReleaseStats};

use super::*;
use crate::{snapshot::Delta, vmstat::PinCounters};

fn delta(scale: u64) -> Delta {
    let mut gup = vec![GupStats::ZERO; GUP_FUNC_COUNT];
    let fast = &mut gup[6]; // pin_user_pages_fast
    fast.calls = 10 * scale;
    fast.pages_requested = 160 * scale;
    fast.pages_returned = 160 * scale;
    fast.fallbacks = scale;
    fast.fast_pages = 150 * scale;
    fast.slow_pages = 10 * scale;
    fast.latency_sum_ns = 9000 * scale;
    fast.latency_log2[9] = 9 * scale;
    fast.latency_log2[12] = scale;
    let remote = &mut gup[8]; // pin_user_pages_remote
    remote.calls = 2 * scale;
    remote.pages_requested = 8 * scale;
    remote.pages_returned = 2 * scale;
    remote.partial = scale;
    remote.errors = scale;
    remote.errno[14] = scale;
    remote.latency_sum_ns = 50_000 * scale;
    remote.latency_log2[14] = 2 * scale;
    let mut release = vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT];
    release[6] = ReleaseStats {
        calls: 160 * scale,
        pages: 160 * scale,
    };
    let container = "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    Delta {
        seconds: scale as f64,
        sites: crate::attribution::sample_callers().1,
        cgroup_names: BTreeMap::from([(4242, crate::cgroups::CgroupIdentity::of_path(container))]),
        counts: crate::snapshot::CounterSet {
            gup,
            release,
            procs: Default::default(),
            cgroups: BTreeMap::from([(
                4242,
                crate::snapshot::CgroupTotals {
                    calls: 12 * scale,
                    pages: 162 * scale,
                    pinned: 162 * scale,
                    released: 160 * scale,
                    errors: scale,
                    first_ns: 0,
                },
            )]),
            health: [0; pin_common::HEALTH_COUNT],
            misses: Default::default(),
            callers: crate::attribution::sample_callers().0,
            failures: BTreeMap::from([(
                pin_common::failures::FailureKey {
                    caller: 0,
                    func: 8,
                    outcome: -14,
                    flags: pin_common::failures::FAILED_WRITE,
                    _pad: 0,
                },
                pin_common::failures::FailureStats {
                    calls: scale,
                    pages_requested: 4 * scale,
                    max_requested: 4,
                    last_tgid: 7,
                    ..Default::default()
                },
            )]),
            denials: BTreeMap::from([(
                pin_common::limits::DenialKey { tgid: 7, check: 0 },
                pin_common::limits::Denial {
                    denials: scale,
                    pages: 200,
                    counter: 200,
                    limit_bytes: 1 << 20,
                    ret: -12,
                    vm_pinned: 200,
                    ..Default::default()
                },
            )]),
            evicted: Default::default(),
            balance: Default::default(),
            vmstat: Some(PinCounters {
                nr_foll_pin_acquired: 162 * scale,
                nr_foll_pin_released: 160 * scale,
            }),
        },
    }
}

fn record() -> Record {
    Record {
        schema: SCHEMA.into(),
        meta: Meta {
            kernel: "6.12.117+deb12-cloud-amd64".into(),
            hostname: "ci".into(),
            started: "2026-11-22T06:00:00Z".into(),
            duration_s: 2.0,
            interval_s: 1.0,
            attach: BTreeMap::from([("pin_user_pages_fast".into(), "fentry".into())]),
            command: Some(vec!["fio".into(), "job.fio".into()]),
            exit_status: Some(0),
            reduced: None,
        },
        counts: Counts::from_delta(&delta(2)),
        intervals: (0..2)
            .map(|i| Interval {
                t_s: i as f64,
                duration_s: 1.0,
                counts: Counts::from_delta(&delta(1)),
            })
            .collect(),
    }
}

#[test]
fn json_golden_and_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    record().write_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    insta::assert_snapshot!(text);
    assert_eq!(Record::read(&path).unwrap(), record());
}

#[test]
fn recordings_from_before_per_cgroup_counts_still_read() {
    let mut json = serde_json::to_value(record()).unwrap();
    let older = ["cgroups", "failures", "limit_verdicts"];
    for field in older {
        json.as_object_mut().unwrap().remove(field);
    }
    for interval in json["intervals"].as_array_mut().unwrap() {
        for field in older {
            interval.as_object_mut().unwrap().remove(field);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let old = Record::read(&path).unwrap();
    assert!(old.counts.cgroups.is_empty());
    assert!(old.counts.failures.is_empty() && old.counts.limit_verdicts.is_empty());
    assert_eq!(old.counts.totals, record().counts.totals);
}

#[test]
fn csv_golden() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    record().write_csv(&path).unwrap();
    insta::assert_snapshot!(std::fs::read_to_string(&path).unwrap());
}

#[test]
fn foreign_and_broken_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("f.json");
    std::fs::write(&foreign, r#"{"schema":"pinwatch.record/v2","meta":{}}"#).unwrap();
    assert!(matches!(
        Record::read(&foreign),
        Err(RecordError::Schema { .. })
    ));
    let broken = dir.path().join("b.json");
    std::fs::write(&broken, r#"{"schema":"pinwatch.record/v1","meta":"#).unwrap();
    assert!(matches!(
        Record::read(&broken),
        Err(RecordError::Parse { .. })
    ));
    assert!(matches!(
        Record::read(&dir.path().join("missing")),
        Err(RecordError::Io { .. })
    ));
}

proptest::proptest! {
    /// Arbitrary bytes never panic the reader.
    #[test]
    fn reader_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, &bytes).unwrap();
        let _ = Record::read(&path);
    }
}
