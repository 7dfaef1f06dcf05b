//! The embedded object's programs per function (fentry/fexit, kprobe/
//! kretprobe), loaded and attached as a pair or not at all; which
//! configured functions attach (the internal fast path only where a fast
//! variant is not traced), every function on a thread of its own, and
//! every program detached the same way.
//!
//! Why threads: under emulation and on busy hosts most of an attach or a
//! detach is spent waiting in the kernel (code patching, RCU grace
//! periods), not computing; functions are independent (one trampoline or
//! kprobe each), so what the kernel does not serialize overlaps. It
//! serializes much: in a 2-vCPU 6.12 guest attach went from 3.0 to 2.3 s,
//! while detach completions still came ~0.12 s apart (one trampoline
//! update at a time), 3.3-3.6 s idle, 10-12 s beside a pinning loop.
//! Loads, which the kernel verifies (computing), wait for one of a slot
//! per CPU ([`VerifierSlots`]), so that attaches start as verifications
//! end instead of all after the last.

use std::{collections::HashMap, os::fd::AsRawFd as _};

use aya::{
    Ebpf,
    programs::{FEntry, FExit, KProbe, Program, RawTracePoint},
};
use pin_common::{
    FUNCS, FuncId, FuncKind,
    catalog::{FuncInfo, has_exit_probe},
};

use super::{
    AttachError, AttachMode, Mechanism, ProbeStatus, Probes,
    multi::{Multi, MultiKind},
    threads::concurrently,
    verifier_slots::VerifierSlots,
};
use crate::kernel::{KernelFacts, short_error};

/// The entry, exit, kprobe and kretprobe program names of function `id`.
pub(super) fn program_names(id: FuncId, func: &FuncInfo) -> [String; 4] {
    let family = if func.kind == FuncKind::Release {
        "rel"
    } else {
        "gup"
    };
    ["fentry", "fexit", "kprobe", "kretprobe"].map(|kind| format!("{family}_{kind}_{id:02}"))
}

impl Probes {
    /// The kernel's run time (ns) and run count of each function's loaded
    /// programs (BPF stats on), in catalogue order; functions without a
    /// loaded program are left out. Each function's programs are looked up
    /// by the names `program_names` gives its id, so the id travels with
    /// them rather than being parsed back out of a name.
    pub fn run_stats(&self) -> Vec<(&'static str, u64, u64)> {
        // The kprobe_multi programs serve every function at once: one row.
        let multi = self.multi.iter().map(|multi| {
            let counters: Vec<_> = multi
                .programs()
                .iter()
                .filter_map(|(_, fd)| super::misses::program_counters(fd.as_raw_fd()).ok())
                .collect();
            let ns = counters.iter().map(|c| c.run_time_ns).sum();
            let runs = counters.iter().map(|c| c.run_cnt).sum();
            (multi.kind().functions_row(), ns, runs)
        });
        let per_function = self.status.iter().filter_map(|st| {
            let func = &FUNCS[st.id as usize];
            let loaded: Vec<_> = program_names(st.id, func)
                .iter()
                .filter_map(|name| self.ebpf.program(name)?.info().ok())
                .collect();
            let ns = loaded.iter().map(|i| i.run_time().as_nanos() as u64).sum();
            let runs = loaded.iter().map(|i| i.run_count()).sum();
            (!loaded.is_empty()).then_some((func.name, ns, runs))
        });
        per_function.chain(multi).collect()
    }
}

/// Why the internal fast path stays untraced: its probes would only cost.
const FAST_INTERNAL_NOT_NEEDED: &str = "not needed: every fast variant is traced, and a fallback shows as the slow call right below the variant";

/// Whether every fast variant this kernel has is attached (then the
/// internal fast function they share adds nothing but cost).
fn fast_variants_traced(status: &[ProbeStatus]) -> bool {
    let mut present = status
        .iter()
        .filter(|st| FUNCS[st.id as usize].kind == FuncKind::FastVariant && st.symbol.is_some())
        .peekable();
    present.peek().is_some() && present.all(|st| st.attached.is_some())
}

/// Attaches each configured function with `mode` (fentry first, kprobe
/// where fentry fails, unless a mechanism is forced), every function on a
/// thread of its own ([`concurrently`]), but those `left_out` names
/// (asked on that thread: see `release_at_hook::Verdict`). Notes say why
/// not.
pub(super) fn attach_functions(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    status: &mut [ProbeStatus],
    configured: &[FuncId],
    left_out: &LeftOut<'_>,
) -> Result<(), AttachError> {
    // The internal fast path is attached only where a fast variant is not
    // (it adds nothing but cost otherwise), so it waits for their outcome.
    let (internal, others): (Vec<FuncId>, Vec<FuncId>) = configured
        .iter()
        .partition(|id| FUNCS[**id as usize].kind == FuncKind::FastInternal);
    attach_batch(ebpf, facts, mode, aya_btf, status, &others, left_out)?;
    let wanted: Vec<FuncId> = if fast_variants_traced(status) {
        for id in internal {
            status[id as usize].not_needed = true;
            status[id as usize]
                .notes
                .push(FAST_INTERNAL_NOT_NEEDED.into());
        }
        Vec::new()
    } else {
        internal
    };
    attach_batch(ebpf, facts, mode, aya_btf, status, &wanted, left_out)
}

/// Which functions [`attach_functions`] leaves without a probe of their
/// own; it may wait (for a read of the kernel's symbols and code).
pub(super) type LeftOut<'a> = dyn Fn(FuncId) -> bool + Sync + 'a;

/// Leaves no function out.
pub(super) const NONE_LEFT_OUT: &LeftOut<'static> = &|_| false;

/// Attaches every configured function on the multi links (the internal
/// fast path only where no fast variant is present, since all attach or
/// none do); where the kernel refuses the links, one program pair per
/// function instead (kprobes for kprobe_multi, fentry or else kprobes for
/// tracing multi links), with a note saying why. True when on the links.
pub(super) fn attach_multi(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    multi: &mut Multi,
    aya_btf: Option<&aya::Btf>,
    status: &mut [ProbeStatus],
    configured: &[FuncId],
) -> Result<bool, AttachError> {
    let func_kind = |id: &FuncId| FUNCS[*id as usize].kind;
    let fast_variant_present = configured
        .iter()
        .any(|id| func_kind(id) == FuncKind::FastVariant);
    let ids: Vec<FuncId> = configured
        .iter()
        .copied()
        .filter(|id| !(fast_variant_present && func_kind(id) == FuncKind::FastInternal))
        .collect();
    let symbols: Vec<(FuncId, String)> = ids
        .iter()
        .filter_map(|id| Some((*id, status[*id as usize].symbol.clone()?)))
        .collect();
    let targets: Vec<(FuncId, &str)> = symbols.iter().map(|(id, s)| (*id, s.as_str())).collect();
    if crate::signals::stop_requested() {
        return Err(AttachError::Stopped);
    }
    let kind = multi.kind();
    log::info!(
        "attaching {} functions on {} links",
        targets.len(),
        kind.mechanism()
    );
    if let Err(e) = multi.attach(facts, &targets) {
        let (mode, pairs) = match kind {
            MultiKind::Kprobe => (AttachMode::Kprobe, "kprobe"),
            MultiKind::Fentry => (AttachMode::Auto, "fentry (or kprobe)"),
        };
        log::warn!("{e}: attaching one {pairs} pair per function instead");
        for id in configured {
            status[*id as usize]
                .notes
                .push(format!("{}: {e}", kind.mechanism()));
        }
        attach_functions(
            ebpf,
            facts,
            mode,
            aya_btf,
            status,
            configured,
            NONE_LEFT_OUT,
        )?;
        return Ok(false);
    }
    for id in configured {
        let st = &mut status[*id as usize];
        if ids.contains(id) {
            st.attached = Some(kind.mechanism());
        } else {
            st.not_needed = true;
            st.notes.push(FAST_INTERNAL_NOT_NEEDED.into());
        }
    }
    Ok(true)
}

/// Attaches the functions `ids` concurrently and records each outcome.
fn attach_batch(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    status: &mut [ProbeStatus],
    ids: &[FuncId],
    left_out: &LeftOut<'_>,
) -> Result<(), AttachError> {
    let programs = borrow_functions(ebpf, ids).map_err(AttachError::Load)?;
    let slots = VerifierSlots::per_cpu();
    let jobs: Vec<_> = programs
        .into_iter()
        .zip(ids)
        .map(|(progs, id)| {
            (
                progs,
                *id,
                status[*id as usize].symbol.clone().unwrap_or_default(),
            )
        })
        .collect();
    let outcomes = concurrently(jobs, |(mut progs, id, symbol)| {
        // Attaching takes seconds under emulation: a stop signal ends it
        // here, and the caller's error drops what is attached.
        if crate::signals::stop_requested() {
            return None;
        }
        if left_out(id) {
            log::info!("{symbol} left without a probe of its own");
            return Some(FunctionAttach {
                attached: None,
                notes: Vec::new(),
            });
        }
        log::info!("attaching {symbol}");
        Some(attach_function(
            &mut progs,
            &slots,
            facts,
            mode,
            aya_btf,
            &symbol,
            has_exit_probe(id),
        ))
    });
    for (id, outcome) in ids.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            return Err(AttachError::Stopped);
        };
        let st = &mut status[*id as usize];
        st.attached = outcome.attached;
        st.notes.extend(outcome.notes);
    }
    if crate::signals::stop_requested() {
        return Err(AttachError::Stopped);
    }
    Ok(())
}

/// One function's four programs, borrowed from the object together so the
/// function can be attached on a thread of its own.
struct FunctionPrograms<'a> {
    fentry: &'a mut Program,
    fexit: &'a mut Program,
    kprobe: &'a mut Program,
    kretprobe: &'a mut Program,
}

/// Borrows the programs of each function in `ids` at once, in `ids`'
/// order.
fn borrow_functions<'a>(
    ebpf: &'a mut Ebpf,
    ids: &[FuncId],
) -> Result<Vec<FunctionPrograms<'a>>, String> {
    let mut by_name: HashMap<&str, &'a mut Program> = ebpf.programs_mut().collect();
    ids.iter()
        .map(|&id| {
            let names = program_names(id, &FUNCS[id as usize]);
            let [fentry, fexit, kprobe, kretprobe] = names.map(|name| {
                by_name
                    .remove(name.as_str())
                    .ok_or_else(|| format!("program {name} missing from the embedded object"))
            });
            Ok(FunctionPrograms {
                fentry: fentry?,
                fexit: fexit?,
                kprobe: kprobe?,
                kretprobe: kretprobe?,
            })
        })
        .collect()
}

/// What attaching one function came to: the mechanism, and why others
/// (or all) failed.
struct FunctionAttach {
    /// The mechanism attached, if any.
    pub attached: Option<Mechanism>,
    /// Why a mechanism was refused.
    pub notes: Vec<String>,
}

/// Attaches one function with `mode`: fentry first, kprobe where fentry
/// fails (unless a mechanism is forced).
fn attach_function(
    progs: &mut FunctionPrograms<'_>,
    slots: &VerifierSlots,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    symbol: &str,
    with_exit: bool,
) -> FunctionAttach {
    let mut outcome = FunctionAttach {
        attached: None,
        notes: Vec::new(),
    };
    if mode.tries_fentry() {
        let result = match (&facts.tracing, aya_btf) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), None) => Err("fentry needs kernel BTF, which could not be read".into()),
            (Ok(()), Some(btf)) => attach_fentry(progs, slots, symbol, btf, with_exit),
        };
        match result {
            Ok(()) => outcome.attached = Some(Mechanism::Fentry),
            Err(e) => outcome.notes.push(format!("fentry: {e}")),
        }
    }
    if outcome.attached.is_none() && mode.tries_kprobe() {
        let result = match &facts.kprobes {
            Err(e) => Err(e.clone()),
            Ok(()) => attach_kprobe(progs, slots, symbol, with_exit),
        };
        match result {
            Ok(()) => outcome.attached = Some(Mechanism::Kprobe),
            Err(e) => outcome.notes.push(format!("kprobe: {e}")),
        }
    }
    outcome
}

/// Loads and attaches `symbol`'s fentry (and fexit when `with_exit`);
/// on failure nothing of it stays loaded.
fn attach_fentry(
    progs: &mut FunctionPrograms<'_>,
    slots: &VerifierSlots,
    symbol: &str,
    btf: &aya::Btf,
    with_exit: bool,
) -> Result<(), String> {
    // Exit first: an entry without its exit would leave the task's nesting
    // state unbalanced; an exit without an entry is merely counted.
    if with_exit {
        let exit: &mut FExit = typed(progs.fexit)?;
        slots
            .verify(|| exit.load(symbol, btf))
            .map_err(|e| short_error(&e))?;
        if let Err(e) = exit.attach() {
            let _ = exit.unload();
            return Err(short_error(&e));
        }
    }
    let entry: &mut FEntry = typed(progs.fentry)?;
    let result = slots
        .verify(|| entry.load(symbol, btf))
        .and_then(|()| entry.attach().map(drop));
    if let Err(e) = result {
        let _ = entry.unload();
        if with_exit {
            let _ = unload(progs.fexit);
        }
        return Err(short_error(&e));
    }
    Ok(())
}

/// Loads and attaches `symbol`'s kprobe (and kretprobe when `with_exit`);
/// on failure nothing of it stays loaded.
fn attach_kprobe(
    progs: &mut FunctionPrograms<'_>,
    slots: &VerifierSlots,
    symbol: &str,
    with_exit: bool,
) -> Result<(), String> {
    if with_exit {
        let exit: &mut KProbe = typed(progs.kretprobe)?;
        slots.verify(|| exit.load()).map_err(|e| short_error(&e))?;
        if let Err(e) = exit.attach(symbol, 0) {
            let _ = exit.unload();
            return Err(short_error(&e));
        }
    }
    let entry: &mut KProbe = typed(progs.kprobe)?;
    let result = slots
        .verify(|| entry.load())
        .and_then(|()| entry.attach(symbol, 0).map(drop));
    if let Err(e) = result {
        let _ = entry.unload();
        if with_exit {
            let _ = unload(progs.kretprobe);
        }
        return Err(short_error(&e));
    }
    Ok(())
}

/// Detaches and unloads every loaded program of `ebpf` concurrently (see
/// the module doc for what that gains).
pub(super) fn unload_all(ebpf: &mut Ebpf) {
    let loaded: Vec<&mut Program> = ebpf
        .programs_mut()
        .map(|(_, prog)| prog)
        .filter(|prog| prog.fd().is_ok())
        .collect();
    concurrently(loaded, |prog| {
        let _ = unload(prog);
    });
}

/// Detaches and unloads one program, whatever its type.
fn unload(prog: &mut Program) -> Result<(), aya::programs::ProgramError> {
    match prog {
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}

/// `prog` as type `T`, or why not.
fn typed<'a, T>(prog: &'a mut Program) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    let kind = prog.prog_type();
    prog.try_into()
        .map_err(|_| format!("a program has an unexpected type ({kind:?})"))
}

/// The program `name` of `ebpf` as type `T`, or why not.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the embedded object"))?;
    prog.try_into()
        .map_err(|_| format!("program {name} has an unexpected type"))
}

/// Loads and attaches a raw tracepoint of the task's life, `program_name` at
/// `tracepoint`: `task_exit` at `sched_process_exit` counts, as missed, a
/// call an exiting thread was never seen to return from; `task_rename` at
/// `task_rename` keeps process names current.
pub(super) fn attach_task_watch(
    ebpf: &mut Ebpf,
    program_name: &str,
    tracepoint: &str,
) -> Result<(), String> {
    let watch: &mut RawTracePoint = program(ebpf, program_name)?;
    watch.load().map_err(|e| short_error(&e))?;
    watch
        .attach(tracepoint)
        .map(drop)
        .map_err(|e| short_error(&e))
}

/// Loads and attaches the release hook `hook` ([`super::RELEASE_HOOKS`]),
/// where every FOLL_PIN release ends: it counts GUP's own releases and, with
/// `--lifetimes`, ends pins' lifetimes. fentry first unless kprobes are
/// asked for; the reasons it failed otherwise.
pub(super) fn attach_release_hook(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    hook: &str,
) -> Result<Mechanism, String> {
    let mut notes = Vec::new();
    if mode.tries_fentry() {
        match (&facts.tracing, aya_btf) {
            (Ok(()), Some(btf)) => {
                let prog: &mut FEntry = program(ebpf, "put_fentry")?;
                match prog.load(hook, btf).and_then(|()| prog.attach()) {
                    Ok(_) => return Ok(Mechanism::Fentry),
                    Err(e) => {
                        let _ = prog.unload();
                        notes.push(format!("fentry: {}", short_error(&e)));
                    }
                }
            }
            (Err(e), _) => notes.push(format!("fentry: {e}")),
            (Ok(()), None) => notes.push("fentry: no kernel BTF".into()),
        }
    }
    if mode.tries_kprobe() {
        match &facts.kprobes {
            Ok(()) => {
                let prog: &mut KProbe = program(ebpf, "put_kprobe")?;
                match prog.load().and_then(|()| prog.attach(hook, 0)) {
                    Ok(_) => return Ok(Mechanism::Kprobe),
                    Err(e) => notes.push(format!("kprobe: {}", short_error(&e))),
                }
            }
            Err(e) => notes.push(format!("kprobe: {e}")),
        }
    }
    Err(notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{BASELINE_OBJECT, EBPF_OBJECT};

    #[test]
    fn every_program_name_is_in_the_embedded_object() {
        assert_eq!(program_names(6, &FUNCS[6])[0], "gup_fentry_06");
        for object in [EBPF_OBJECT, BASELINE_OBJECT] {
            for (id, func) in FUNCS.iter().enumerate() {
                for name in program_names(id as FuncId, func) {
                    let needle = format!("{name}\0");
                    assert!(
                        object.windows(needle.len()).any(|w| w == needle.as_bytes()),
                        "{name} not in the eBPF object"
                    );
                }
            }
        }
        assert_ne!(EBPF_OBJECT, BASELINE_OBJECT);
    }
}
