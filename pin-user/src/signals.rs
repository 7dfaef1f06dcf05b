//! Ending long-running commands cleanly: SIGINT, SIGTERM and SIGHUP set a
//! flag the command's loop checks, so it can detach, restore the terminal
//! and finish its output before exiting.

use std::sync::{Arc, atomic::AtomicBool};

use anyhow::Context as _;

/// A flag set when SIGINT, SIGTERM or SIGHUP arrives.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Sleeps for `duration`, waking early when `stop` is set; returns whether
/// it was.
pub fn sleep_unless_stopped(stop: &AtomicBool, duration: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + duration;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(20)));
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream, for the async commands.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
        })
    }

    /// Waits for the next of the three.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
