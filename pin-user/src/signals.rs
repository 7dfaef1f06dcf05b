//! Ending long-running commands cleanly: SIGINT, SIGTERM and SIGHUP set a
//! flag the command's loop checks, so it can detach, restore the terminal
//! and finish its output before exiting.
//!
//! One flag (and one count) serves the whole process, and its handlers are
//! in place before anything slow: [`hold`] blocks the three signals as
//! `main` starts, and [`install`] (for the long-running commands, right
//! after the command line is parsed) installs the handlers, then unblocks.
//! A signal that arrives in between stays pending and is counted then;
//! one during attach (seconds under emulation) stops the attach. Blocking,
//! rather than relying on the inherited disposition, matters: a
//! non-interactive shell starts background jobs with SIGINT ignored, and an
//! ignored signal that is not blocked is discarded on arrival. The other
//! commands call [`release`] instead and keep the default behaviour.

use std::sync::{
    Arc, LazyLock, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use anyhow::Context as _;

/// The signals that end a long-running command.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Set by the first stop signal, never cleared.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Stop signals received so far (a second one can escalate).
static STOPS: AtomicU64 = AtomicU64::new(0);

/// Whether [`install`] has run.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// The three stop signals as a set.
fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Sets the calling thread's mask for the stop signals.
fn mask(how: libc::c_int) {
    let set = stop_set();
    // SAFETY: a valid set; the old mask is not wanted. Fails only for an
    // invalid `how`.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

/// Blocks the stop signals so one that arrives before the command is known
/// stays pending (even if inherited as ignored) instead of being lost.
/// Call first in `main`, before any thread exists (threads inherit the
/// mask), and follow with [`install`] or [`release`] before starting any
/// thread or child.
pub fn hold() {
    mask(libc::SIG_BLOCK);
}

/// Unblocks the stop signals without handling them: the commands that
/// keep the default behaviour (Ctrl-C ends them at once). A signal held
/// since [`hold`] is delivered now, with the inherited disposition.
pub fn release() {
    mask(libc::SIG_UNBLOCK);
}

/// Installs the process's handlers for SIGINT, SIGTERM and SIGHUP (once;
/// later calls do nothing), then unblocks them: a signal held since
/// [`hold`] is counted at once.
pub fn install() -> anyhow::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*installed {
        for signal in STOP_SIGNALS {
            let stop = Arc::clone(&STOP);
            // Registered before tokio's own (StopSignals), so on each
            // delivery this runs first: when tokio wakes a task, the count
            // already includes the signal.
            // SAFETY: the action only does atomic stores and adds, which
            // are async-signal-safe.
            unsafe {
                signal_hook::low_level::register(signal, move || {
                    stop.store(true, Ordering::SeqCst);
                    STOPS.fetch_add(1, Ordering::SeqCst);
                })
            }
            .context("installing signal handlers")?;
        }
        *installed = true;
    }
    release();
    Ok(())
}

/// Whether a stop signal has arrived since the handlers were installed.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// How many stop signals have arrived.
pub fn stops_received() -> u64 {
    STOPS.load(Ordering::SeqCst)
}

/// The process's stop flag, set when SIGINT, SIGTERM or SIGHUP arrives
/// (installing the handlers if that has not happened yet). Already set if
/// a signal came during start-up.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    install()?;
    Ok(Arc::clone(&STOP))
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

/// SIGINT, SIGTERM and SIGHUP as one stream, for the async commands. The
/// process's count is the truth; tokio's streams only wake the task.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    /// Signals already returned by [`StopSignals::recv`].
    seen: u64,
}

impl StopSignals {
    /// Watches the stop signals (inside a tokio runtime). Signals that
    /// arrived before, during start-up, are not lost: the first
    /// [`StopSignals::recv`] returns at once for them.
    pub fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        install()?;
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
            seen: 0,
        })
    }

    /// Waits for the next stop signal not yet returned; at once if one is
    /// pending (including any that arrived before `new`).
    pub async fn recv(&mut self) {
        loop {
            let received = stops_received();
            if received > self.seen {
                self.seen = received;
                return;
            }
            // A wake-up without a new count is tokio's late copy of a
            // signal already counted: wait again.
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
                _ = self.hangup.recv() => {}
            }
        }
    }
}
