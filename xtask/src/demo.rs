//! The README's first demo, driven as a newcomer runs it: `cargo xtask vm
//! -i` with `pinwatch top` beside a pinning workload, in a terminal (tmux
//! on the host). The dashboard must show the workload's variant, `q` must
//! quit it, and xtask must exit with the guest's status (0).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{vm, workspace};

/// The README's "Try it in a VM" command. The workload outlives the
/// dashboard (a million calls take minutes under TCG) and is cut short
/// when the guest powers off after `top` quits.
const DEMO: &str = "pinwatch workload process-vm-readv --calls 1000000 >/dev/null & pinwatch top";

/// Kernel the demo boots (the README's default).
const KERNEL: &str = "debian-6.12";

/// tmux session name on the host.
const SESSION: &str = "pinwatch-demo";

fn tmux(tmux: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(tmux)
        .args(args)
        .env("LANG", "C.UTF-8")
        .output()
        .with_context(|| format!("running tmux {args:?}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Waits until `done` holds for the pane's text, or `within` passes.
fn wait_for_pane(
    tmux_bin: &Path,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    while started.elapsed() < within {
        let (alive, text) = tmux(tmux_bin, &["capture-pane", "-p", "-t", SESSION])?;
        if !alive {
            return Ok(None);
        }
        if done(&text) {
            return Ok(Some(text));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(None)
}

/// Runs the demo; Ok(()) when it behaved, else what went wrong.
pub fn run() -> anyhow::Result<()> {
    let tmux_bin = vm::tmux()?;
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let status_file = workspace::root().join("target/vm/demo-status");
    let _ = std::fs::remove_file(&status_file);
    let _ = tmux(&tmux_bin, &["kill-session", "-t", SESSION]);
    // xtask runs in the session's shell; its exit status lands in a file.
    let shell = format!(
        "cd '{}' && '{}' vm -i --kernel {KERNEL} -- '{DEMO}'; echo $? > '{}'",
        workspace::root().display(),
        xtask.display(),
        status_file.display()
    );
    let (ok, _) = tmux(
        &tmux_bin,
        &[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            "160",
            "-y",
            "50",
            &shell,
        ],
    )?;
    if !ok {
        bail!("tmux new-session failed");
    }
    let result = drive(&tmux_bin, &status_file);
    let _ = tmux(&tmux_bin, &["kill-session", "-t", SESSION]);
    result
}

fn drive(tmux_bin: &Path, status_file: &Path) -> anyhow::Result<()> {
    // Boot (~30 s under TCG) and pinwatch's start-up (a few seconds), then
    // the first interval with the workload's calls in it.
    let shown = wait_for_pane(tmux_bin, Duration::from_secs(300), |text| {
        text.contains("GUP variants") && text.contains("pin_user_pages_remote")
    })?;
    let Some(screen) = shown else {
        let (_, text) = tmux(tmux_bin, &["capture-pane", "-p", "-t", SESSION])?;
        bail!("the dashboard never showed pin_user_pages_remote within 300 s; the screen:\n{text}");
    };
    println!("demo: the dashboard shows the workload:\n{screen}");
    tmux(tmux_bin, &["send-keys", "-t", SESSION, "q"])?;
    // Quitting stops pinwatch (detach), then the guest powers off.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if let Ok(text) = std::fs::read_to_string(status_file) {
            let status = text.trim();
            if status == "0" {
                return Ok(());
            }
            bail!("`cargo xtask vm -i` exited with status {status} after `q`");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, text) = tmux(tmux_bin, &["capture-pane", "-p", "-t", SESSION])?;
    bail!("`cargo xtask vm -i` had not exited 120 s after `q`; the screen:\n{text}")
}
