//! `pinwatch validate`: runs the scenario catalogue against the live kernel
//! and prints a table (scenario, predicted, observed, verdict) or JSON.
//!
//! Exit codes: 0 every scenario agrees (or matches a named deviation),
//! 1 some scenario disagrees, 3 the kernel cannot be traced, 4 some
//! scenario could not run here (the rest agreed).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use serde::Serialize;

use super::args::AttachArgs;
use crate::{
    error::{EXIT_INCOMPLETE, UsageError},
    events::{EventFilter, EventStream},
    kernel::{KernelFacts, foll::FollFlags},
    model::{KernelVersion, Rules, paths::PathPrediction},
    probes::{self, AttachOptions},
    validate::{
        Ctx, Observation, ScenarioReport, Verdict,
        faults::FaultCounter,
        scenarios::{self, Scenario},
    },
};

/// Options of `pinwatch validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Attach options.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Run only this scenario (see --list).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Scratch block device or file for the O_DIRECT and file-mapping
    /// scenarios; its first 64 KiB are overwritten (default: /dev/ram0
    /// when it is a brd ramdisk).
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// List the scenarios and exit.
    #[arg(long)]
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

/// How many scenarios ended which way.
struct Tally {
    agreed: usize,
    disagreed: usize,
    not_run: usize,
}

impl Tally {
    fn of(reports: &[ScenarioReport]) -> Self {
        let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
        let disagreed = count(|v| matches!(v, Verdict::Disagrees(_)));
        let not_run = count(|v| matches!(v, Verdict::NotRun(_)));
        Self {
            agreed: reports.len() - disagreed - not_run,
            disagreed,
            not_run,
        }
    }

    /// 1 on a disagreement, else [`EXIT_INCOMPLETE`] when a scenario could
    /// not run, else 0.
    fn exit_code(&self) -> ExitCode {
        if self.disagreed > 0 {
            ExitCode::FAILURE
        } else if self.not_run > 0 {
            ExitCode::from(EXIT_INCOMPLETE)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Runs the command.
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        for s in scenarios::CATALOGUE {
            println!("{:<26} {}", s.name, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected = select(args.scenario.as_deref())?;
    let device = scratch_device(args.device)?;
    let facts = KernelFacts::discover();
    let proc_version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let version = KernelVersion::from_proc_version(&proc_version, &facts.release)
        .with_context(|| format!("cannot parse the kernel release {:?}", facts.release))?;
    let rules = Rules::for_version(version)
        .with_proc_mem_force(crate::kernel::config::proc_mem_force(&facts.release));
    let flags = FollFlags::for_kernel(facts.btf.as_ref().ok());
    let options = AttachOptions {
        events: true,
        ..args.attach.options()
    };
    let mut probes = probes::attach(&facts, options)?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let mut events = EventStream::start(
        probes.maps_mut(),
        EventFilter { tid, tgid: 0 },
        flags.clone(),
    )
    .context("switching per-call events on")?;
    let reports = run_scenarios(&selected, rules, device, &mut events, args.json)?;
    let tally = Tally::of(&reports);
    if args.json {
        let report = Report {
            kernel: &facts.release,
            rules,
            flags_from: flags.source,
            scenarios: &reports,
            agreed: tally.agreed,
            disagreed: tally.disagreed,
            not_run: tally.not_run,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} scenarios on {} (model rules of {version}): {} agree, {} disagree, {} not run",
            reports.len(),
            facts.release,
            tally.agreed,
            tally.disagreed,
            tally.not_run
        );
    }
    Ok(tally.exit_code())
}

/// The scenarios asked for: the one named, or the whole catalogue.
fn select(name: Option<&str>) -> Result<Vec<&'static Scenario>, UsageError> {
    let Some(name) = name else {
        return Ok(scenarios::CATALOGUE.iter().collect());
    };
    let scenario = scenarios::CATALOGUE
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            UsageError(format!(
                "unknown scenario {name:?}; `pinwatch validate --list` shows the {} scenarios",
                scenarios::CATALOGUE.len()
            ))
        })?;
    Ok(vec![scenario])
}

/// The scratch device: the one named, which must exist, else /dev/ram0
/// when it is a brd ramdisk.
fn scratch_device(named: Option<PathBuf>) -> Result<Option<PathBuf>, UsageError> {
    if let Some(dev) = &named
        && !dev.exists()
    {
        return Err(UsageError(format!(
            "--device {}: no such file or device",
            dev.display()
        )));
    }
    Ok(named.or_else(|| {
        let ram = PathBuf::from("/dev/ram0");
        scenarios::is_ramdisk(&ram).then_some(ram)
    }))
}

/// Runs each scenario on this thread, which makes every measured call,
/// printing a table row as each ends unless the report is JSON.
fn run_scenarios(
    selected: &[&Scenario],
    rules: Rules,
    device: Option<PathBuf>,
    events: &mut EventStream,
    json: bool,
) -> anyhow::Result<Vec<ScenarioReport>> {
    let mut faults = FaultCounter::for_this_thread()
        .context("opening this thread's page-fault counters (perf_event_open)")?;
    let mut reports = Vec::new();
    for scenario in selected {
        let mut ctx = Ctx::new(rules, device.clone(), events, &mut faults);
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
        if !json {
            print_row(&report);
        }
        reports.push(report);
    }
    Ok(reports)
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
