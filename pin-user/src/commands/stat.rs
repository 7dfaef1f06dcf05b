//! `pinwatch stat`: periodic per-variant summaries on stdout, like vmstat;
//! JSON lines with `--json`. In reduced mode, the kernel's own pin counters
//! instead (see [`crate::reduced`]).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use super::args::{AttachArgs, parse_interval};
use crate::{
    kernel::KernelFacts,
    probes,
    reduced::{self, ReducedSample, ReducedView, Source},
    report::IntervalView,
    snapshot::Snapshot,
};

/// Options of `pinwatch stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// Attach options.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Run without probes, from /proc/vmstat and per-process VmPin only
    /// (what pinwatch does by itself when the kernel refuses probes).
    #[arg(long)]
    pub reduced: bool,
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
    let facts = KernelFacts::discover();
    let options = args.attach.options();
    let mut probes = match reduced::attach_or_reduce(&facts, options, args.reduced)? {
        Source::Probes(probes) => probes,
        Source::Reduced(_) => return run_reduced(&args),
    };
    let attached: Vec<String> = probes
        .status
        .iter()
        .filter_map(|st| st.attached.map(|m| format!("{}:{m}", st.function)))
        .collect();
    let untraced: Vec<String> = probes.untraced().iter().map(|f| f.to_string()).collect();
    log::info!("attached: {}", attached.join(" "));
    probes.shed_privileges(&Default::default())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut stop_signals = crate::signals::StopSignals::new()?;
        let mut kernel_log = match probes.kernel_log.take() {
            // SAFETY: the logger owns its ring buffer map fd, which stays
            // open and unchanged until the logger (inside the AsyncFd) drops.
            Some(logger) => Some(
                unsafe { tokio::io::unix::AsyncFd::register(logger) }
                    .map_err(std::io::Error::from)
                    .context("watching the kernel log ring")?,
            ),
            None => None,
        };
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut previous = Snapshot::read(&probes.ebpf)?;
        // Said only once counting has started, so a caller that waits for
        // this line misses nothing.
        eprintln!("pinwatch: kernel {}: {}", facts.release, probes.summary());
        let mut printed = 0u64;
        loop {
            let stop = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop_signals.recv() => true,
                ready = readable(&mut kernel_log) => {
                    if let Ok(mut guard) = ready {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    continue;
                }
            };
            let current = Snapshot::read(&probes.ebpf)?;
            let mut view = IntervalView::new(&current.since(&previous));
            view.untraced.clone_from(&untraced);
            if options.lifetimes {
                view.outstanding = Some(
                    crate::attribution::lifetimes::read_outstanding(&probes.ebpf)
                        .context("reading PIN_LIFETIMES")?,
                );
            }
            previous = current;
            if args.json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print!("{}", view.render_text());
                println!();
            }
            printed += 1;
            if stop || args.count.is_some_and(|c| printed >= c) {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reduced mode: the kernel's pin counters each interval, until `count`
/// intervals passed or SIGINT, SIGTERM or SIGHUP arrives.
fn run_reduced(args: &StatArgs) -> anyhow::Result<ExitCode> {
    let StatArgs {
        interval,
        count,
        json,
        ..
    } = *args;
    let stop = crate::signals::stop_flag()?;
    let mut previous = ReducedSample::read()?;
    let mut taken = std::time::Instant::now();
    let mut printed = 0u64;
    loop {
        let stopping = crate::signals::sleep_unless_stopped(&stop, interval);
        let current = ReducedSample::read()?;
        let view = ReducedView::new(&previous, &current, taken.elapsed().as_secs_f64());
        taken = std::time::Instant::now();
        previous = current;
        if json {
            println!("{}", serde_json::to_string(&view)?);
        } else {
            println!("{}", view.render_text());
        }
        printed += 1;
        if stopping || count.is_some_and(|c| printed >= c) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

type LogGuard<'a> = tokio::io::unix::AsyncFdReadyMutGuard<'a, probes::KernelLog>;

/// Waits until the kernel log ring has records; never, when there is none.
async fn readable(
    log: &mut Option<tokio::io::unix::AsyncFd<probes::KernelLog>>,
) -> std::io::Result<LogGuard<'_>> {
    match log {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}
