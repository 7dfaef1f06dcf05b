//! The embedded object's programs per function (fentry/fexit, kprobe/
//! kretprobe), loaded and attached as a pair or not at all.

use aya::{
    Ebpf,
    programs::{FEntry, FExit, KProbe, RawTracePoint},
};
use pin_common::{FuncId, FuncKind, catalog::FuncInfo};

use super::{AttachMode, Mechanism};
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

/// Loads and attaches `symbol`'s fentry (and fexit when `with_exit`);
/// on failure nothing of it stays loaded.
pub(super) fn attach_fentry(
    ebpf: &mut Ebpf,
    names: &[String; 4],
    symbol: &str,
    btf: &aya::Btf,
    with_exit: bool,
) -> Result<(), String> {
    // Exit first: an entry without its exit would leave the task's nesting
    // state unbalanced; an exit without an entry is merely counted.
    if with_exit {
        let exit: &mut FExit = program(ebpf, &names[1])?;
        exit.load(symbol, btf).map_err(|e| short_error(&e))?;
        if let Err(e) = exit.attach() {
            let _ = exit.unload();
            return Err(short_error(&e));
        }
    }
    let entry: &mut FEntry = program(ebpf, &names[0])?;
    let result = entry
        .load(symbol, btf)
        .and_then(|()| entry.attach().map(drop));
    if let Err(e) = result {
        let _ = entry.unload();
        if with_exit {
            let exit: &mut FExit = program(ebpf, &names[1])?;
            let _ = exit.unload();
        }
        return Err(short_error(&e));
    }
    Ok(())
}

/// Loads and attaches `symbol`'s kprobe (and kretprobe when `with_exit`);
/// on failure nothing of it stays loaded.
pub(super) fn attach_kprobe(
    ebpf: &mut Ebpf,
    names: &[String; 4],
    symbol: &str,
    with_exit: bool,
) -> Result<(), String> {
    if with_exit {
        let exit: &mut KProbe = program(ebpf, &names[3])?;
        exit.load().map_err(|e| short_error(&e))?;
        if let Err(e) = exit.attach(symbol, 0) {
            let _ = exit.unload();
            return Err(short_error(&e));
        }
    }
    let entry: &mut KProbe = program(ebpf, &names[2])?;
    let result = entry
        .load()
        .and_then(|()| entry.attach(symbol, 0).map(drop));
    if let Err(e) = result {
        let _ = entry.unload();
        if with_exit {
            let exit: &mut KProbe = program(ebpf, &names[3])?;
            let _ = exit.unload();
        }
        return Err(short_error(&e));
    }
    Ok(())
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

/// Loads and attaches the `sched_process_exit` raw tracepoint that counts,
/// as missed, a call an exiting thread was never seen to return from.
pub(super) fn attach_exit_watch(ebpf: &mut Ebpf) -> Result<(), String> {
    let watch: &mut RawTracePoint = program(ebpf, "task_exit")?;
    watch.load().map_err(|e| short_error(&e))?;
    watch
        .attach("sched_process_exit")
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
    if mode != AttachMode::Kprobe {
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
    if mode != AttachMode::Fentry {
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
    use pin_common::FUNCS;

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
