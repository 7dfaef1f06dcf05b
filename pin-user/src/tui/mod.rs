//! `pinwatch top`: the live dashboard. [`app`] holds state, [`keys`] turns
//! key presses into state changes, [`render`] draws; this module owns the
//! terminal and the loop that feeds snapshots in.

pub mod app;
mod fit;
pub mod keys;
pub mod reduced;
pub mod render;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    process::ExitCode,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::{
    kernel::KernelFacts,
    probes::{self, AttachOptions, Mechanism, ProbeStatus},
    snapshot::{Snapshot, SnapshotError},
};
use app::{App, Filter, Frame, HeaderInfo};

/// What `pinwatch top` was asked to do.
pub struct TopOptions {
    /// Probe mechanism.
    pub attach: AttachOptions,
    /// Refresh interval.
    pub interval: Duration,
    /// Initial process filter.
    pub filter: Option<Filter>,
    /// Reduced mode even if probes could attach.
    pub reduced: bool,
}

/// "16 fentry, 3 kprobe, 1 absent".
pub fn probes_summary(status: &[ProbeStatus]) -> String {
    let count = |m| status.iter().filter(|s| s.attached == Some(m)).count();
    let absent = status.iter().filter(|s| s.is_gap()).count();
    format!(
        "{} fentry, {} kprobe, {absent} absent",
        count(Mechanism::Fentry),
        count(Mechanism::Kprobe)
    )
}

/// GUP variants present on this kernel but not traced.
pub fn untraced_variants(status: &[ProbeStatus]) -> Vec<&'static str> {
    status
        .iter()
        .filter(|s| {
            s.is_gap() && s.symbol.is_some() && (s.id as usize) < pin_common::GUP_FUNC_COUNT
        })
        .map(|s| s.function)
        .collect()
}

/// Reads live maps into frames.
struct LiveSource<'a> {
    probes: &'a probes::Probes,
    previous: Snapshot,
}

impl LiveSource<'_> {
    fn next(&mut self) -> Result<Frame, SnapshotError> {
        let current = Snapshot::read(&self.probes.ebpf)?;
        let delta = current.since(&self.previous);
        self.previous = current;
        let vmpin_kb: BTreeMap<u32, u64> = delta
            .procs
            .keys()
            .filter_map(|&pid| {
                let status = procfs::process::Process::new(pid as i32)
                    .ok()?
                    .status()
                    .ok()?;
                Some((pid, status.vmpin?))
            })
            .collect();
        let uptime_s = {
            use procfs::Current as _;
            procfs::Uptime::current().map(|u| u.uptime).unwrap_or(0.0)
        };
        Ok(Frame {
            delta,
            vmpin_kb,
            uptime_s,
        })
    }
}

/// Restores the terminal however the loop ends (errors included; panics
/// are covered by ratatui's panic hook).
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until q, Ctrl-C, SIGINT, SIGTERM or SIGHUP.
pub fn run(opts: TopOptions) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        return Err(crate::error::UsageError(
            "pinwatch top needs a terminal; use `pinwatch stat` (or --json) for plain output"
                .into(),
        )
        .into());
    }
    let facts = KernelFacts::discover();
    let probes = match crate::reduced::attach_or_reduce(&facts, opts.attach, opts.reduced)? {
        crate::reduced::Source::Probes(probes) => probes,
        crate::reduced::Source::Reduced(reason) => {
            reduced::run(facts.release.clone(), reason, opts.interval)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    probes.shed_privileges(&Default::default())?;
    let stop = crate::signals::stop_flag()?;
    let header = HeaderInfo {
        kernel: facts.release.clone(),
        probes: probes_summary(&probes.status),
        interval_s: opts.interval.as_secs_f64(),
        untraced: untraced_variants(&probes.status),
    };
    let mut app = App::new(header, opts.filter);
    let mut source = LiveSource {
        probes: &probes,
        previous: Snapshot::read(&probes.ebpf)?,
    };
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let _restore = RestoreTerminal;
    let mut next_tick = Instant::now() + opts.interval;
    loop {
        terminal.draw(|f| render::draw(f, &app))?;
        if app.quit || stop.load(Ordering::Relaxed) {
            break;
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    keys::handle_key(&mut app, key)
                }
                _ => {} // resize and others: the next draw adapts
            }
        }
        if Instant::now() >= next_tick {
            if !app.paused {
                app.ingest(source.next()?);
            }
            next_tick += opts.interval;
        }
    }
    Ok(ExitCode::SUCCESS)
}
