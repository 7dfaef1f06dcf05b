//! Recordings: the `pinwatch.record/v1` JSON document (see
//! `docs/record-schema.md`), built from snapshots, written atomically, read
//! back for `diff`, and flattened to CSV.

use std::{collections::BTreeMap, io::Write as _, path::Path};

use serde::{Deserialize, Serialize};

pub use crate::figures::Latency;
use crate::{
    figures::{CgroupFigures, ReleaseFigures, VariantFigures},
    snapshot::Delta,
    vmstat::PinCounters,
};

/// The schema identifier this version writes and reads.
pub const SCHEMA: &str = "pinwatch.record/v1";

/// Fast-path figures of one variant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FastPath {
    /// Calls that fell back to the slow path.
    pub fallbacks: u64,
    /// Pages taken by the fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path after a fallback.
    pub slow_pages: u64,
}

/// One variant's totals over a recording or an interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantTotals {
    /// Outermost calls.
    pub calls: u64,
    /// Pages requested.
    pub pages_requested: u64,
    /// Pages returned (pinned, or referenced for FOLL_GET variants).
    pub pages_pinned: u64,
    /// Calls returning 0 < ret < nr_pages.
    pub partial: u64,
    /// Calls returning 0.
    pub zero: u64,
    /// Error returns by errno name.
    pub errors: BTreeMap<String, u64>,
    /// Fast path split (fast variants only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fast_path: Option<FastPath>,
    /// Latency.
    pub latency_ns: Latency,
}

impl From<&VariantFigures> for VariantTotals {
    /// The recorded form of a variant's figures (the schema's field names).
    fn from(v: &VariantFigures) -> Self {
        VariantTotals {
            calls: v.calls,
            pages_requested: v.pages_requested,
            pages_pinned: v.pages,
            partial: v.partial,
            zero: v.zero,
            errors: v.errno.clone(),
            fast_path: v.fast_path.then_some(FastPath {
                fallbacks: v.fallbacks,
                fast_pages: v.fast_pages,
                slow_pages: v.slow_pages,
            }),
            latency_ns: v.latency.clone(),
        }
    }
}

impl VariantTotals {
    /// The figures of a recorded variant, named `variant` (the catalogue's
    /// name when it knows the function, so its methods apply).
    pub fn figures(&self, variant: &str) -> VariantFigures {
        VariantFigures {
            variant: pin_common::FUNCS
                .iter()
                .find(|f| f.name == variant)
                .map_or("", |f| f.name),
            fast_path: self.fast_path.is_some(),
            calls: self.calls,
            pages_requested: self.pages_requested,
            pages: self.pages_pinned,
            partial: self.partial,
            zero: self.zero,
            errors: self.error_count(),
            errno: self.errors.clone(),
            fallbacks: self.fast_path.as_ref().map_or(0, |f| f.fallbacks),
            fast_pages: self.fast_path.as_ref().map_or(0, |f| f.fast_pages),
            slow_pages: self.fast_path.as_ref().map_or(0, |f| f.slow_pages),
            latency: self.latency_ns.clone(),
        }
    }

    /// Total error returns.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One release function's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnpinTotals {
    /// Outermost calls.
    pub calls: u64,
    /// Pages released.
    pub pages: u64,
}

/// What a recording (or one of its intervals) saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Per variant (kernel function name), only those that were called.
    pub totals: BTreeMap<String, VariantTotals>,
    /// Per release function, only those that were called.
    pub unpin: BTreeMap<String, UnpinTotals>,
    /// /proc/vmstat pin counter deltas (host-wide even when following a
    /// command).
    pub vmstat: Option<PinCounters>,
    /// Per calling kernel function and variant (absent in recordings made
    /// before caller attribution, or with `--no-callers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<crate::figures::CallerView>,
    /// Per cgroup that called or released, busiest first (absent in
    /// recordings made before per-cgroup counting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<CgroupFigures>,
    /// Failed and short get/pin calls by call site, variant, outcome and
    /// flags (absent when none, and in older recordings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<crate::figures::FailureFigures>,
    /// Memlock charges the kernel refused, with what it compared (absent
    /// when none, and in older recordings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limit_verdicts: Vec<crate::figures::Verdict>,
    /// Reduced mode only: processes with the most `VmPin` at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_processes: Vec<crate::reduced::PinnedView>,
}

impl Counts {
    /// From a counter delta: the figures of the variants and release
    /// functions that were called, and the callers.
    pub fn from_delta(d: &Delta) -> Self {
        Counts {
            totals: d
                .gup
                .iter()
                .enumerate()
                .filter(|(_, g)| g.calls > 0)
                .map(|(id, g)| {
                    let v = VariantFigures::new(id, g);
                    (v.variant.to_string(), VariantTotals::from(&v))
                })
                .collect(),
            unpin: d
                .release
                .iter()
                .enumerate()
                .filter(|(_, r)| r.calls > 0)
                .map(|(i, r)| {
                    let r = ReleaseFigures::new(i, r);
                    let totals = UnpinTotals {
                        calls: r.calls,
                        pages: r.pages,
                    };
                    (r.function.to_string(), totals)
                })
                .collect(),
            vmstat: d.vmstat,
            callers: crate::figures::caller_views(&d.callers, &d.sites),
            cgroups: CgroupFigures::busiest(&d.cgroups, &d.cgroup_names, usize::MAX),
            failures: crate::figures::failure_views(&d.failures, &d.sites),
            limit_verdicts: crate::figures::verdicts(&d.denials),
            pinned_processes: Vec::new(),
        }
    }
}

/// One sampling interval of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Start, in seconds since the recording started.
    pub t_s: f64,
    /// Length in seconds.
    pub duration_s: f64,
    /// What it saw.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Where and how a recording was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Kernel release.
    pub kernel: String,
    /// Host name.
    pub hostname: String,
    /// Start time, RFC 3339 (UTC).
    pub started: String,
    /// Length in seconds.
    pub duration_s: f64,
    /// Sampling interval in seconds.
    pub interval_s: f64,
    /// Mechanism per traced function ("fentry", "kprobe"; absent ones
    /// left out).
    pub attach: BTreeMap<String, String>,
    /// The recorded command, when one was given (then only its process
    /// tree counts), else null (the whole host).
    pub command: Option<Vec<String>>,
    /// The command's exit status, when one was given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_status: Option<i32>,
    /// Present when recorded in reduced mode (no probes): why, and what
    /// would enable full tracing. Such a recording has only `vmstat` and
    /// `pinned_processes`, host-wide even when a command was given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reduced: Option<crate::reduced::ReducedReason>,
}

/// A whole recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Where and how.
    pub meta: Meta,
    /// What the whole recording saw.
    #[serde(flatten)]
    pub counts: Counts,
    /// Per sampling interval.
    pub intervals: Vec<Interval>,
}

/// The columns every CSV row starts with: which interval ("total" for the
/// whole recording), when it started and how long it was.
const ROW_KEY: [&str; 3] = ["interval", "t_s", "duration_s"];

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("{path} is not a pinwatch recording: {source}")]
    Parse {
        /// Path.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A recording of another schema version.
    #[error("{path} has schema {found:?}; this pinwatch reads {SCHEMA:?}")]
    Schema {
        /// Path.
        path: String,
        /// What the file says.
        found: String,
    },
}

impl Record {
    /// Reads and validates a recording.
    pub fn read(path: &Path) -> Result<Record, RecordError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RecordError::Io {
            path: p.clone(),
            source,
        })?;
        // Check the schema first, so a foreign version gets a clear error
        // rather than a field-level parse error.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| RecordError::Parse {
                path: p.clone(),
                source,
            })?;
        let found = value
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or("(none)");
        if found != SCHEMA {
            return Err(RecordError::Schema {
                path: p,
                found: found.to_string(),
            });
        }
        serde_json::from_value(value).map_err(|source| RecordError::Parse { path: p, source })
    }

    /// Writes JSON atomically: a temporary file in the same directory,
    /// then rename, so readers never see a partial recording.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, |f| {
            serde_json::to_writer_pretty(&mut *f, self)?;
            f.write_all(b"\n")
        })
    }

    /// Writes CSV atomically: one row per (interval, variant) plus rows
    /// with interval "total".
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        if self.meta.reduced.is_some() {
            return self.write_reduced_csv(path);
        }
        write_atomically(path, |f| {
            let mut w = csv::Writer::from_writer(f);
            w.write_record(ROW_KEY.iter().chain(&[
                "variant",
                "calls",
                "pages_requested",
                "pages_pinned",
                "partial",
                "zero",
                "errors",
                "fallbacks",
                "fast_pages",
                "slow_pages",
                "p50_ns",
                "p99_ns",
                "max_ns",
                "mean_ns",
            ]))?;
            let rows = self.csv_rows();
            let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
            for (label, t, dur, counts) in rows {
                for (variant, v) in &counts.totals {
                    let fp = v.fast_path.clone().unwrap_or_default();
                    w.write_record([
                        label.clone(),
                        format!("{t:.3}"),
                        format!("{dur:.3}"),
                        variant.clone(),
                        v.calls.to_string(),
                        v.pages_requested.to_string(),
                        v.pages_pinned.to_string(),
                        v.partial.to_string(),
                        v.zero.to_string(),
                        v.error_count().to_string(),
                        fp.fallbacks.to_string(),
                        fp.fast_pages.to_string(),
                        fp.slow_pages.to_string(),
                        opt(v.latency_ns.p50),
                        opt(v.latency_ns.p99),
                        opt(v.latency_ns.max),
                        opt(v.latency_ns.mean),
                    ])?;
                }
            }
            w.flush()
        })
    }
}

impl Record {
    /// (label, start, length, counts) of every interval, then of the
    /// whole recording labelled "total": the rows of both CSV layouts.
    fn csv_rows(&self) -> impl Iterator<Item = (String, f64, f64, &Counts)> {
        self.intervals
            .iter()
            .enumerate()
            .map(|(i, iv)| (i.to_string(), iv.t_s, iv.duration_s, &iv.counts))
            .chain(std::iter::once((
                "total".to_string(),
                0.0,
                self.meta.duration_s,
                &self.counts,
            )))
    }

    /// CSV of a reduced-mode recording: one row per interval (and a
    /// "total" row) of `/proc/vmstat` FOLL_PIN page changes.
    fn write_reduced_csv(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, |f| {
            let mut w = csv::Writer::from_writer(f);
            w.write_record(
                ROW_KEY
                    .iter()
                    .chain(&["nr_foll_pin_acquired", "nr_foll_pin_released"]),
            )?;
            let rows = self.csv_rows();
            for (label, t, dur, counts) in rows {
                let vm = counts.vmstat;
                let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
                w.write_record([
                    label,
                    format!("{t:.3}"),
                    format!("{dur:.3}"),
                    opt(vm.map(|v| v.nr_foll_pin_acquired)),
                    opt(vm.map(|v| v.nr_foll_pin_released)),
                ])?;
            }
            w.flush()
        })
    }
}

fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
            cgroup_names: BTreeMap::from([(
                4242,
                crate::cgroups::CgroupIdentity::of_path(container),
            )]),
            counts: crate::snapshot::CounterSet {
                gup,
                release,
                procs: BTreeMap::new(),
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
}
