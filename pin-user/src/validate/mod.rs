//! `pinwatch validate`: checks the live kernel against the reference model.
//!
//! Each scenario sets up one memory layout, snapshots it ([`procsnap`]),
//! asks the model what its system call must do ([`crate::model::paths`]),
//! makes the call on this thread while the probes send per-call records
//! for this thread only ([`crate::events`]), and compares field by field:
//! the GUP calls (variant, start, nr_pages, flags, return, fast/slow pages,
//! fallback), the syscall's result, the faults the thread took
//! (`getrusage`), the pins released by the unpin family, and the change of
//! `/proc/vmstat` `nr_foll_pin_acquired`/`released`.

mod layout;
pub mod procsnap;
pub mod scenarios;

use serde::Serialize;

use crate::{
    events::{CallRecord, EventStream},
    kernel::foll::FollFlags,
    model::{Deviation, Rules, paths::PathPrediction},
    vmstat::{self, PinCounters},
};

/// What one system call did, as observed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observation {
    /// The syscall's return value (bytes, 0, or -errno).
    pub result: i64,
    /// Outermost get/pin calls this thread made during it.
    pub calls: Vec<CallRecord>,
    /// Pages the unpin family released on this thread during it.
    pub released: u64,
    /// Minor + major faults this thread took during it.
    pub faults: u64,
    /// `nr_foll_pin_acquired` change (None when /proc/vmstat lacks it).
    pub pin_acquired: Option<u64>,
    /// `nr_foll_pin_released` change.
    pub pin_released: Option<u64>,
}

/// One compared field.
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    /// What is compared, e.g. `call[0].ret`.
    pub name: String,
    /// The model's value.
    pub predicted: String,
    /// The kernel's value.
    pub observed: String,
    /// Whether they agree.
    pub agrees: bool,
}

/// One step of a scenario: a syscall, predicted and observed.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// What the step does.
    pub action: String,
    /// The model's prediction.
    pub predicted: PathPrediction,
    /// What happened.
    pub observed: Observation,
    /// Field-by-field comparison.
    pub fields: Vec<Field>,
}

/// How a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict", content = "detail")]
pub enum Verdict {
    /// Every field agrees.
    Agrees,
    /// Every field agrees, and the prediction relied on named deviations.
    KnownDeviation(Vec<String>),
    /// Some field disagrees.
    Disagrees(Vec<String>),
    /// The scenario could not run here (missing device, feature, privilege).
    NotRun(String),
}

/// One scenario's report.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// Catalogue name.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// The steps.
    pub steps: Vec<Step>,
    /// The outcome.
    pub verdict: Verdict,
}

/// Everything a scenario needs from the outside.
pub struct Ctx<'a> {
    /// Version rules of the running kernel.
    pub rules: Rules,
    /// Block device for the O_DIRECT and file-mapping scenarios.
    pub device: Option<std::path::PathBuf>,
    events: &'a mut EventStream,
}

impl<'a> Ctx<'a> {
    /// A context drawing per-call records from `events`, which must be
    /// filtered to the calling thread.
    pub fn new(
        rules: Rules,
        device: Option<std::path::PathBuf>,
        events: &'a mut EventStream,
    ) -> Self {
        Self {
            rules,
            device,
            events,
        }
    }

    /// The flag names of this kernel.
    pub fn flags(&self) -> &FollFlags {
        self.events.flags()
    }

    /// Runs `syscall` (returning its result) and observes it.
    pub fn observe(&mut self, syscall: impl FnOnce() -> i64) -> Observation {
        let _ = vmstat::refresh();
        let before_vm = PinCounters::read().ok().flatten();
        self.events.drain();
        prefault_stack();
        let before_faults = thread_faults();
        let result = syscall();
        let faults = thread_faults().saturating_sub(before_faults);
        let records = self.events.drain();
        let _ = vmstat::refresh();
        let after_vm = PinCounters::read().ok().flatten();
        let delta = before_vm.zip(after_vm).map(|(b, a)| a.since(&b));
        let released = records
            .iter()
            .filter(|r| r.release)
            .map(|r| r.nr_pages.max(0) as u64)
            .sum();
        Observation {
            result,
            calls: records.into_iter().filter(|r| !r.release).collect(),
            released,
            faults,
            pin_acquired: delta.map(|d| d.nr_foll_pin_acquired),
            pin_released: delta.map(|d| d.nr_foll_pin_released),
        }
    }
}

/// Maps every page of this process's executable code (MADV_POPULATE_READ
/// on each executable file mapping), so that the first run of a code path
/// inside a measured window cannot add a page fault that is not the
/// system call's. Best effort: failures only make fault counts noisier.
pub fn prefault_code() {
    let Ok(maps) = procfs::process::Process::myself().and_then(|p| p.maps()) else {
        return;
    };
    for map in maps.iter() {
        let exec = map.perms.contains(procfs::process::MMPermissions::EXECUTE);
        if exec && matches!(map.pathname, procfs::process::MMapPath::Path(_)) {
            let (start, end) = map.address;
            // SAFETY: advising an existing mapping of our own; populating
            // read-only code has no effect on its contents.
            unsafe {
                libc::madvise(
                    start as *mut _,
                    (end - start) as usize,
                    libc::MADV_POPULATE_READ,
                )
            };
        }
    }
}

/// Touches 64 KiB of stack below the caller, so the measured window (the
/// closure, the syscall wrapper) cannot fault in a stack page that a
/// deeper call reaches for the first time: that fault would not be the
/// system call's. (Seen once as "faults: predicted 0, observed 1".)
#[inline(never)]
fn prefault_stack() {
    let mut pad = [0u8; 64 * 1024];
    for i in (0..pad.len()).step_by(4096) {
        // SAFETY: a write inside our own array; volatile so it happens.
        unsafe { std::ptr::write_volatile(&mut pad[i], 1) };
    }
    std::hint::black_box(&pad);
}

/// Faults this thread has taken so far.
fn thread_faults() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (usage.ru_minflt + usage.ru_majflt) as u64
}

fn field(
    fields: &mut Vec<Field>,
    name: impl Into<String>,
    predicted: impl ToString,
    observed: impl ToString,
) {
    let (predicted, observed) = (predicted.to_string(), observed.to_string());
    fields.push(Field {
        name: name.into(),
        agrees: predicted == observed,
        predicted,
        observed,
    });
}

fn flag_set(names: &[&str]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join("|")
    }
}

/// Compares a prediction with an observation, field by field.
pub fn compare(
    predicted: &PathPrediction,
    observed: &Observation,
    flags: &FollFlags,
) -> Vec<Field> {
    let mut out = Vec::new();
    field(
        &mut out,
        "gup calls",
        predicted.calls.len(),
        observed.calls.len(),
    );
    for (i, (p, o)) in predicted.calls.iter().zip(&observed.calls).enumerate() {
        let c = &p.call;
        field(
            &mut out,
            format!("call[{i}].variant"),
            c.variant.name(),
            o.function,
        );
        field(
            &mut out,
            format!("call[{i}].start"),
            format!("{:#x}", c.start),
            o.addr.map_or("?".into(), |a| format!("{a:#x}")),
        );
        field(
            &mut out,
            format!("call[{i}].nr_pages"),
            c.nr_pages,
            o.nr_pages,
        );
        // The flags the model reasons about; others (TOUCH, NOFAULT, ...)
        // are reported in the records but not predicted.
        let observed_flags: Vec<&str> = match o.flags {
            Some(raw) => [
                ("FOLL_WRITE", "WRITE"),
                ("FOLL_FORCE", "FORCE"),
                ("FOLL_LONGTERM", "LONGTERM"),
            ]
            .into_iter()
            .filter(|(f, _)| flags.has(raw, f))
            .map(|(_, n)| n)
            .collect(),
            None => vec!["?"],
        };
        let predicted_flags: Vec<&str> = c
            .flags
            .names()
            .into_iter()
            .filter(|n| ["WRITE", "FORCE", "LONGTERM"].contains(n))
            .collect();
        field(
            &mut out,
            format!("call[{i}].flags"),
            flag_set(&predicted_flags),
            flag_set(&observed_flags),
        );
        field(&mut out, format!("call[{i}].ret"), p.ret, o.ret);
        field(
            &mut out,
            format!("call[{i}].fast_pages"),
            p.fast_pages,
            o.fast_pages,
        );
        field(
            &mut out,
            format!("call[{i}].slow_pages"),
            p.slow_pages,
            o.slow_pages,
        );
        field(
            &mut out,
            format!("call[{i}].fell_back"),
            p.fell_back,
            o.fell_back,
        );
    }
    field(&mut out, "result", predicted.result, observed.result);
    field(&mut out, "faults", predicted.faults(), observed.faults);
    field(
        &mut out,
        "pins released",
        predicted.released,
        observed.released,
    );
    if let (Some(acq), Some(rel)) = (observed.pin_acquired, observed.pin_released) {
        field(&mut out, "vmstat acquired", predicted.pin_acquired(), acq);
        field(&mut out, "vmstat released", predicted.pin_released(), rel);
    }
    out
}

/// The verdict over a scenario's steps.
pub fn verdict(steps: &[Step]) -> Verdict {
    let wrong: Vec<String> = steps
        .iter()
        .flat_map(|s| s.fields.iter())
        .filter(|f| !f.agrees)
        .map(|f| {
            format!(
                "{}: predicted {}, observed {}",
                f.name, f.predicted, f.observed
            )
        })
        .collect();
    if !wrong.is_empty() {
        return Verdict::Disagrees(wrong);
    }
    let mut named: Vec<Deviation> = steps
        .iter()
        .flat_map(|s| s.predicted.calls.iter())
        .filter_map(|c| c.deviation)
        .collect();
    named.dedup();
    if named.is_empty() {
        Verdict::Agrees
    } else {
        Verdict::KnownDeviation(named.iter().map(|d| d.name().to_string()).collect())
    }
}

/// A step from its parts.
pub fn step(
    ctx: &Ctx,
    action: impl Into<String>,
    predicted: PathPrediction,
    observed: Observation,
) -> Step {
    let fields = compare(&predicted, &observed, ctx.flags());
    Step {
        action: action.into(),
        predicted,
        observed,
        fields,
    }
}
