//! Probe discovery and attach: which GUP functions the running kernel has
//! ([`signature`]), which mechanism reaches each (fentry/fexit preferred,
//! kprobe/kretprobe as fallback; [`programs`]), and the loaded eBPF object
//! that keeps the links alive, whose maps the rest of the agent reaches
//! only through [`maps`]' typed facade.

mod attach_ids;
pub mod batch;
mod capacities;
mod checks;
mod detacher;
pub mod earlier_run;
mod fold;
mod follow;
pub mod footprint;
mod handoff;
pub use handoff::exits_after_stop;
mod load;
pub mod maps;
mod mechanism;
pub mod memlock;
pub mod misses;
mod multi;
mod pid_namespace;
mod programs;
mod release_at_hook;
mod settings;
mod shed;
mod signature;
mod tables_only;
mod threads;
mod verifier_slots;

use aya::Ebpf;
use pin_common::{FUNCS, FuncId, FuncKind};
use serde::Serialize;

use crate::kernel::{KernelFacts, features::Feature};
pub use capacities::MapCapacities;
pub use checks::CheckStatus;
#[cfg(test)]
use load::{BASELINE_OBJECT, EBPF_OBJECT};
use load::{configure_functions, load_object};
pub use maps::{KernelMapError, KernelMaps, KernelMapsMut};
pub use mechanism::{AttachMode, Mechanism};
pub(crate) use programs::program;
use programs::{
    NONE_LEFT_OUT, attach_functions, attach_multi, attach_release_hook, attach_task_watch,
    unload_all,
};
use settings::Globals;
use signature::resolve_symbol;
pub use tables_only::TablesOnly;

pub use pin_common::catalog::RELEASE_HOOKS;

/// The name the release hook has on this kernel (BTF tells; the newest
/// name where it cannot).
pub fn release_hook_symbol(facts: &KernelFacts) -> &'static str {
    facts
        .btf
        .as_ref()
        .ok()
        .and_then(|btf| RELEASE_HOOKS.iter().find(|s| btf.has_func(s)))
        .unwrap_or(&RELEASE_HOOKS[0])
}

/// What to attach and which optional kernel-side features to turn on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachOptions {
    /// Mechanism wanted.
    pub mode: AttachMode,
    /// Attribute every outermost call to its kernel call site (a short
    /// stack read per call).
    pub callers: bool,
    /// Time pin lifetimes (a map update per pinned page and per release).
    pub lifetimes: bool,
    /// Count only the tasks of this cgroup v2 directory and its
    /// descendants (`--cgroup`; filtered in the kernel).
    pub cgroup: Option<std::path::PathBuf>,
    /// A process tree will be followed ([`Probes::follow`]): sizes the
    /// followed-task map (one entry otherwise); without, no probe tests it.
    pub follow: bool,
    /// Per-call events will be asked for; without, no probe tests for them.
    pub events: bool,
    /// The sizes of the tables that grow with the work.
    pub capacities: MapCapacities,
}

impl AttachOptions {
    /// The default instrumentation with mechanism `mode`.
    pub fn new(mode: AttachMode) -> Self {
        Self {
            mode,
            callers: true,
            lifetimes: false,
            cgroup: None,
            follow: false,
            events: false,
            capacities: MapCapacities::default(),
        }
    }
}

/// The outcome for one known function.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    /// Function id (index into `pin_common::FUNCS`).
    pub id: FuncId,
    /// pinwatch's name for the function.
    pub function: &'static str,
    /// Role of the function.
    pub role: &'static str,
    /// The kernel symbol found, if any.
    pub symbol: Option<String>,
    /// Mechanism it is attached with, if attached.
    pub attached: Option<Mechanism>,
    /// Why it is not attached, or what failed before the mechanism that worked.
    pub notes: Vec<String>,
    /// Present but deliberately left untraced: the functions around it
    /// already show everything its probes would (the internal fast path,
    /// when every fast variant that calls it is traced).
    pub not_needed: bool,
}

impl ProbeStatus {
    /// Present on this kernel yet not traced, when it should be.
    pub fn is_gap(&self) -> bool {
        self.attached.is_none() && !self.not_needed
    }
}

/// The EPERM or EACCES among an error's causes, if there is one.
fn permission_denied<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// Errors that stop pinwatch from tracing at all.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The process lacks the capabilities attaching needs.
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    /// The kernel refused bpf() itself although the process holds the
    /// capabilities: a seccomp filter (containers) or an LSM denies it.
    #[error(
        "the kernel refused bpf() ({0}) although pinwatch holds CAP_BPF and CAP_PERFMON: a seccomp \
         profile (as in containers) or a security module denies BPF"
    )]
    Refused(String),
    /// Linux before 5.11 charges BPF memory to RLIMIT_MEMLOCK, and the
    /// limit (in bytes) was too low and could not be raised.
    #[error(
        "the kernel refused pinwatch's BPF maps (EPERM): Linux before 5.11 charges them to \
         RLIMIT_MEMLOCK, which is {} here and cannot be raised without CAP_SYS_RESOURCE; run \
         pinwatch with `ulimit -l unlimited` (LimitMEMLOCK=infinity in a systemd unit)",
        memlock::human(*.0)
    )]
    Memlock(u64),
    /// The eBPF object (maps) could not be loaded.
    #[error("cannot load pinwatch's BPF maps: {0}")]
    Load(String),
    /// A feature asked for needs what this kernel lacks.
    #[error("{0}")]
    Unavailable(String),
    /// A stop signal arrived while attaching; what was attached is
    /// detached (dropped) before this is returned.
    #[error("stopped during start-up")]
    Stopped,
    /// Nothing attached.
    #[error("no GUP function could be traced on kernel {release}: {reason}")]
    NothingAttached {
        /// Kernel release.
        release: String,
        /// Summary of why.
        reason: String,
        /// The kernel exposes no BTF (`/sys/kernel/btf/vmlinux`), without
        /// which pinwatch probes nothing.
        needs_btf: bool,
    },
}

/// The kernel side's rare diagnostics (aya-log), forwarded to `log`.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Loaded programs and maps; dropping it detaches everything.
pub struct Probes {
    /// The eBPF object, owning programs, links and maps: reached from
    /// outside only through [`Probes::maps`] and [`Probes::maps_mut`].
    ebpf: Ebpf,
    /// Per known function, what happened.
    pub status: Vec<ProbeStatus>,
    /// Diagnostics from the programs; poll [`KernelLog::flush`] when its
    /// fd is readable. Must outlive the programs (it owns their log map).
    pub kernel_log: Option<KernelLog>,
    /// How pin lifetimes are traced, when `--lifetimes` asked for them.
    pub lifetimes: Option<Mechanism>,
    /// How the release hook ([`RELEASE_HOOKS`]) is traced (GUP's own
    /// releases are counted there), or why it is not.
    pub release_hook: Result<Mechanism, String>,
    /// The release hook's name on this kernel.
    pub release_hook_symbol: &'static str,
    /// Whether calls are attributed to kernel call sites (names need
    /// the kernel's symbols).
    pub callers: bool,
    /// Whether thread exits are traced (a call an exiting thread was never
    /// seen to return from is then counted as missed), or why not.
    pub exit_watch: Result<(), String>,
    /// Whether renames are traced (process names then follow exec and
    /// renames), or why not.
    pub rename_watch: Result<(), String>,
    /// The task iterator that folds the probes' per-thread pending counts
    /// before each read of the maps ([`fold`]), or why every call is
    /// accounted directly instead.
    pub fold: Result<fold::PendingFold, String>,
    /// The release function the release hook counts (its code is only a
    /// jump there, so it has no probe of its own), or why none is.
    pub release_at_hook: Result<&'static str, String>,
    /// The kernel features pinwatch goes without here and what that costs
    /// (see `pinwatch probes`), if any.
    pub features_off: Option<String>,
    /// How each memlock check is watched for the kernel's verdicts, or why
    /// it is not.
    pub checks: Vec<CheckStatus>,
    /// The kernel memory of the maps, read once they are created (while
    /// pinwatch can still read its own /proc entry: see
    /// [`footprint::map_footprints`]). Nothing pinwatch creates later
    /// grows them: the one map not preallocated, `TRACKED`, has a single
    /// entry unless `record` follows a command.
    pub map_memory: Result<Vec<footprint::MapFootprint>, String>,
    /// The sizes the tables that grow with the work were created with.
    pub capacities: MapCapacities,
    /// Where start-up time went: the kernel's discovery, then each step of
    /// loading and attaching.
    pub startup: crate::startup::Phases,
    /// pinwatch's trampoline programs an earlier run left that the kernel
    /// was still detaching when this one started, which `attach functions`
    /// waits for up to Linux 6.18 ([`earlier_run`]).
    pub earlier_run_detaching: usize,
    /// Where the links go on stop so that they are detached after this
    /// process is gone ([`handoff`]); `None` where its descriptors could
    /// not be listed.
    handoff: Option<handoff::Handoff>,
    /// The kprobe_multi programs and links (`--attach kprobe-multi`, while
    /// the links are attached); closed before the handoff finishes.
    multi: Option<multi::Multi>,
}

fn role(kind: FuncKind) -> &'static str {
    match kind {
        FuncKind::Variant => "variant",
        FuncKind::FastVariant => "fast variant",
        FuncKind::FastInternal => "fast path",
        FuncKind::SlowInternal => "slow path",
        FuncKind::Walker => "page walker",
        FuncKind::Release => "release",
    }
}

impl Probes {
    /// The object's maps, for reading.
    pub fn maps(&self) -> KernelMaps<'_> {
        KernelMaps::new(&self.ebpf, self.multi.as_ref(), self.fold.as_ref().ok())
    }

    /// The object's maps, for setting the probes up.
    pub fn maps_mut(&mut self) -> KernelMapsMut<'_> {
        KernelMapsMut::new(&mut self.ebpf)
    }

    /// Functions this kernel has that could not be attached.
    pub fn untraced(&self) -> Vec<&'static str> {
        self.status
            .iter()
            .filter(|st| st.is_gap() && st.symbol.is_some())
            .map(|st| st.function)
            .collect()
    }

    /// "attached 19 functions; untraced: a, b (see `pinwatch probes`)".
    pub fn summary(&self) -> String {
        let attached = self
            .status
            .iter()
            .filter(|st| st.attached.is_some())
            .count();
        let untraced = self.untraced();
        let mut summary = format!("attached {attached} functions");
        if !untraced.is_empty() {
            summary.push_str(&format!(
                "; untraced: {} (see `pinwatch probes`)",
                untraced.join(", ")
            ));
        }
        if let Some(off) = &self.features_off {
            summary.push_str(&format!("; {off}"));
        }
        summary
    }
}

/// Loads the eBPF object and attaches to every known function the kernel
/// has, with the requested mechanism. Fails only when nothing attached.
pub fn attach(facts: &KernelFacts, options: AttachOptions) -> Result<Probes, AttachError> {
    crate::privileges::check_can_attach()?;
    let links_before = handoff::existing_links();
    if options.lifetimes
        && let Some(why) = facts.features.lifetimes_unavailable()
    {
        return Err(AttachError::Unavailable(format!(
            "--lifetimes: {why}; run without --lifetimes"
        )));
    }
    // Listed beside the kernel's discovery, before this run loads any
    // program of its own.
    let earlier_run = earlier_run::Listing::start();
    // Read beside everything up to the load's end (its module doc).
    let ranges = release_at_hook::RangesReader::start(facts);
    let mut startup = facts.phases.clone();
    let object = facts.features.object();
    misses::set_kprobe_missed_readable(facts.features.has(Feature::KprobeMissed));
    startup.time("kallsyms", || facts.kallsyms());
    let multi_kind =
        multi::MultiKind::for_attach(options.mode, facts).map_err(AttachError::Unavailable)?;
    let hook = release_hook_symbol(facts);
    let mut status = discover(facts);
    let (functions, mut configured) = configure_functions(facts, object, &mut status);
    let globals = Globals::for_kernel(facts, &options).with_functions(functions);
    let earlier_run_detaching = earlier_run.say();
    let (loaded, aya_btf) = std::thread::scope(|scope| {
        // The type ids' index (30 ms under TCG on 6.12) is made beside the
        // load: parsing the object and creating its maps.
        let ids = std::thread::Builder::new()
            .name("attach-ids".into())
            .spawn_scoped(scope, || {
                attach_ids::for_attach(facts, options.mode, &status, hook)
            });
        let loaded = startup.time("load+verify", || {
            load_object(facts, &options, multi_kind, &globals)
        });
        let ids = startup.time("type ids for attach", || {
            ids.ok()
                .and_then(|thread| thread.join().ok())
                .unwrap_or_else(|| attach_ids::for_attach(facts, options.mode, &status, hook))
        });
        (loaded, ids)
    });
    let (ebpf, kernel_log, multi_programs) = loaded?;
    // Built first so that any failure from here on drops it, which
    // detaches what is attached the fast way (`Drop for Probes`).
    let mut probes = Probes {
        ebpf,
        status,
        kernel_log,
        lifetimes: None,
        release_hook: Err("not attached yet".into()),
        release_hook_symbol: hook,
        callers: options.callers,
        exit_watch: Err("not attached yet".into()),
        rename_watch: Err("not attached yet".into()),
        fold: Err("not attached yet".into()),
        release_at_hook: Err("not attached yet".into()),
        features_off: facts.features.off_summary(),
        checks: Vec::new(),
        map_memory: footprint::map_footprints().map_err(|e| format!("/proc/self/fdinfo: {e}")),
        capacities: options.capacities,
        startup: crate::startup::Phases::default(),
        earlier_run_detaching,
        handoff: None,
        multi: multi_programs.map(multi::Multi::new),
    };
    let mut maps = KernelMapsMut::new(&mut probes.ebpf);
    if let Some(dir) = &options.cgroup {
        settings::choose_cgroup(&mut maps, dir)?;
    }
    // `unpin_user_folio` counted at the release hook, where its code is
    // only a jump there: it gets no probe of its own (unless the hook
    // fails to attach, below). Its own attach job finds out; a single
    // kprobe_multi link needs to know first.
    let verdict = release_at_hook::Verdict::new(facts, hook, &probes.status, &configured, ranges);
    if probes.multi.is_some() {
        configured.retain(|id| !verdict.leaves_out(*id));
    }
    let ebpf = &mut probes.ebpf;
    let status = &mut probes.status;
    let on_links = startup.time("attach functions", || match probes.multi.as_mut() {
        Some(multi) => attach_multi(ebpf, facts, multi, aya_btf.as_ref(), status, &configured),
        None => attach_functions(
            ebpf,
            facts,
            options.mode,
            aya_btf.as_ref(),
            status,
            &configured,
            &|id| verdict.leaves_out(id),
        )
        .map(|()| false),
    })?;
    if !on_links {
        // Refused links: what is attached is per-function kprobes, and
        // the unused programs would only report rows of their own.
        probes.multi = None;
    }

    log::info!("GUP functions attached");
    let at_hook = verdict.apply(ebpf, |ebpf, id| {
        let (mode, btf) = (options.mode, aya_btf.as_ref());
        attach_functions(ebpf, facts, mode, btf, status, &[id], NONE_LEFT_OUT)
    })?;
    globals.start_lifetimes(&mut KernelMapsMut::new(ebpf))?;
    let release_hook = startup.time("attach release hook", || {
        attach_release_hook(ebpf, facts, options.mode, aya_btf.as_ref(), hook)
    });
    probes.lifetimes = lifetimes_hook(&release_hook, options.lifetimes, hook)?;
    probes.release_at_hook = release_at_hook::settle(
        &mut probes.ebpf,
        &mut probes.status,
        at_hook,
        &release_hook,
        hook,
        |ebpf, status, ids| {
            let (mode, btf) = (options.mode, aya_btf.as_ref());
            attach_functions(ebpf, facts, mode, btf, status, ids, NONE_LEFT_OUT)
        },
    );
    probes.release_hook = release_hook;
    log::info!("release hook attached; attaching the memlock checks");
    attach_watchers(
        &mut probes,
        facts,
        &options,
        aya_btf.as_ref(),
        &globals,
        &mut startup,
    );
    log::info!("attach done");
    if probes.status.iter().all(|st| st.attached.is_none()) {
        return Err(nothing_attached(facts, &probes.status));
    }
    // Now, while privileged (it mounts), and once every link exists.
    probes.handoff = startup.time("stop handoff", || {
        handoff::Handoff::prepare(&facts.release, &links_before)
            .inspect(|h| log::info!("{} links will be handed over on stop", h.links()))
            .inspect_err(|e| log::info!("links will be closed on stop, not handed over: {e}"))
            .ok()
    });
    log::info!("start-up: {startup}");
    probes.startup = startup;
    Ok(probes)
}

/// The mechanism pin lifetimes are timed with (`--lifetimes`), given how
/// the release hook `hook` attached; without the hook they cannot be, and
/// without `--lifetimes` the hook's failure is only a warning.
fn lifetimes_hook(
    release_hook: &Result<Mechanism, String>,
    lifetimes: bool,
    hook: &str,
) -> Result<Option<Mechanism>, AttachError> {
    match release_hook {
        Ok(mechanism) => Ok(lifetimes.then_some(*mechanism)),
        Err(e) if lifetimes => Err(AttachError::Load(format!(
            "--lifetimes needs a probe on {hook}, which failed ({e}); run without --lifetimes"
        ))),
        Err(e) => {
            log::warn!(
                "{hook} not traced ({e}): releases GUP makes itself (FOLL_LONGTERM \
                 migration, rollbacks) are not counted, so vmstat's nr_foll_pin_released \
                 exceeds pinwatch's releases by them"
            );
            Ok(None)
        }
    }
}

/// Attaches what watches beside the get/pin functions: the memlock checks
/// (the kernel's verdicts) and the task watches (missed calls of exiting
/// threads, process names); each failure is a note, not an error.
fn attach_watchers(
    probes: &mut Probes,
    facts: &KernelFacts,
    options: &AttachOptions,
    aya_btf: Option<&aya::Btf>,
    globals: &Globals,
    startup: &mut crate::startup::Phases,
) {
    probes.checks = startup.time("attach memlock checks", || {
        checks::attach_checks(
            &mut probes.ebpf,
            facts,
            options.mode,
            aya_btf,
            &globals.limit_layout,
        )
    });
    log::info!("memlock checks attached");
    let ebpf = &mut probes.ebpf;
    let (exit_watch, rename_watch) = startup.time("attach task watches", || {
        (
            attach_task_watch(ebpf, "task_exit", "sched_process_exit"),
            attach_task_watch(ebpf, "task_rename", "task_rename"),
        )
    });
    if let Err(e) = &exit_watch {
        log::warn!(
            "sched_process_exit not traced ({e}): a thread that exits while a call it made \
             was never seen to return is not counted as a missed call"
        );
    }
    if let Err(e) = &rename_watch {
        log::warn!(
            "task_rename not traced ({e}): each process keeps the name it had at its first \
             call, through exec and renames"
        );
    }
    (probes.exit_watch, probes.rename_watch) = (exit_watch, rename_watch);
    probes.fold = startup.time("attach pending fold", || {
        fold::attach(&mut probes.ebpf, facts, &probes.exit_watch)
    });
    if let Err(e) = &probes.fold {
        log::info!("every call accounted at its return: {e}");
    }
}

impl Drop for Probes {
    /// Hands the links over ([`handoff`]), then detaches what is left
    /// concurrently before the object (maps, and the log reader after
    /// them) goes: see [`programs::unload_all`].
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        let handed = self.handoff.take().map(handoff::Handoff::hand_over);
        unload_all(&mut self.ebpf);
        // The kprobe_multi links are pinned with the others: closed before
        // the handoff drops the pins, so that the kernel frees them there.
        drop(self.multi.take());
        let summary = handed.map_or_else(
            || "links closed here".to_string(),
            handoff::HandedOver::finish,
        );
        log::info!(
            "detached in {} ms ({summary})",
            started.elapsed().as_millis()
        );
    }
}

/// The error when no function attached. Without BTF no signature can be
/// checked, so nothing is probed whatever the mechanisms: that is said
/// rather than one function's note.
fn nothing_attached(facts: &KernelFacts, status: &[ProbeStatus]) -> AttachError {
    let reason = facts
        .no_mechanism_reason()
        .or_else(|| facts.btf.as_ref().err().cloned())
        .unwrap_or_else(|| {
            status
                .iter()
                .find_map(|st| st.notes.last().cloned())
                .unwrap_or_else(|| "no known function found".to_string())
        });
    AttachError::NothingAttached {
        release: facts.release.clone(),
        reason,
        needs_btf: facts.btf.is_err(),
    }
}

/// Discovery only: which symbol stands for each known function, without
/// loading anything. `attach` starts from it; where probes cannot be
/// loaded it still shows the catalogue.
pub fn discover(facts: &KernelFacts) -> Vec<ProbeStatus> {
    FUNCS
        .iter()
        .enumerate()
        .map(|(id, func)| {
            let mut st = ProbeStatus {
                id: id as FuncId,
                function: func.name,
                role: role(func.kind),
                symbol: None,
                attached: None,
                notes: Vec::new(),
                not_needed: false,
            };
            match resolve_symbol(facts, func) {
                Ok(sym) => st.symbol = Some(sym),
                Err(e) => st.notes.push(e),
            }
            st
        })
        .collect()
}
