//! `pinwatch stat`: periodic per-variant summaries on stdout, like vmstat;
//! JSON lines with `--json`. In reduced mode, the kernel's own pin counters
//! instead (see [`crate::reduced`]).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use crate::{
    kernel::KernelFacts,
    probes::{self, AttachOptions},
    reduced::{self, ReducedSample, ReducedView, Source},
    report::IntervalView,
    snapshot::Snapshot,
};

/// Runs the command until `count` intervals passed or a signal arrives.
pub fn run(
    options: AttachOptions,
    force_reduced: bool,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let facts = KernelFacts::discover();
    let mut probes = match reduced::attach_or_reduce(&facts, options, force_reduced)? {
        Source::Probes(probes) => probes,
        Source::Reduced(_) => return run_reduced(interval, count, json),
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
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut previous = Snapshot::read(probes.maps())?;
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
            let current = Snapshot::read(probes.maps())?;
            let mut view = IntervalView::new(&current.since(&previous));
            view.untraced.clone_from(&untraced);
            if options.lifetimes {
                view.outstanding = Some(
                    crate::attribution::lifetimes::read_outstanding(probes.maps())
                        .with_context(|| format!("reading {}", pin_common::maps::PIN_LIFETIMES))?,
                );
            }
            previous = current;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print!("{}", view.render_text());
                println!();
            }
            printed += 1;
            if stop || count.is_some_and(|c| printed >= c) {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reduced mode: the kernel's pin counters each interval, until `count`
/// intervals passed or SIGINT, SIGTERM or SIGHUP arrives.
fn run_reduced(interval: Duration, count: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
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
