//! `pinwatch validate`: checks the live kernel against the reference model.
//!
//! Each scenario sets up one memory layout, snapshots it ([`procsnap`]),
//! asks the model what its system call must do ([`crate::model::paths`]),
//! makes the call on this thread while the probes send per-call records
//! for this thread only ([`crate::events`]), and compares field by field:
//! the GUP calls (variant, start, nr_pages, flags, return, fast/slow pages,
//! fallback), the syscall's result, the faults GUP took for the thread
//! ([`faults`]), the pins released by the unpin family, and the change of
//! `/proc/vmstat` `nr_foll_pin_acquired`/`released`.

pub mod faults;
mod layout;
pub mod procsnap;
pub mod scenarios;

use serde::Serialize;

use crate::{
    counters::Counters,
    events::{CallRecord, EventStream},
    kernel::foll::FollFlags,
    model::{Deviation, Rules, paths::PathPrediction},
    vmstat::{self, PinCounters},
};
use faults::FaultCounter;

/// What one system call did, as observed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observation {
    /// The syscall's return value (bytes, 0, or -errno).
    pub result: i64,
    /// Outermost get/pin calls this thread made during it.
    pub calls: Vec<CallRecord>,
    /// Pages the unpin family released on this thread during it.
    pub released: u64,
    /// Faults GUP took for this thread during it (None: the counters could
    /// not be read).
    pub faults: Option<u64>,
    /// Faults the thread took by CPU exception during it (its own code,
    /// kernel copies to or from user memory): not GUP's, not compared.
    pub exception_faults: Option<u64>,
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
    faults: &'a mut FaultCounter,
}

impl<'a> Ctx<'a> {
    /// A context drawing per-call records from `events` and fault counts
    /// from `faults`, both of which must belong to the calling thread.
    pub fn new(
        rules: Rules,
        device: Option<std::path::PathBuf>,
        events: &'a mut EventStream,
        faults: &'a mut FaultCounter,
    ) -> Self {
        Self {
            rules,
            device,
            events,
            faults,
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
        let before_faults = self.faults.read();
        let result = syscall();
        let after_faults = self.faults.read();
        let faults = match (before_faults, after_faults) {
            (Ok(before), Ok(after)) => Some(after.since(&before)),
            _ => None,
        };
        let records = self.events.drain();
        let _ = vmstat::refresh();
        let after_vm = PinCounters::read().ok().flatten();
        let delta = before_vm.zip(after_vm).map(|(b, a)| a.delta(&b));
        let released = records
            .iter()
            .filter(|r| r.release)
            .map(|r| r.nr_pages.max(0) as u64)
            .sum();
        Observation {
            result,
            calls: records.into_iter().filter(|r| !r.release).collect(),
            released,
            faults: faults.map(|f| f.gup),
            exception_faults: faults.map(|f| f.by_exception),
            pin_acquired: delta.map(|d| d.nr_foll_pin_acquired),
            pin_released: delta.map(|d| d.nr_foll_pin_released),
        }
    }
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
        compare_call(&mut out, i, p, o, flags);
    }
    field(&mut out, "result", predicted.result, observed.result);
    field(
        &mut out,
        "faults",
        predicted.faults(),
        observed.faults.map_or("?".into(), |f| f.to_string()),
    );
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

/// The fields of the `i`th GUP call of a path.
fn compare_call(
    out: &mut Vec<Field>,
    i: usize,
    p: &crate::model::Prediction,
    o: &CallRecord,
    flags: &FollFlags,
) {
    let c = &p.call;
    field(
        out,
        format!("call[{i}].variant"),
        c.variant.name(),
        o.function,
    );
    field(
        out,
        format!("call[{i}].start"),
        format!("{:#x}", c.start),
        o.addr.map_or("?".into(), |a| format!("{a:#x}")),
    );
    field(out, format!("call[{i}].nr_pages"), c.nr_pages, o.nr_pages);
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
        out,
        format!("call[{i}].flags"),
        flag_set(&predicted_flags),
        flag_set(&observed_flags),
    );
    field(out, format!("call[{i}].ret"), p.ret, o.ret);
    field(
        out,
        format!("call[{i}].fast_pages"),
        p.fast_pages,
        o.fast_pages,
    );
    field(
        out,
        format!("call[{i}].slow_pages"),
        p.slow_pages,
        o.slow_pages,
    );
    field(
        out,
        format!("call[{i}].fell_back"),
        p.fell_back,
        o.fell_back,
    );
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
