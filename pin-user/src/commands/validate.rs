//! `pinwatch validate`: runs the scenario catalogue against the live kernel
//! and prints a table (scenario, predicted, observed, verdict) or JSON.
//!
//! Exit codes: 0 every scenario agrees (or matches a named deviation),
//! 1 some scenario disagrees, 3 the kernel cannot be traced, 4 some
//! scenario could not run here (the rest agreed).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::UsageError,
    events::{EventFilter, EventStream},
    kernel::{KernelFacts, foll::FollFlags},
    model::{KernelVersion, Rules, paths::PathPrediction},
    probes::{self, AttachOptions},
    validate::{Ctx, Observation, ScenarioReport, Verdict, faults::FaultCounter, scenarios},
};

/// Exit code when a scenario could not run on this host.
pub const EXIT_INCOMPLETE: u8 = 4;

/// What the user asked for.
pub struct ValidateOptions {
    /// Probe mechanism.
    pub attach: AttachOptions,
    /// Only this scenario.
    pub scenario: Option<String>,
    /// Scratch block device (default: /dev/ram0 when it is a brd ramdisk).
    pub device: Option<PathBuf>,
    /// JSON output.
    pub json: bool,
    /// List the catalogue and exit.
    pub list: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    kernel: &'a str,
    rules: Rules,
    flags_from: crate::kernel::foll::FlagSource,
    scenarios: &'a [ScenarioReport],
    agreed: usize,
    disagreed: usize,
    not_run: usize,
}

/// Runs the command.
pub fn run(opts: ValidateOptions) -> anyhow::Result<ExitCode> {
    if opts.list {
        for s in scenarios::CATALOGUE {
            println!("{:<26} {}", s.name, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected: Vec<&scenarios::Scenario> = match &opts.scenario {
        Some(name) => vec![scenarios::CATALOGUE.iter().find(|s| s.name == name).ok_or_else(|| {
            UsageError(format!(
                "unknown scenario {name:?}; `pinwatch validate --list` shows the {} scenarios",
                scenarios::CATALOGUE.len()
            ))
        })?],
        None => scenarios::CATALOGUE.iter().collect(),
    };
    if let Some(dev) = &opts.device
        && !dev.exists()
    {
        return Err(UsageError(format!(
            "--device {}: no such file or device",
            dev.display()
        ))
        .into());
    }
    let device = opts.device.clone().or_else(|| {
        let ram = PathBuf::from("/dev/ram0");
        scenarios::is_ramdisk(&ram).then_some(ram)
    });

    let facts = KernelFacts::discover();
    let proc_version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let version = KernelVersion::from_proc_version(&proc_version, &facts.release)
        .with_context(|| format!("cannot parse the kernel release {:?}", facts.release))?;
    let rules = Rules::for_version(version)
        .with_proc_mem_force(crate::kernel::config::proc_mem_force(&facts.release));
    let flags = FollFlags::for_kernel(facts.btf.as_ref().ok());
    let mut probes = probes::attach(&facts, opts.attach)?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let mut events = EventStream::start(
        probes.maps_mut(),
        EventFilter { tid, tgid: 0 },
        flags.clone(),
    )
    .context("switching per-call events on")?;

    // On this thread, which makes every measured call.
    let mut faults = FaultCounter::for_this_thread()
        .context("opening this thread's page-fault counters (perf_event_open)")?;
    let mut reports = Vec::new();
    for scenario in selected {
        let mut ctx = Ctx::new(rules, device.clone(), &mut events, &mut faults);
        let report = match (scenario.run)(&mut ctx) {
            Ok(steps) => ScenarioReport {
                name: scenario.name,
                about: scenario.about,
                verdict: crate::validate::verdict(&steps),
                steps,
            },
            Err(why) => ScenarioReport {
                name: scenario.name,
                about: scenario.about,
                steps: Vec::new(),
                verdict: Verdict::NotRun(why),
            },
        };
        if !opts.json {
            print_row(&report);
        }
        reports.push(report);
    }
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let disagreed = count(|v| matches!(v, Verdict::Disagrees(_)));
    let not_run = count(|v| matches!(v, Verdict::NotRun(_)));
    let agreed = reports.len() - disagreed - not_run;
    if opts.json {
        let report = Report {
            kernel: &facts.release,
            rules,
            flags_from: flags.source,
            scenarios: &reports,
            agreed,
            disagreed,
            not_run,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} scenarios on {} (model rules of {version}): {agreed} agree, {disagreed} disagree, {not_run} not run",
            reports.len(),
            facts.release
        );
    }
    Ok(if disagreed > 0 {
        ExitCode::FAILURE
    } else if not_run > 0 {
        ExitCode::from(EXIT_INCOMPLETE)
    } else {
        ExitCode::SUCCESS
    })
}

fn summarize_predicted(p: &PathPrediction) -> String {
    let calls: Vec<String> = p
        .calls
        .iter()
        .map(|c| {
            format!(
                "{}({})={} f{}/s{}",
                c.call.variant.name(),
                c.call.nr_pages,
                c.ret,
                c.fast_pages,
                c.slow_pages
            )
        })
        .collect();
    format!(
        "{} -> {} flt {} vm +{}/-{}",
        if calls.is_empty() {
            "no GUP".into()
        } else {
            calls.join(" ")
        },
        p.result,
        p.faults(),
        p.pin_acquired(),
        p.pin_released()
    )
}

fn summarize_observed(o: &Observation) -> String {
    let calls: Vec<String> = o
        .calls
        .iter()
        .map(|c| {
            format!(
                "{}({})={} f{}/s{}",
                c.function, c.nr_pages, c.ret, c.fast_pages, c.slow_pages
            )
        })
        .collect();
    let vm = match (o.pin_acquired, o.pin_released) {
        (Some(a), Some(r)) => format!("+{a}/-{r}"),
        _ => "n/a".into(),
    };
    format!(
        "{} -> {} flt {} vm {vm}",
        if calls.is_empty() {
            "no GUP".into()
        } else {
            calls.join(" ")
        },
        o.result,
        o.faults.map_or("?".into(), |f| f.to_string())
    )
}

fn print_row(r: &ScenarioReport) {
    let verdict = match &r.verdict {
        Verdict::Agrees => "agrees".to_string(),
        Verdict::KnownDeviation(names) => format!("agrees (deviation: {})", names.join(", ")),
        Verdict::Disagrees(fields) => format!("DISAGREES: {}", fields.join("; ")),
        Verdict::NotRun(why) => format!("not run: {why}"),
    };
    println!("{:<26} {verdict}", r.name);
    for s in &r.steps {
        println!("  {}", s.action);
        println!("    predicted {}", summarize_predicted(&s.predicted));
        println!("    observed  {}", summarize_observed(&s.observed));
    }
}
