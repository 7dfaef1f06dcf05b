//! `pinwatch top`: the live dashboard. [`app`] holds state, [`keys`] turns
//! key presses into state changes, [`render`] draws (`cgroups` the
//! cgroups table, `overlays` the help and details panes); this module owns the
//! terminal and the loop that feeds snapshots in.

pub mod app;
mod cgroups;
mod fit;
pub mod keys;
mod overlays;
pub mod reduced;
pub mod render;
#[cfg(test)]
mod tests;
mod widgets;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyEvent, KeyEventKind};

use crate::{
    kernel::KernelFacts,
    limits::MemlockState,
    probes::{AttachOptions, Mechanism, ProbeStatus},
    reduced::ReducedSource,
    sampling::{self, ProbeSource, Schedule, Sink, Source},
    snapshot::Delta,
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

/// "16 fentry, 3 kprobe, 1 absent" (and "19 kprobe_multi" or "19
/// fentry_multi" where such a mode attached them).
pub fn probes_summary(status: &[ProbeStatus]) -> String {
    let count = |m| status.iter().filter(|s| s.attached == Some(m)).count();
    let absent = status.iter().filter(|s| s.is_gap()).count();
    let multi: String = [Mechanism::KprobeMulti, Mechanism::FentryMulti]
        .into_iter()
        .filter_map(|m| match count(m) {
            0 => None,
            n => Some(format!("{n} {m}, ")),
        })
        .collect();
    format!(
        "{multi}{} fentry, {} kprobe, {absent} absent",
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

/// The frame of one interval: its delta, with the memlock limit and
/// accounting of the processes active in it and the host's uptime.
fn frame(delta: Delta) -> Frame {
    // Processes that exited since are left out.
    let memlock: BTreeMap<u32, MemlockState> = delta
        .procs
        .keys()
        .filter_map(|&pid| Some((pid, MemlockState::read(pid).ok()?)))
        .collect();
    let uptime_s = {
        use procfs::Current as _;
        procfs::Uptime::current().map(|u| u.uptime).unwrap_or(0.0)
    };
    Frame {
        delta,
        memlock,
        uptime_s,
    }
}

/// What the dashboard loop drives: the full dashboard or the reduced one.
trait Screen<S: Source> {
    /// Draws the whole screen.
    fn draw(&self, f: &mut ratatui::Frame);
    /// Handles a key press; returns whether the user asked to quit.
    fn key(&mut self, key: KeyEvent) -> bool;
    /// Whether intervals are not taken now (paused).
    fn paused(&self) -> bool {
        false
    }
    /// Takes one interval.
    fn ingest(&mut self, interval: S::Interval);
}

impl Screen<ProbeSource<'_>> for App {
    fn draw(&self, f: &mut ratatui::Frame) {
        render::draw(f, self)
    }
    fn key(&mut self, key: KeyEvent) -> bool {
        keys::handle_key(self, key);
        self.quit
    }
    fn paused(&self) -> bool {
        self.paused
    }
    fn ingest(&mut self, delta: Delta) {
        App::ingest(self, frame(delta))
    }
}

/// A screen on the terminal, redrawn and fed keys between intervals.
struct Dashboard<T> {
    terminal: ratatui::DefaultTerminal,
    screen: T,
}

impl<S: Source, T: Screen<S>> Sink<S> for Dashboard<T> {
    fn wait(&mut self, until: Instant) -> anyhow::Result<bool> {
        loop {
            self.terminal.draw(|f| self.screen.draw(f))?;
            if crate::signals::stop_requested() {
                return Ok(false);
            }
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
                && self.screen.key(key)
            {
                return Ok(true);
            }
            // Resizes and other events: the next draw adapts.
            if Instant::now() >= until {
                return Ok(false);
            }
        }
    }

    fn wants_interval(&self) -> bool {
        !self.screen.paused()
    }

    fn take(&mut self, interval: S::Interval, _: &S) -> anyhow::Result<()> {
        self.screen.ingest(interval);
        Ok(())
    }
}

/// Runs a screen on the terminal until q, Ctrl-C, SIGINT, SIGTERM or
/// SIGHUP, taking an interval from `source` every `interval`.
fn run_screen<S: Source, T: Screen<S>>(
    source: &mut S,
    screen: T,
    interval: Duration,
) -> anyhow::Result<()> {
    let terminal = ratatui::try_init().context("setting up the terminal")?;
    let _restore = RestoreTerminal;
    let schedule = Schedule {
        interval,
        count: None,
        duration: None,
        last_interval: false,
    };
    sampling::drive(source, &mut Dashboard { terminal, screen }, &schedule)?;
    Ok(())
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
    let mut facts = KernelFacts::discover();
    let row_limits = (&opts.attach.capacities).into();
    let mut probes = match crate::reduced::attach_or_reduce(&facts, opts.attach, opts.reduced)? {
        crate::reduced::Mode::Probes(probes) => probes,
        crate::reduced::Mode::Reduced(reason) => {
            let screen = reduced::ReducedScreen {
                kernel: facts.release.clone(),
                reason,
                view: None,
            };
            run_screen(&mut ReducedSource::new()?, screen, opts.interval)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    facts.release_btf();
    probes.shed_privileges(&Default::default())?;
    let header = HeaderInfo {
        kernel: facts.release.clone(),
        probes: probes_summary(&probes.status),
        interval_s: opts.interval.as_secs_f64(),
        untraced: untraced_variants(&probes.status),
    };
    let app = App::new(header, opts.filter).with_row_limits(row_limits);
    run_screen(&mut ProbeSource::new(&mut probes)?, app, opts.interval)?;
    Ok(ExitCode::SUCCESS)
}
