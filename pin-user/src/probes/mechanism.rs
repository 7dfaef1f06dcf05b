//! The attach mechanisms: the one the user asks for (`--attach`) and the
//! one each function ended up attached with.

use serde::Serialize;

/// Which mechanism the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// fentry/fexit where the kernel allows it, else kprobe/kretprobe.
    Auto,
    /// Only fentry/fexit.
    Fentry,
    /// Only kprobe/kretprobe.
    Kprobe,
    /// Every get/pin and release function on one kprobe_multi entry link
    /// and one return link (Linux 5.18-6.13, built with fprobe): attaches
    /// in a fraction of the time; the release hook and the memlock checks
    /// stay kprobes.
    #[serde(rename = "kprobe-multi")]
    KprobeMulti,
    /// Every get/pin and release function on one tracing multi entry link
    /// and one return link (fentry and fexit for many functions at once,
    /// Linux 7.3): one program pair verified once and the trampolines
    /// installed in one batch; the release hook and the memlock checks
    /// stay fentry/fexit of their own.
    #[serde(rename = "fentry-multi")]
    FentryMulti,
}

impl AttachMode {
    /// Whether fentry/fexit is tried.
    pub fn tries_fentry(self) -> bool {
        matches!(
            self,
            AttachMode::Auto | AttachMode::Fentry | AttachMode::FentryMulti
        )
    }

    /// Whether kprobes are tried (where fentry is not, or fails).
    pub fn tries_kprobe(self) -> bool {
        self != AttachMode::Fentry
    }
}

/// How a probe ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// fentry + fexit (BPF trampoline).
    Fentry,
    /// kprobe + kretprobe.
    Kprobe,
    /// One kprobe_multi entry link and one return link for many functions.
    #[serde(rename = "kprobe_multi")]
    KprobeMulti,
    /// One tracing multi entry link and one return link (fentry and
    /// fexit) for many functions.
    #[serde(rename = "fentry_multi")]
    FentryMulti,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::Fentry => "fentry",
            Mechanism::Kprobe => "kprobe",
            Mechanism::KprobeMulti => "kprobe_multi",
            Mechanism::FentryMulti => "fentry_multi",
        })
    }
}
