//! `pinwatch stat`: periodic per-variant summaries on stdout, like vmstat;
//! JSON lines with `--json`.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use crate::{
    kernel::KernelFacts,
    probes::{self, AttachMode},
    report::IntervalView,
    snapshot::Snapshot,
};

/// Runs the command until `count` intervals passed or a signal arrives.
pub fn run(
    mode: AttachMode,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let facts = KernelFacts::discover();
    let probes = probes::attach(&facts, mode)?;
    let attached: Vec<String> = probes
        .status
        .iter()
        .filter_map(|st| st.attached.map(|m| format!("{}:{m}", st.function)))
        .collect();
    let missing = probes
        .status
        .iter()
        .filter(|st| st.attached.is_none())
        .count();
    log::info!("attached: {}", attached.join(" "));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut previous = Snapshot::read(&probes.ebpf)?;
        // Said only once counting has started, so a caller that waits for
        // this line misses nothing.
        eprintln!(
            "pinwatch: kernel {}: attached {} functions ({missing} not attached; see `pinwatch probes`)",
            facts.release,
            attached.len()
        );
        let mut printed = 0u64;
        loop {
            let stop = tokio::select! {
                _ = ticker.tick() => false,
                _ = tokio::signal::ctrl_c() => true,
                _ = sigterm.recv() => true,
            };
            let current = Snapshot::read(&probes.ebpf)?;
            let view = IntervalView::new(&current.since(&previous));
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
