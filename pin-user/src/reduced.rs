//! Reduced mode: what `top`, `stat`, `record` and `serve` show when the
//! kernel lets pinwatch attach no probe at all (or `--reduced` asks for
//! none). Only counters the kernel keeps anyway are read: `/proc/vmstat`
//! `nr_foll_pin_acquired`/`nr_foll_pin_released` (host-wide FOLL_PIN pages)
//! and each process's `VmPin` (pages its pinning subsystems accounted:
//! RDMA, io_uring fixed buffers, VFIO; O_DIRECT pins are not in it). No
//! per-variant, fast/slow, error or latency figure exists in this mode, and
//! none is shown as zero.

use std::{collections::BTreeMap, time::Instant};

use serde::{Deserialize, Serialize};

use crate::{
    counters::Counters,
    kernel::KernelFacts,
    probes::{self, AttachError, AttachOptions, Probes},
    sampling::Source,
    vmstat::PinCounters,
};

/// How many processes a reduced view lists.
pub const TOP_PINNED: usize = 10;

/// What would give pinwatch full tracing when the kernel refuses probes.
const ENABLE_TRACING: &str = "use a kernel built with CONFIG_KPROBES=y, or one that lets root load BPF \
     tracing programs (CONFIG_DEBUG_INFO_BTF=y and CONFIG_FUNCTION_TRACER=y, no lockdown or LSM \
     denying bpf)";

const ENABLE_BTF: &str = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (it exposes \
     /sys/kernel/btf/vmlinux), where pinwatch can check each function's signature before probing it";

/// Why pinwatch runs reduced, and what would give it full tracing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReducedReason {
    /// Why no probe is attached.
    pub why: String,
    /// What would enable full tracing.
    pub enable: String,
}

impl ReducedReason {
    /// The user asked for reduced mode (`--reduced`).
    pub fn requested() -> Self {
        Self {
            why: "--reduced asks for no probes".into(),
            enable: "run without --reduced".into(),
        }
    }

    /// The kernel (or the policy around it) refused every probe; `None`
    /// when the error is the user's to fix (privileges, the memlock limit
    /// of kernels before 5.11), a broken eBPF
    /// object, which reduced mode must not paper over, or a stop signal.
    pub fn from_attach_error(err: &AttachError) -> Option<Self> {
        match err {
            AttachError::NothingAttached { needs_btf, .. } => Some(Self {
                why: err.to_string(),
                enable: if *needs_btf {
                    ENABLE_BTF
                } else {
                    ENABLE_TRACING
                }
                .into(),
            }),
            AttachError::Refused(_) => Some(Self {
                why: err.to_string(),
                enable: "run pinwatch on the host, or let the container call bpf() and \
                         perf_event_open() (e.g. a seccomp profile that allows them)"
                    .into(),
            }),
            AttachError::Privileges(_)
            | AttachError::Memlock(_)
            | AttachError::Load(_)
            | AttachError::Unavailable(_)
            | AttachError::Stopped => None,
        }
    }

    /// The one line said once, at start.
    pub fn banner(&self) -> String {
        format!(
            "reduced mode, no probes: {}. Showing only /proc/vmstat nr_foll_pin_* and per-process \
             VmPin. For full tracing, {}",
            self.why, self.enable
        )
    }
}

/// Where a command's figures come from.
pub enum Mode {
    /// Attached probes: full tracing.
    Probes(Box<Probes>),
    /// No probes: kernel counters only, and why.
    Reduced(ReducedReason),
}

/// Attaches the probes, or falls back to reduced mode when the kernel
/// refuses every one of them (or `force_reduced`). Says the reduced-mode
/// banner once on stderr. Other attach errors (privileges, a broken
/// eBPF object) stay errors.
pub fn attach_or_reduce(
    facts: &KernelFacts,
    options: AttachOptions,
    force_reduced: bool,
) -> Result<Mode, AttachError> {
    let cgroup = options.cgroup.clone();
    let source = if force_reduced {
        Mode::Reduced(ReducedReason::requested())
    } else {
        match probes::attach(facts, options) {
            Ok(probes) => Mode::Probes(Box::new(probes)),
            Err(err) => match ReducedReason::from_attach_error(&err) {
                Some(reason) => Mode::Reduced(reason),
                None => return Err(err),
            },
        }
    };
    if let (Mode::Reduced(reason), Some(dir)) = (&source, &cgroup) {
        // The kernel's counters are host-wide: no cgroup of them to show.
        return Err(AttachError::Unavailable(format!(
            "--cgroup {} needs the probes, and reduced mode has none ({}); run without --cgroup",
            dir.display(),
            reason.why
        )));
    }
    if let Mode::Reduced(reason) = &source {
        facts.forget_loader();
        eprintln!("pinwatch: {}", reason.banner());
    }
    Ok(source)
}

/// One process with pages accounted as pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedProcess {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// `VmPin`, in KiB.
    pub vm_pin_kb: u64,
}

/// The counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReducedSample {
    /// `/proc/vmstat` FOLL_PIN counters since boot (absent before 5.7).
    pub vmstat: Option<PinCounters>,
    /// Processes whose `VmPin` is not zero, by pid.
    pub pinned: BTreeMap<u32, PinnedProcess>,
}

/// Errors reading the reduced-mode counters.
#[derive(Debug, thiserror::Error)]
pub enum ReducedError {
    /// /proc could not be read.
    #[error("reading /proc: {0}")]
    Proc(String),
    /// Neither counter exists on this kernel.
    #[error(
        "this kernel has neither /proc/vmstat nr_foll_pin_* nor VmPin (both need Linux 5.7 or later)"
    )]
    NoCounters,
}

impl ReducedSample {
    /// Reads `/proc/vmstat` and every process's status. Processes that
    /// exit while being read, or whose status is unreadable, are skipped.
    pub fn read() -> Result<Self, ReducedError> {
        let vmstat = PinCounters::read().map_err(|e| ReducedError::Proc(e.to_string()))?;
        let mut pinned = BTreeMap::new();
        let mut any_vmpin = false;
        let processes = procfs::process::all_processes()
            .map_err(|e| ReducedError::Proc(format!("listing processes: {e}")))?;
        for process in processes.flatten() {
            let Ok(status) = process.status() else {
                continue;
            };
            // Kernel threads have no VmPin line; any user process does.
            let Some(vm_pin_kb) = status.vmpin else {
                continue;
            };
            any_vmpin = true;
            if vm_pin_kb > 0 {
                let pid = status.pid as u32;
                pinned.insert(
                    pid,
                    PinnedProcess {
                        pid,
                        comm: status.name,
                        vm_pin_kb,
                    },
                );
            }
        }
        if vmstat.is_none() && !any_vmpin {
            return Err(ReducedError::NoCounters);
        }
        Ok(Self { vmstat, pinned })
    }
}

/// Reduced mode as a source of intervals: [`ReducedView`]s of the
/// kernel's own counters.
pub struct ReducedSource {
    first: ReducedSample,
    first_at: Instant,
    previous: ReducedSample,
    previous_at: Instant,
}

impl ReducedSource {
    /// Reads the counters once: intervals count from now.
    pub fn new() -> Result<Self, ReducedError> {
        let first = ReducedSample::read()?;
        let now = Instant::now();
        Ok(Self {
            previous: first.clone(),
            first,
            first_at: now,
            previous_at: now,
        })
    }
}

impl Source for ReducedSource {
    type Interval = ReducedView;

    fn next(&mut self) -> anyhow::Result<ReducedView> {
        let current = ReducedSample::read()?;
        let now = Instant::now();
        let view = ReducedView::new(
            &self.previous,
            &current,
            now.duration_since(self.previous_at).as_secs_f64(),
        );
        (self.previous, self.previous_at) = (current, now);
        Ok(view)
    }

    fn since_start(&self) -> ReducedView {
        ReducedView::new(&self.first, &self.previous, self.elapsed().as_secs_f64())
    }

    fn elapsed(&self) -> std::time::Duration {
        self.previous_at.duration_since(self.first_at)
    }
}

/// One process in a reduced view: its `VmPin` now and its change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedView {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// `VmPin` at the end of the interval, KiB.
    pub vm_pin_kb: u64,
    /// Change over the interval, KiB (new processes count from zero).
    pub change_kb: i64,
}

/// What reduced mode shows for one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReducedView {
    /// Always "reduced": tells JSON readers no per-variant data follows.
    pub mode: String,
    /// Interval length in seconds.
    pub interval_s: f64,
    /// `/proc/vmstat` FOLL_PIN page counter changes over the interval
    /// (host-wide; per-CPU batched, so a few pages per CPU may lag).
    pub vmstat: Option<PinCounters>,
    /// `nr_foll_pin_acquired - nr_foll_pin_released` at the end: pages
    /// pinned now, host-wide.
    pub pinned_now_pages: Option<i64>,
    /// Processes with the most `VmPin`, at most [`TOP_PINNED`].
    pub processes: Vec<PinnedView>,
}

impl ReducedView {
    /// The change from `earlier` to `later`, `interval_s` apart.
    pub fn new(earlier: &ReducedSample, later: &ReducedSample, interval_s: f64) -> Self {
        let vmstat = match (earlier.vmstat, later.vmstat) {
            (Some(a), Some(b)) => Some(b.delta(&a)),
            _ => None,
        };
        let pinned_now_pages = later
            .vmstat
            .map(|v| v.nr_foll_pin_acquired as i64 - v.nr_foll_pin_released as i64);
        let mut processes: Vec<PinnedView> = later
            .pinned
            .values()
            .map(|p| PinnedView {
                pid: p.pid,
                comm: p.comm.clone(),
                vm_pin_kb: p.vm_pin_kb,
                change_kb: p.vm_pin_kb as i64
                    - earlier.pinned.get(&p.pid).map_or(0, |e| e.vm_pin_kb as i64),
            })
            .collect();
        processes.sort_by(|a, b| b.vm_pin_kb.cmp(&a.vm_pin_kb).then(a.pid.cmp(&b.pid)));
        processes.truncate(TOP_PINNED);
        Self {
            mode: "reduced".into(),
            interval_s,
            vmstat,
            pinned_now_pages,
            processes,
        }
    }

    /// Renders the interval as text, labelled as reduced.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("[reduced mode: no probes, kernel counters only]\n");
        match self.vmstat {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "vmstat FOLL_PIN pages/s: acquired {:.1}  released {:.1}  pinned now {}",
                    crate::figures::per_second(v.nr_foll_pin_acquired, self.interval_s),
                    crate::figures::per_second(v.nr_foll_pin_released, self.interval_s),
                    self.pinned_now_pages.map_or("-".into(), |p| p.to_string()),
                );
            }
            None => out.push_str("vmstat FOLL_PIN: not in this kernel's /proc/vmstat\n"),
        }
        if self.processes.is_empty() {
            out.push_str("  (no process has VmPin > 0)\n");
        } else {
            let _ = writeln!(
                out,
                "{:>8} {:<16} {:>12} {:>12}",
                "pid", "comm", "VmPin KiB", "change KiB"
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "{:>8} {:<16} {:>12} {:>+12}",
                    p.pid, p.comm, p.vm_pin_kb, p.change_kb
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(acquired: u64, released: u64, pinned: &[(u32, &str, u64)]) -> ReducedSample {
        ReducedSample {
            vmstat: Some(PinCounters {
                nr_foll_pin_acquired: acquired,
                nr_foll_pin_released: released,
            }),
            pinned: pinned
                .iter()
                .map(|&(pid, comm, kb)| {
                    (
                        pid,
                        PinnedProcess {
                            pid,
                            comm: comm.into(),
                            vm_pin_kb: kb,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn view_takes_deltas_and_sorts_by_vmpin() {
        let a = sample(100, 90, &[(10, "rdma", 64)]);
        let b = sample(300, 250, &[(10, "rdma", 32), (11, "uring", 128)]);
        let view = ReducedView::new(&a, &b, 2.0);
        assert_eq!(
            view.vmstat,
            Some(PinCounters {
                nr_foll_pin_acquired: 200,
                nr_foll_pin_released: 160
            })
        );
        assert_eq!(view.pinned_now_pages, Some(50));
        let order: Vec<(u32, i64)> = view
            .processes
            .iter()
            .map(|p| (p.pid, p.change_kb))
            .collect();
        assert_eq!(order, vec![(11, 128), (10, -32)]);
        insta::assert_snapshot!(view.render_text());
    }

    #[test]
    fn reads_this_host() {
        // Needs no privilege and no probe: works on any kernel since 5.7.
        let s = ReducedSample::read().unwrap();
        assert!(s.vmstat.is_some());
    }

    #[test]
    fn only_a_kernel_refusal_reduces() {
        let refused = AttachError::NothingAttached {
            release: "6.18".into(),
            reason: "kprobes unavailable".into(),
            needs_btf: false,
        };
        let reason = ReducedReason::from_attach_error(&refused).unwrap();
        assert!(reason.banner().contains("CONFIG_KPROBES=y"));
        let no_btf = AttachError::NothingAttached {
            release: "6.18".into(),
            reason: "no kernel BTF".into(),
            needs_btf: true,
        };
        let reason = ReducedReason::from_attach_error(&no_btf).unwrap();
        assert!(
            reason.banner().contains("CONFIG_DEBUG_INFO_BTF=y"),
            "{}",
            reason.banner()
        );
        assert!(ReducedReason::from_attach_error(&AttachError::Load("EPERM".into())).is_none());
        // The user's to raise, and the error says how.
        let memlock = AttachError::Memlock(64 * 1024);
        assert!(ReducedReason::from_attach_error(&memlock).is_none());
        let text = memlock.to_string();
        assert!(
            text.contains("64 KiB") && text.contains("ulimit -l unlimited"),
            "{text}"
        );
        assert_eq!(
            crate::error::attach_exit_code(&memlock),
            crate::error::EXIT_PRIVILEGES
        );
    }
}
