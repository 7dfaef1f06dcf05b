//! Which multi-function links ([`MultiKind`]), whether this kernel has
//! them ([`unsupported`]), and which `--attach` picks them, with the
//! uapi numbers each kind is loaded and linked with.

use crate::kernel::{
    KernelFacts,
    features::{Feature, Object},
};
use crate::probes::{AttachMode, Mechanism};

/// `BPF_PROG_TYPE_KPROBE`.
pub(super) const PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_TRACING`.
pub(super) const PROG_TYPE_TRACING: u32 = 26;
/// `BPF_TRACE_KPROBE_MULTI`.
pub(super) const TRACE_KPROBE_MULTI: u32 = 42;
/// `BPF_TRACE_FENTRY_MULTI` (Linux 7.3's uapi).
pub(super) const TRACE_FENTRY_MULTI: u32 = 59;
/// `BPF_TRACE_FEXIT_MULTI`.
pub(super) const TRACE_FEXIT_MULTI: u32 = 60;
/// `BPF_F_KPROBE_MULTI_RETURN`.
pub(super) const KPROBE_MULTI_RETURN: u32 = 1;

/// Which multi-function links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiKind {
    /// kprobe_multi links (`--attach kprobe-multi`).
    Kprobe,
    /// Tracing multi links (`--attach fentry-multi`).
    Fentry,
}

impl MultiKind {
    /// The kind `mode` asks for, if any.
    fn of(mode: AttachMode) -> Option<Self> {
        match mode {
            AttachMode::KprobeMulti => Some(MultiKind::Kprobe),
            AttachMode::FentryMulti => Some(MultiKind::Fentry),
            _ => None,
        }
    }

    /// The links to attach with under `mode` on this kernel: the kind it
    /// asks for (an error saying why where the kernel cannot), and with
    /// `--attach auto` tracing multi links wherever the kernel has them:
    /// the same trampolines as per-function fentry, but one program pair
    /// to verify and one batch of trampoline updates (on 7.3 under TCG,
    /// `attach functions` 0.11 s against 1.7-1.9 s; BENCHMARKS.md,
    /// "Start-up with tracing multi links").
    pub fn for_attach(mode: AttachMode, facts: &KernelFacts) -> Result<Option<Self>, String> {
        match Self::of(mode) {
            Some(kind) => match unsupported(facts, kind) {
                Some(why) => Err(format!("{}: {why}", kind.option())),
                None => Ok(Some(kind)),
            },
            None if mode == AttachMode::Auto => Ok(unsupported(facts, MultiKind::Fentry)
                .is_none()
                .then_some(MultiKind::Fentry)),
            None => Ok(None),
        }
    }

    /// The mechanism the functions on the links are attached with.
    pub fn mechanism(self) -> Mechanism {
        match self {
            MultiKind::Kprobe => Mechanism::KprobeMulti,
            MultiKind::Fentry => Mechanism::FentryMulti,
        }
    }

    /// The option that asks for these links.
    pub fn option(self) -> &'static str {
        match self {
            MultiKind::Kprobe => "--attach kprobe-multi",
            MultiKind::Fentry => "--attach fentry-multi",
        }
    }

    /// The kernel feature the links need.
    fn feature(self) -> Feature {
        match self {
            MultiKind::Kprobe => Feature::KprobeMulti,
            MultiKind::Fentry => Feature::FentryMulti,
        }
    }

    /// The object's entry and return programs.
    pub fn program_names(self) -> [&'static str; 2] {
        match self {
            MultiKind::Kprobe => ["multi_kprobe", "multi_kretprobe"],
            MultiKind::Fentry => ["multi_fentry", "multi_fexit"],
        }
    }

    /// The entry and return programs' kinds, as skipped runs and run
    /// statistics name them.
    pub fn program_kinds(self) -> [&'static str; 2] {
        match self {
            MultiKind::Kprobe => ["kprobe", "kretprobe"],
            MultiKind::Fentry => ["fentry", "fexit"],
        }
    }

    /// The function name the programs' skipped runs and run statistics
    /// are shown under: one program serves every function, and the
    /// kernel counts per program and per link.
    pub fn functions_row(self) -> &'static str {
        match self {
            MultiKind::Kprobe => "(kprobe_multi: all)",
            MultiKind::Fentry => "(fentry_multi: all)",
        }
    }

    /// `bpf_prog_type` and the entry and return programs' expected
    /// attach types.
    pub(super) fn load_types(self) -> (u32, [u32; 2]) {
        match self {
            MultiKind::Kprobe => (PROG_TYPE_KPROBE, [TRACE_KPROBE_MULTI; 2]),
            MultiKind::Fentry => (PROG_TYPE_TRACING, [TRACE_FENTRY_MULTI, TRACE_FEXIT_MULTI]),
        }
    }

    /// The links' name in messages.
    pub(super) fn links_name(self) -> &'static str {
        match self {
            MultiKind::Kprobe => "kprobe_multi",
            MultiKind::Fentry => "tracing multi",
        }
    }
}

/// Why `kind`'s links cannot be used on this kernel, if they cannot: the
/// feature probe ([`Feature::KprobeMulti`], [`Feature::FentryMulti`])
/// says why the links are off.
fn unsupported(facts: &KernelFacts, kind: MultiKind) -> Option<String> {
    let feature = kind.feature();
    let why = if kind == MultiKind::Kprobe
        && let Err(e) = &facts.kprobes
    {
        format!("kprobes unavailable: {e}")
    } else if kind == MultiKind::Fentry
        && let Err(e) = &facts.tracing
    {
        format!("tracing programs unavailable: {e}")
    } else if !facts.features.has(feature) {
        let evidence = facts
            .features
            .list
            .iter()
            .find(|s| s.feature == feature)
            .map_or("not probed", |s| s.evidence.as_str());
        format!(
            "no {} links pinwatch can use ({evidence})",
            kind.links_name()
        )
    } else if facts.features.object() == Object::Baseline {
        "the baseline eBPF object this kernel needs has no multi programs".to_string()
    } else {
        return None;
    };
    Some(format!(
        "kernel {}: {why}; use --attach auto",
        facts.release
    ))
}
