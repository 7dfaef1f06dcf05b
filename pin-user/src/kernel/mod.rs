//! What the running kernel offers a GUP tracer: its release, its BTF, its
//! symbols, and whether it lets us run kprobes and tracing (fentry/fexit)
//! programs. Everything is discovered, nothing assumed.

pub mod ahead;
pub mod bpf_sys;
pub mod btf;
pub mod config;
pub mod features;
mod file_parts;
pub mod foll;
pub mod kallsyms;
pub mod symbols;
mod tracing;

pub use btf::Btf;
pub use features::Features;
use features::Object;
pub use kallsyms::Kallsyms;

/// Facts about the running kernel gathered once at start-up.
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// The kernel's BTF, or why it could not be read.
    pub btf: Result<Btf, String>,
    /// Text symbols from /proc/kallsyms, read once: generating it is one
    /// of the slowest parts of start-up (attaching needs it for the
    /// return trampoline's address, and the baseline object for every
    /// function's), so a thread reads it from the start, while BTF is
    /// parsed and the mechanisms probed ([`kallsyms::Reader`]).
    kallsyms: std::sync::OnceLock<Kallsyms>,
    /// The thread reading kallsyms, until the first use joins it.
    kallsyms_reader: std::sync::Mutex<Option<kallsyms::Reader>>,
    /// Ok when kprobes can be created, else why not.
    pub kprobes: Result<(), String>,
    /// Ok when tracing programs (fentry/fexit) may be loaded, else why not.
    pub tracing: Result<(), String>,
    /// The BPF features pinwatch uses, probed.
    pub features: Features,
    /// How long reading BTF and probing the mechanisms and features took.
    pub phases: crate::startup::Phases,
    /// aya's loader, made on a thread from the start (without its own
    /// parse of the kernel BTF: `ahead`); taken by the attach.
    pub loader: std::sync::Mutex<ahead::Ahead<aya::EbpfLoader<'static>>>,
}

impl KernelFacts {
    /// Drops the parsed BTF once nothing more will ask it: the
    /// long-running commands, once attached. It is the largest thing the
    /// agent holds (measured: 10 MiB of RSS on 6.12, for the raw types,
    /// their index and every function's name); later questions to it are
    /// answered as on a kernel without BTF.
    pub fn release_btf(&mut self) {
        self.btf = Err("released once the probes were attached".into());
        self.forget_loader();
    }

    /// Drops aya's loader if no attach took it (reduced mode).
    pub fn forget_loader(&self) {
        self.loader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget();
    }

    /// Probes the running kernel.
    pub fn discover() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let mut phases = crate::startup::Phases::default();
        let kallsyms_reader = start_kallsyms_reader();
        let loader = std::sync::Mutex::new(ahead::aya_loader());
        log::info!("reading kernel BTF");
        let btf = phases.time("BTF", || {
            Btf::from_sys_fs().map_err(|e| {
                format!(
                    "no kernel BTF: {e} (pinwatch checks every function's signature in it \
                     before probing, with kprobes too)"
                )
            })
        });
        log::info!("probing mechanisms");
        let (kprobes, tracing) = phases.time("mechanisms", || {
            (kprobes_available(), tracing_allowed(&btf))
        });
        let features = phases.time("features", || Features::probe(&btf, &tracing, &kprobes));
        if let Some(reader) = &kallsyms_reader {
            reader.enough(enough_symbols(btf.as_ref().ok(), features.object()));
        }
        Self {
            release,
            btf,
            kallsyms: std::sync::OnceLock::new(),
            kallsyms_reader: std::sync::Mutex::new(kallsyms_reader),
            kprobes,
            tracing,
            features,
            phases,
            loader,
        }
    }

    /// The kernel's code symbols that pinwatch cares about (the catalogue's
    /// and the return trampolines), with their addresses.
    pub fn kallsyms(&self) -> &Kallsyms {
        self.kallsyms.get_or_init(|| {
            let reader = self
                .kallsyms_reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let symbols = match reader {
                Some(reader) => reader.join(),
                None => Kallsyms::open()
                    .ok()
                    .map(|file| Kallsyms::read(file, &wanted_symbols(), &Default::default())),
            };
            symbols.unwrap_or_default()
        })
    }

    /// Why no probe mechanism at all can work here, if that is the case.
    pub fn no_mechanism_reason(&self) -> Option<String> {
        match (&self.kprobes, &self.tracing) {
            (Err(k), Err(t)) => Some(format!("{k}; {t}")),
            _ => None,
        }
    }
}

/// What kallsyms must show before its reader may stop, as BTF and the
/// object to load tell: the return trampoline kretprobes write on this
/// kernel (rethook's where tasks keep rethook nodes, CONFIG_RETHOOK; else
/// whichever of the older two this kernel has: they never coexist), and,
/// for the baseline object only (which cannot ask the kernel where a
/// traced function starts), each catalogued function BTF describes.
/// Without BTF, clones matter: read to the end of the text.
fn enough_symbols(btf: Option<&Btf>, object: Object) -> Vec<Vec<&'static str>> {
    let Some(btf) = btf else {
        return kallsyms::to_end_of_text();
    };
    let trampoline = if btf.member_offset("task_struct", "rethooks").is_some() {
        vec![kallsyms::RETURN_TRAMPOLINES[0]]
    } else {
        kallsyms::RETURN_TRAMPOLINES[1..].to_vec()
    };
    let functions = pin_common::FUNCS
        .iter()
        .flat_map(|f| f.symbols.iter().copied())
        .filter(|name| object == Object::Baseline && btf.has_func(name))
        .map(|name| vec![name]);
    std::iter::once(trampoline).chain(functions).collect()
}

/// The symbols pinwatch wants out of /proc/kallsyms at start-up: every
/// function's names and the return trampolines.
fn wanted_symbols() -> Vec<&'static str> {
    pin_common::FUNCS
        .iter()
        .flat_map(|f| f.symbols.iter().copied())
        .chain(kallsyms::RETURN_TRAMPOLINES)
        .collect()
}

/// Starts the start-up read of /proc/kallsyms. It waits to be told what
/// is enough: with the full object that is the return trampoline, a few
/// thousand lines in, and reading meanwhile would only take a CPU from
/// the BTF parse (2 vCPUs, 6.12: the reader stopped 154-206 ms in, at
/// about a third of the text, when it read from the start).
fn start_kallsyms_reader() -> Option<kallsyms::Reader> {
    kallsyms::Reader::start("kallsyms", wanted_symbols())
}

/// Parses `major.minor` out of a kernel release string.
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    crate::model::KernelVersion::parse(release).map(|v| (v.major, v.minor))
}

fn kprobes_available() -> Result<(), String> {
    // aya creates kprobes through the perf "kprobe" PMU, which exists
    // exactly when the kernel was built with CONFIG_KPROBES.
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        Ok(())
    } else {
        Err("kprobes unavailable: the kernel lacks CONFIG_KPROBES \
             (/sys/bus/event_source/devices/kprobe is absent)"
            .to_string())
    }
}

/// Whether tracing programs load: an empty fentry program on
/// `bpf_fentry_test1`, found in the BTF already parsed ([`tracing`]).
fn tracing_allowed(btf: &Result<Btf, String>) -> Result<(), String> {
    let btf = btf
        .as_ref()
        .map_err(|e| format!("fentry/fexit unavailable: they attach by BTF ({e})"))?;
    let id = btf.func_id("bpf_fentry_test1").ok_or_else(|| {
        "fentry/fexit unavailable: BTF lacks bpf_fentry_test1, the function they are tried on"
            .to_string()
    })?;
    tracing::fentry_loads(id)
}

/// Why the verifier refused a program, from its `log`: the last lines are
/// usually statistics ("processed ...", "verification time ...", "stack
/// depth ..."); the reason is the last line before them.
pub fn verifier_reason(log: &str) -> Option<&str> {
    log.trim_end_matches('\0')
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        })
}

/// A one-line rendering of an aya program error (verifier logs can be
/// thousands of lines; keep the last meaningful one).
pub fn short_error(err: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            match verifier_reason(&log) {
                Some(last) => format!("BPF_PROG_LOAD: {io_error}: {last}"),
                None => format!("BPF_PROG_LOAD: {io_error}"),
            }
        }
        other => {
            let mut msg = other.to_string();
            // 524 is the kernel-internal ENOTSUPP, which libc cannot name:
            // the kernel refused a BPF trampoline on this function.
            let msg_fixup = |m: String| {
                m.replace(
                    "Unknown error 524",
                    "ENOTSUPP, no BPF trampoline for this function",
                )
            };
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg_fixup(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader may stop once it has rethook's trampoline where tasks
    /// keep rethook nodes, either older one elsewhere, and, for the
    /// baseline object, each catalogued function BTF describes; without
    /// BTF it reads the whole text.
    #[test]
    fn kallsyms_may_stop_at_what_btf_says_is_there() {
        use crate::kernel::btf::tests::build;
        const KIND_INT: u32 = 1;
        const KIND_STRUCT: u32 = 4;
        const KIND_FUNC: u32 = 12;
        const KIND_FUNC_PROTO: u32 = 13;
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // "rethooks" is string 1 (interned first); member of type 1 at 0.
        let types = vec![
            ("long", info(KIND_INT, 0), 8, vec![64]),
            ("", info(KIND_FUNC_PROTO, 0), 0, vec![]),
            ("pin_user_pages_fast", info(KIND_FUNC, 0), 2, vec![]),
            ("unpin_user_page", info(KIND_FUNC, 0), 2, vec![]),
            ("task_struct", info(KIND_STRUCT, 1), 8, vec![1, 1, 0]),
        ];
        let with = Btf::parse(build(&types, &["rethooks"])).unwrap();
        assert_eq!(
            enough_symbols(Some(&with), Object::Baseline),
            [
                vec!["arch_rethook_trampoline"],
                vec!["pin_user_pages_fast"],
                vec!["unpin_user_page"],
            ]
        );
        // The full object asks the kernel where each function starts.
        assert_eq!(
            enough_symbols(Some(&with), Object::Full),
            [vec!["arch_rethook_trampoline"]]
        );
        let without = Btf::parse(build(&types, &["kretprobe_instances"])).unwrap();
        assert_eq!(
            enough_symbols(Some(&without), Object::Full),
            [vec!["__kretprobe_trampoline", "kretprobe_trampoline"]]
        );
        assert_eq!(
            enough_symbols(None, Object::Baseline),
            kallsyms::to_end_of_text()
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_version("6.1.0-50-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_version("garbage"), None);
    }
}
