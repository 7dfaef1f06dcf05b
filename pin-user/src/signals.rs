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
