//! The memlock checks' probes: the kernel functions that decide whether a
//! charge fits RLIMIT_MEMLOCK, watched at their return so that a refusal
//! shows as the kernel's own verdict (`LIMIT_DENIALS`). io_uring's buffer
//! registrations are watched at `io_account_mem` where the kernel has it
//! as a function (6.18 inlines `__io_account_mem` into it), else at
//! `__io_account_mem` (6.1 to 6.12; inlined everywhere before 6.1); the
//! rest at `__account_locked_vm`, and mlock/mlock2 at `do_mlock`.
//! mmap's MAP_LOCKED check (`mlock_future_ok`, `mlock_future_check` on
//! 6.1) is inlined into `do_mmap` on every kernel of the matrix: its
//! out-of-line copy sees only other callers, so it is not watched.
//! Optional, each on its own: a kernel without the function, or whose BTF
//! lacks a member the probe reads, has no verdicts for that check, and
//! `pinwatch probes` says why.

use aya::{
    Ebpf,
    programs::{FExit, KProbe},
};
use pin_common::limits::{
    CHECK_ACCOUNT_LOCKED_VM, CHECK_COUNT, CHECK_IO_URING, CHECK_MLOCK, CHECK_NAMES, SHAPE_CTX_NR,
    SHAPE_MLOCK, SHAPE_MM_TASK, SHAPE_USER_MM_NR, SHAPE_USER_NR,
};
use serde::Serialize;

use super::{AttachMode, Mechanism, programs::program, settings::LimitLayout};
use crate::kernel::{KernelFacts, btf::Btf, short_error};

/// A function that can decide a check, recognised by its parameter names.
struct Candidate {
    check: u32,
    function: &'static str,
    params: &'static [&'static str],
    shape: u32,
    fexit: &'static str,
    kprobe: &'static str,
}

/// The shared kretprobe of every kprobe'd check (the kprobe stashed which).
const KRETPROBE: &str = "check_kretprobe";

/// In order of preference per check (see the module doc).
const CANDIDATES: [Candidate; 5] = [
    Candidate {
        check: CHECK_IO_URING,
        function: "io_account_mem",
        params: &["user", "mm_account", "nr_pages"],
        shape: SHAPE_USER_MM_NR,
        fexit: "io_account3_fexit",
        kprobe: "io_account3_kprobe",
    },
    Candidate {
        check: CHECK_IO_URING,
        function: "io_account_mem",
        params: &["ctx", "nr_pages"],
        shape: SHAPE_CTX_NR,
        fexit: "io_account_ctx_fexit",
        kprobe: "io_account_ctx_kprobe",
    },
    Candidate {
        check: CHECK_IO_URING,
        function: "__io_account_mem",
        params: &["user", "nr_pages"],
        shape: SHAPE_USER_NR,
        fexit: "io_account_fexit",
        kprobe: "io_account_kprobe",
    },
    Candidate {
        check: CHECK_ACCOUNT_LOCKED_VM,
        function: "__account_locked_vm",
        params: &["mm", "pages", "inc", "task", "bypass_rlim"],
        shape: SHAPE_MM_TASK,
        fexit: "locked_vm_fexit",
        kprobe: "locked_vm_kprobe",
    },
    Candidate {
        check: CHECK_MLOCK,
        function: "do_mlock",
        params: &["start", "len", "flags"],
        shape: SHAPE_MLOCK,
        fexit: "mlock_fexit",
        kprobe: "mlock_kprobe",
    },
];

/// How one memlock check is watched, or why it is not.
#[derive(Clone, Debug, Serialize)]
pub struct CheckStatus {
    /// The check (`io_uring`, `account_locked_vm`).
    pub check: &'static str,
    /// The kernel function watched (the first candidate where none is).
    pub function: &'static str,
    /// The mechanism, or why there are no verdicts from it here.
    #[serde(serialize_with = "serialize_attached")]
    pub attached: Result<Mechanism, String>,
}

fn serialize_attached<S: serde::Serializer>(
    attached: &Result<Mechanism, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match attached {
        Ok(m) => s.serialize_str(&m.to_string()),
        Err(why) => s.serialize_str(&format!("not attached: {why}")),
    }
}

/// Every kernel function a memlock check may attach to.
pub(super) fn functions() -> impl Iterator<Item = &'static str> {
    CANDIDATES.iter().map(|c| c.function)
}

/// The candidate this kernel has for `check` (its BTF prototype has the
/// parameters pinwatch reads), or why none fits.
fn candidate(btf: &Btf, check: u32) -> Result<&'static Candidate, String> {
    let mut seen = Vec::new();
    for c in CANDIDATES.iter().filter(|c| c.check == check) {
        let Some(proto) = btf.func_proto(c.function) else {
            continue;
        };
        let names: Vec<&str> = proto.params.iter().map(|p| p.name.as_str()).collect();
        if names == c.params {
            return Ok(c);
        }
        seen.push(format!("{}({})", c.function, names.join(", ")));
    }
    let mut known: Vec<&str> = CANDIDATES
        .iter()
        .filter(|c| c.check == check)
        .map(|c| c.function)
        .collect();
    known.dedup();
    Err(if seen.is_empty() {
        format!(
            "{} is not a function of this kernel (inlined or absent)",
            known.join(" / ")
        )
    } else {
        format!("unknown prototype {}", seen.join(", "))
    })
}

/// Attaches every memlock check this kernel allows with mechanism `mode`.
pub(super) fn attach_checks(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    layout: &LimitLayout,
) -> Vec<CheckStatus> {
    (0..CHECK_COUNT)
        .map(|check| {
            let first = CANDIDATES.iter().find(|c| c.check == check);
            let mut function = first.map_or("?", |c| c.function);
            let chosen = match &facts.btf {
                Ok(btf) => candidate(btf, check),
                Err(e) => Err(e.clone()),
            };
            let attached = chosen.and_then(|c| {
                function = c.function;
                match layout.missing_for(c.shape) {
                    Some(member) => Err(format!("BTF lacks {member}, which the verdict reads")),
                    None => attach_check(ebpf, facts, mode, aya_btf, c),
                }
            });
            let name = CHECK_NAMES[check as usize];
            if let Err(why) = &attached {
                log::info!("no memlock verdicts for {name}: {why}");
            }
            CheckStatus {
                check: name,
                function,
                attached,
            }
        })
        .collect()
}

/// fexit first unless kprobes are asked for, then a kprobe pair; the
/// reasons each failed otherwise.
fn attach_check(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: AttachMode,
    aya_btf: Option<&aya::Btf>,
    c: &Candidate,
) -> Result<Mechanism, String> {
    let (function, fexit, kprobe) = (c.function, c.fexit, c.kprobe);
    let mut notes = Vec::new();
    if mode.tries_fentry() {
        match (&facts.tracing, aya_btf) {
            (Ok(()), Some(btf)) => {
                let prog: &mut FExit = program(ebpf, fexit)?;
                match prog.load(function, btf).and_then(|()| prog.attach()) {
                    Ok(_) => return Ok(Mechanism::Fentry),
                    Err(e) => {
                        let _ = prog.unload();
                        notes.push(format!("fexit: {}", short_error(&e)));
                    }
                }
            }
            (Err(e), _) => notes.push(format!("fexit: {e}")),
            (Ok(()), None) => notes.push("fexit: no kernel BTF".into()),
        }
    }
    if mode.tries_kprobe() {
        match &facts.kprobes {
            Ok(()) => match attach_kprobe_pair(ebpf, function, kprobe) {
                Ok(()) => return Ok(Mechanism::Kprobe),
                Err(e) => notes.push(format!("kprobe: {e}")),
            },
            Err(e) => notes.push(format!("kprobe: {e}")),
        }
    }
    Err(notes.join("; "))
}

/// The kretprobe first, so that no entry is stashed that nothing takes.
/// Both checks share the kretprobe program, loaded once and attached to
/// each function.
fn attach_kprobe_pair(ebpf: &mut Ebpf, function: &str, kprobe: &str) -> Result<(), String> {
    let exit: &mut KProbe = program(ebpf, KRETPROBE)?;
    if exit.fd().is_err() {
        exit.load().map_err(|e| short_error(&e))?;
    }
    let exit_link = exit.attach(function, 0).map_err(|e| short_error(&e))?;
    let entry: &mut KProbe = program(ebpf, kprobe)?;
    let attached = entry
        .load()
        .and_then(|()| entry.attach(function, 0))
        .map(drop)
        .map_err(|e| short_error(&e));
    if attached.is_err() {
        let exit: &mut KProbe = program(ebpf, KRETPROBE)?;
        let _ = exit.detach(exit_link);
    }
    attached
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{BASELINE_OBJECT, EBPF_OBJECT};

    #[test]
    fn every_check_program_is_in_the_embedded_objects() {
        for object in [EBPF_OBJECT, BASELINE_OBJECT] {
            let names = CANDIDATES.iter().flat_map(|c| [c.fexit, c.kprobe]);
            for name in names.chain([KRETPROBE]) {
                let needle = format!("{name}\0");
                assert!(
                    object.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{name} not in the eBPF object"
                );
            }
        }
    }
}
