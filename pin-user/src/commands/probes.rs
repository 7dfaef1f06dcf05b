//! `pinwatch probes`: every GUP function pinwatch knows, whether this kernel
//! has it, how it attached or why not, and a self-check that a known call
//! is seen.

use std::process::ExitCode;

use serde::Serialize;

use super::args::AttachArgs;
use crate::{
    error::attach_exit_code,
    kernel::{
        KernelFacts,
        features::{FeatureStatus, Object},
    },
    probes::{
        self, ProbeStatus,
        footprint::{MapFootprint, estimated_by_kernel, total_bytes},
    },
    snapshot::Snapshot,
    startup::Phases,
    workload::{self, WorkloadKind, WorkloadOptions},
};

#[derive(Serialize)]
struct ProbesReport {
    kernel: String,
    fentry: Result<(), String>,
    kprobe: Result<(), String>,
    btf: Result<(), String>,
    /// Why nothing could be attached, if so.
    error: Option<String>,
    self_check: Option<Result<String, String>>,
    /// How the pin-lifetime release hook attached (`--lifetimes`).
    lifetimes: Option<String>,
    /// How `gup_put_folio`, where GUP's own releases are counted, is
    /// traced, or why not.
    release_hook: Option<Result<String, String>>,
    /// Calls one kretprobe follows at once, where any function is traced
    /// with kprobes: beyond it a return is missed (and counted as such).
    kretprobe_instances: Option<u64>,
    /// Whether thread exits are traced (a call an exiting thread was never
    /// seen to return from is then counted as missed), or why not.
    exit_watch: Option<Result<(), String>>,
    /// Whether renames are traced (process names then follow exec and
    /// renames), or why not.
    rename_watch: Option<Result<(), String>>,
    /// Whether full calls wait in per-thread counts folded in at each
    /// sample (a task iterator), or why every call is accounted at its
    /// return.
    pending_fold: Option<Result<(), String>>,
    /// The release function the release hook counts, since its code is
    /// only a jump there (one probe program per page it releases, not two),
    /// or why every release function has a probe of its own.
    release_at_hook: Option<Result<String, String>>,
    /// The memlock checks watched for the kernel's verdicts (how, or why
    /// not).
    limit_checks: Vec<probes::CheckStatus>,
    /// The kernel memory of pinwatch's BPF maps, largest first (when
    /// attached).
    maps: Option<Result<Vec<MapFootprint>, String>>,
    /// Where start-up time went, phase by phase, up to the first read of
    /// the maps (the kernel's discovery only, when nothing attached).
    startup: Phases,
    /// pinwatch's trampoline programs of an earlier run the kernel was
    /// still detaching at start, which `attach functions` waits for up to
    /// Linux 6.18 (when attached).
    earlier_run_detaching: Option<usize>,
    /// Which eBPF object the features call for.
    object: Object,
    /// Each BPF feature pinwatch uses: there or not, and what pinwatch
    /// does with it or instead.
    features: Vec<FeatureStatus>,
    probes: Vec<ProbeStatus>,
}

/// The kernel's default kretprobe instance count, which pinwatch cannot
/// raise through the perf interface it attaches with:
/// `max(10, 2 * num_possible_cpus())` (kernel/kprobes.c, register_kretprobe).
fn kretprobe_instances() -> Option<u64> {
    let cpus = aya::util::nr_cpus().ok()? as u64;
    Some(10.max(2 * cpus))
}

/// One process_vm_readv of one page must show up as exactly one
/// pin_user_pages_remote call of one page.
fn self_check(p: &probes::Probes) -> Option<Result<String, String>> {
    const VARIANT: usize = 8; // pin_user_pages_remote
    p.status[VARIANT].attached?;
    let run = || -> anyhow::Result<(u64, u64)> {
        let before = Snapshot::read(p.maps())?;
        workload::run(&WorkloadOptions::one_page(WorkloadKind::ProcessVmReadv, 1))?;
        let d = Snapshot::read(p.maps())?.since(&before);
        Ok((d.gup[VARIANT].calls, d.gup[VARIANT].pages_returned))
    };
    Some(match run() {
        Ok((1, 1)) => {
            Ok("process_vm_readv of 1 page seen as 1 pin_user_pages_remote call, 1 page".into())
        }
        Ok((calls, pages)) => Err(format!(
            "process_vm_readv of 1 page seen as {calls} calls, {pages} pages (expected 1, 1)"
        )),
        Err(e) => Err(format!("could not run: {e}")),
    })
}

fn status_text(st: &ProbeStatus) -> String {
    if st.not_needed {
        return st.notes.join("; ");
    }
    match (&st.attached, st.notes.is_empty()) {
        (Some(m), true) => m.to_string(),
        (Some(m), false) => format!("{m} (after: {})", st.notes.join("; ")),
        (None, true) => "not attached".to_string(),
        (None, false) => format!("not attached: {}", st.notes.join("; ")),
    }
}

/// Options of `pinwatch probes`.
#[derive(Debug, clap::Args)]
pub struct ProbesArgs {
    /// Attach options.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: ProbesArgs) -> anyhow::Result<ExitCode> {
    let facts = KernelFacts::discover();
    let attached = probes::attach(&facts, args.attach.options());
    let startup = match &attached {
        Ok(p) => {
            let mut phases = p.startup.clone();
            // The first sample's read of every map, as the agent's
            // commands make it right after attaching.
            let _ = phases.time("first read", || Snapshot::read(p.maps()));
            phases
        }
        Err(_) => facts.phases.clone(),
    };
    let (status, error, check) = match &attached {
        Ok(p) => (p.status.clone(), None, self_check(p)),
        // The reason is kernel-wide: say it once, below the table.
        Err(e) => (probes::discover(&facts), Some(e.to_string()), None),
    };
    let report = ProbesReport {
        kernel: facts.release.clone(),
        fentry: facts.tracing.clone(),
        kprobe: facts.kprobes.clone(),
        btf: facts.btf.as_ref().map(|_| ()).map_err(Clone::clone),
        error,
        self_check: check,
        lifetimes: attached.as_ref().ok().and_then(|p| {
            p.lifetimes
                .map(|m| format!("{} via {m}", p.release_hook_symbol))
        }),
        release_hook: attached.as_ref().ok().map(|p| {
            p.release_hook
                .as_ref()
                .map(|m| format!("{} via {m}", p.release_hook_symbol))
                .map_err(|e| format!("{} not traced: {e}", p.release_hook_symbol))
        }),
        kretprobe_instances: attached
            .as_ref()
            .ok()
            .filter(|p| {
                p.status
                    .iter()
                    .any(|st| st.attached == Some(probes::Mechanism::Kprobe))
            })
            .and_then(|_| kretprobe_instances()),
        exit_watch: attached.as_ref().ok().map(|p| p.exit_watch.clone()),
        rename_watch: attached.as_ref().ok().map(|p| p.rename_watch.clone()),
        pending_fold: attached
            .as_ref()
            .ok()
            .map(|p| p.fold.as_ref().map(drop).map_err(Clone::clone)),
        release_at_hook: attached.as_ref().ok().map(|p| {
            p.release_at_hook
                .as_ref()
                .map(|f| f.to_string())
                .map_err(Clone::clone)
        }),
        limit_checks: attached
            .as_ref()
            .map(|p| p.checks.clone())
            .unwrap_or_default(),
        maps: attached.as_ref().ok().map(|p| p.map_memory.clone()),
        startup,
        earlier_run_detaching: attached.as_ref().ok().map(|p| p.earlier_run_detaching),
        object: facts.features.object(),
        features: facts.features.list.clone(),
        probes: status,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if let Err(e) = &attached {
        ExitCode::from(attach_exit_code(e))
    } else if matches!(report.self_check, Some(Err(_))) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The report as text: the kernel-wide lines, the feature and function
/// tables, and the verdict.
fn print_text(r: &ProbesReport) {
    print_kernel(r);
    println!();
    let object = match r.object {
        Object::Full => "full",
        Object::Baseline => "baseline (5.10-era helpers only)",
    };
    println!("eBPF object: {object}");
    println!(
        "{:<18} {:<10} {:<62} evidence",
        "feature", "kernel", "pinwatch"
    );
    for f in &r.features {
        println!(
            "{:<18} {:<10} {:<62} {}",
            f.feature.name(),
            if f.available { "yes" } else { "no" },
            f.pinwatch,
            f.evidence
        );
    }
    println!();
    println!("{:<34} {:<13} {:<30} attach", "function", "role", "symbol");
    for st in &r.probes {
        println!(
            "{:<34} {:<13} {:<30} {}",
            st.function,
            st.role,
            st.symbol.as_deref().unwrap_or("-"),
            status_text(st)
        );
    }
    println!();
    match (&r.error, &r.self_check) {
        (Some(e), _) => println!("pinwatch cannot trace here: {e}"),
        (None, Some(Ok(msg))) => println!("self-check: ok: {msg}"),
        (None, Some(Err(msg))) => println!("self-check: FAILED: {msg}"),
        (None, None) => println!("self-check: not run (pin_user_pages_remote not attached)"),
    }
}

/// The kernel memory line: the maps' total and the largest three.
fn print_maps(maps: &Result<Vec<MapFootprint>, String>, release: &str) {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    let caveat = match crate::kernel::parse_version(release) {
        Some(v) if estimated_by_kernel(v) => {
            " (this kernel's estimate: keys and values only, before Linux 6.4)"
        }
        _ => "",
    };
    match maps {
        Ok(maps) => println!(
            "maps     {} of kernel memory in {} BPF maps{caveat}; largest: {}",
            mib(total_bytes(maps)),
            maps.len(),
            maps.iter()
                .take(3)
                .map(|m| format!("{} {}", m.name, mib(m.bytes)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => println!("maps     kernel memory unknown: {e}"),
    }
}

/// The kernel-wide lines above the tables: what this kernel offers and
/// how releases, lifetimes, missed returns and thread exits are traced.
fn print_kernel(r: &ProbesReport) {
    let yes_no = |res: &Result<(), String>| match res {
        Ok(()) => "available".to_string(),
        Err(e) => e.clone(),
    };
    println!("kernel   {}", r.kernel);
    println!("fentry   {}", yes_no(&r.fentry));
    println!("kprobe   {}", yes_no(&r.kprobe));
    println!("BTF      {}", yes_no(&r.btf));
    match &r.release_hook {
        Some(Ok(hook)) => println!(
            "releases {hook}: counts the releases GUP makes itself (FOLL_LONGTERM migration, rollbacks)"
        ),
        Some(Err(e)) => println!(
            "releases {e}: releases GUP makes itself go uncounted (vmstat's nr_foll_pin_released exceeds pinwatch's by them)"
        ),
        None => {}
    }
    if let Some(hook) = &r.lifetimes {
        println!("lifetime {hook}");
    }
    if let Some(n) = r.kretprobe_instances {
        println!(
            "returns  a kretprobe follows {n} calls at once (max(10, 2 x CPUs)); returns beyond are missed and counted as such"
        );
        if probes::misses::kprobe_missed_readable() {
            println!(
                "misses   the kernel's own count of each kprobe's misses is read (reasons kprobe_missed, kretprobe_missed)"
            );
        } else {
            println!(
                "misses   this kernel does not report its kprobes' misses (Linux 6.7+); pinwatch finds missed returns itself"
            );
        }
    }
    match &r.exit_watch {
        Some(Ok(())) => println!(
            "exits    traced: a call a thread was never seen to return from counts as missed when it exits"
        ),
        Some(Err(e)) => println!(
            "exits    not traced ({e}): a thread that exits inside a call whose return was missed goes uncounted"
        ),
        None => {}
    }
    match &r.rename_watch {
        Some(Ok(())) => println!(
            "names    traced: a process's name follows its leader through exec and renames"
        ),
        Some(Err(e)) => {
            println!("names    not traced ({e}): a process keeps the name it had at its first call")
        }
        None => {}
    }
    match &r.pending_fold {
        Some(Ok(())) => println!(
            "counts   full get calls (not pins) add up per thread, folded into the tables before each read (a task iterator) and at thread exit"
        ),
        Some(Err(e)) => println!("counts   every call is added to the tables at its return ({e})"),
        None => {}
    }
    match &r.release_at_hook {
        Some(Ok(function)) => println!(
            "releases {function} counted at the release hook: its code only jumps there, so a page it releases runs one probe, not two"
        ),
        Some(Err(e)) => println!("releases every release function has its own probe ({e})"),
        None => {}
    }
    for check in &r.limit_checks {
        match &check.attached {
            Ok(m) => println!(
                "memlock  {} via {m}: its refusals are shown as the kernel's verdicts",
                check.function
            ),
            Err(e) => println!(
                "memlock  {} not traced ({e}): no verdicts for its refusals",
                check.function
            ),
        }
    }
    if let Some(maps) = &r.maps {
        print_maps(maps, &r.kernel);
    }
    println!("start-up {}", r.startup);
    if let Some(programs @ 1..) = r.earlier_run_detaching {
        println!(
            "start-up found the kernel still detaching an earlier run's probes \
             ({programs} of its programs unlinked, not yet freed); up to Linux 6.18 \
             attaching waits for that"
        );
    }
}
