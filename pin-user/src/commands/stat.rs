//! `pinwatch stat`: periodic per-variant summaries on stdout, like vmstat;
//! JSON lines with `--json`. In reduced mode, the kernel's own pin counters
//! instead (see [`crate::reduced`]).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use super::args::{SourceArgs, parse_interval};
use crate::{
    kernel::KernelFacts,
    probes::KernelLog,
    reduced::{self, Mode, ReducedSource, ReducedView},
    report::IntervalView,
    sampling::{self, ProbeSource, Schedule, Sink, Source},
    snapshot::Delta,
};

/// Options of `pinwatch stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// Where the figures come from: the probes, or reduced mode.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Time between summaries (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this many summaries (default: until Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command until `count` intervals passed or a signal arrives.
pub fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let options = args.source.options();
    let StatArgs {
        source: SourceArgs {
            reduced: force_reduced,
            ..
        },
        interval,
        count,
        json,
    } = args;
    let schedule = Schedule {
        interval,
        count,
        duration: None,
        last_interval: true,
    };
    let mut facts = KernelFacts::discover();
    let mut probes = match reduced::attach_or_reduce(&facts, options.clone(), force_reduced)? {
        Mode::Probes(probes) => probes,
        Mode::Reduced(_) => {
            let mut sink = Printer {
                json,
                kernel_log: None,
                view: |v: ReducedView, _: &ReducedSource| Ok(v),
            };
            sampling::drive(&mut ReducedSource::new()?, &mut sink, &schedule)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let attached: Vec<String> = probes
        .status
        .iter()
        .filter_map(|st| st.attached.map(|m| format!("{}:{m}", st.function)))
        .collect();
    let untraced: Vec<String> = probes.untraced().iter().map(|f| f.to_string()).collect();
    log::info!("attached: {}", attached.join(" "));
    facts.release_btf();
    probes.shed_privileges(&Default::default())?;
    let kernel_log = probes.kernel_log.take();
    let mut source = ProbeSource::new(&mut probes)?;
    // Said only once counting has started, so a caller that waits for
    // this line misses nothing.
    eprintln!(
        "pinwatch: kernel {}: {}",
        facts.release,
        source.probes().summary()
    );
    let mut sink = Printer {
        json,
        kernel_log,
        view: |delta: Delta, source: &ProbeSource| {
            let mut view = IntervalView::new(&delta);
            view.untraced.clone_from(&untraced);
            view.read_memlock();
            if options.lifetimes {
                view.outstanding = Some(
                    crate::attribution::lifetimes::read_outstanding(source.probes().maps())
                        .with_context(|| format!("reading {}", pin_common::maps::PIN_LIFETIMES))?,
                );
            }
            Ok(view)
        },
    };
    sampling::drive(&mut source, &mut sink, &schedule)?;
    Ok(ExitCode::SUCCESS)
}

/// A view `stat` prints: a text table, or one JSON line.
trait Printable: serde::Serialize {
    fn render_text(&self) -> String;
}

impl Printable for IntervalView {
    fn render_text(&self) -> String {
        IntervalView::render_text(self)
    }
}

impl Printable for ReducedView {
    fn render_text(&self) -> String {
        ReducedView::render_text(self)
    }
}

/// Prints each interval's view; keeps the kernel's log flowing between.
struct Printer<F> {
    json: bool,
    kernel_log: Option<KernelLog>,
    view: F,
}

impl<S, V, F> Sink<S> for Printer<F>
where
    S: Source,
    V: Printable,
    F: FnMut(S::Interval, &S) -> anyhow::Result<V>,
{
    fn wait(&mut self, until: std::time::Instant) -> anyhow::Result<bool> {
        while !crate::signals::stop_requested() && std::time::Instant::now() < until {
            if let Some(log) = self.kernel_log.as_mut() {
                log.flush();
            }
            sampling::sleep_until_stopped(
                until.min(std::time::Instant::now() + Duration::from_millis(20)),
            );
        }
        Ok(false)
    }

    fn take(&mut self, interval: S::Interval, source: &S) -> anyhow::Result<()> {
        let view = (self.view)(interval, source)?;
        if self.json {
            println!("{}", serde_json::to_string(&view)?);
        } else {
            println!("{}", view.render_text());
        }
        Ok(())
    }
}
