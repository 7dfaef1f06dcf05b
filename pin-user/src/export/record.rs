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
#[path = "record_tests.rs"]
mod tests;
