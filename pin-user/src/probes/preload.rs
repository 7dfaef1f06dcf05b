//! The programs attached after the traced functions (the release hook, the
//! memlock checks, the task watches and the pending fold), loaded while
//! the functions attach.
//!
//! Why: the functions' attach pool keeps both CPUs busy only while it has
//! programs to verify; towards its end it mostly waits on the kernel's
//! trampoline updates, which it makes one at a time. What comes after it
//! used to load (verify) each program on one thread, then attach it. The
//! loads now run in the pool as jobs of their own, each in a verifier
//! slot, so what is left after it is the attaching. The steps after the
//! pool keep their order and their choices: each loads only a program
//! that is not loaded yet, so a load that failed here is made again there,
//! and fails with its reason where it is reported.

use aya::programs::{FEntry, FExit, Iter, KProbe, Program, RawTracePoint};

use super::{AttachMode, checks, settings::LimitLayout};
use crate::kernel::KernelFacts;

/// One program to load ahead, and what it is loaded against.
pub(super) struct Preload {
    /// The program's name in the object.
    pub name: &'static str,
    /// What its load needs.
    pub target: Target,
}

/// What a program's load needs.
pub(super) enum Target {
    /// A fentry or fexit: the kernel function it will attach to.
    Function(&'static str),
    /// A kprobe or raw tracepoint: nothing.
    Plain,
    /// The task iterator: its type id (`attach_ids::for_task_iterator`).
    TaskIterator(aya::Btf),
}

/// What the steps after the attach pool will load, with `mode`, on this
/// kernel: the release hook `hook` (`programs::attach_release_hook`), the
/// memlock checks (`checks::attach_checks`), the task watches and the
/// pending fold (`fold::attach`), each the first way that step tries.
pub(super) fn plan(
    facts: &KernelFacts,
    mode: AttachMode,
    fentry_ids: bool,
    hook: &'static str,
    layout: &LimitLayout,
) -> Vec<Preload> {
    let tracing = mode.tries_fentry() && facts.tracing.is_ok() && fentry_ids;
    let kprobes = mode.tries_kprobe() && facts.kprobes.is_ok();
    let mut plan = Vec::new();
    if tracing {
        plan.push(Preload {
            name: "put_fentry",
            target: Target::Function(hook),
        });
    } else if kprobes {
        plan.push(Preload {
            name: "put_kprobe",
            target: Target::Plain,
        });
    }
    let candidates = checks::chosen_candidates(facts, layout);
    if !tracing && kprobes && !candidates.is_empty() {
        plan.push(Preload {
            name: checks::KRETPROBE,
            target: Target::Plain,
        });
    }
    for candidate in candidates {
        if tracing {
            plan.push(Preload {
                name: candidate.fexit,
                target: Target::Function(candidate.function),
            });
        } else if kprobes {
            plan.push(Preload {
                name: candidate.kprobe,
                target: Target::Plain,
            });
        }
    }
    for name in ["task_exit", "task_rename"] {
        plan.push(Preload {
            name,
            target: Target::Plain,
        });
    }
    if facts.features.object() == crate::kernel::features::Object::Full
        && super::fold::sees_every_task().is_ok()
        && let Some(btf) = super::attach_ids::for_task_iterator(facts)
    {
        plan.push(Preload {
            name: super::fold::PROGRAM,
            target: Target::TaskIterator(btf),
        });
    }
    plan
}

/// Loads `prog` against `target` (fentry and fexit programs against the
/// type ids `btf`); a failure is left for the step that attaches it.
pub(super) fn load(prog: &mut Program, target: &Target, btf: Option<&aya::Btf>) {
    let result = match (prog, target) {
        (Program::FEntry(p), Target::Function(f)) => btf.map(|btf| FEntry::load(p, f, btf)),
        (Program::FExit(p), Target::Function(f)) => btf.map(|btf| FExit::load(p, f, btf)),
        (Program::KProbe(p), Target::Plain) => Some(KProbe::load(p)),
        (Program::RawTracePoint(p), Target::Plain) => Some(RawTracePoint::load(p)),
        (Program::Iter(p), Target::TaskIterator(btf)) => Some(Iter::load(p, "task", btf)),
        _ => None,
    };
    if let Some(Err(e)) = result {
        log::info!("loading ahead failed, left to the attach: {e}");
    }
}

/// Loads a program with `load` unless `loaded` (loaded ahead, in the
/// attach pool): the steps after the pool call this where they load.
pub(super) fn unless_loaded(
    loaded: bool,
    load: impl FnOnce() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    if loaded { Ok(()) } else { load() }
}
