//! Booting a kernel under qemu (TCG) with an initramfs that runs one
//! command, streaming the serial console and returning the command's exit
//! status.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, initramfs, kernels, setup, workspace_root};

/// What a VM run produced.
pub struct VmOutcome {
    /// The command's exit status inside the VM.
    pub status: i32,
    /// Every console line.
    pub lines: Vec<String>,
}

/// Builds pinwatch (debug profile) and returns the binary's path.
pub fn build_pinwatch() -> anyhow::Result<PathBuf> {
    setup::ensure_build_tools()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "-p", "pin-user", "--bin", "pinwatch"])
            .current_dir(workspace_root()),
    )?;
    Ok(workspace_root().join("target/debug/pinwatch"))
}

/// The host's tmux, which the VM images carry so the dashboard can run in
/// a real terminal there.
pub fn tmux() -> anyhow::Result<PathBuf> {
    setup::ensure_vm_tools()?;
    let path = cmd::output(Command::new("sh").args(["-c", "command -v tmux"]))
        .context("tmux not found: run `cargo xtask setup`")?;
    Ok(PathBuf::from(path.trim()))
}

/// `cargo xtask vm`: fresh pinwatch, boot, run, return the status.
pub fn run_cli(kernel: &str, timeout: u64, command: &str) -> anyhow::Result<ExitCode> {
    let pinwatch = build_pinwatch()?;
    let outcome = run(
        kernel,
        &[pinwatch, tmux()?],
        command,
        Duration::from_secs(timeout),
        true,
    )?;
    Ok(ExitCode::from(outcome.status.clamp(0, 255) as u8))
}

/// Boots `kernel` with `binaries` in /bin, runs `command`, streams the
/// console when `echo` is set.
pub fn run(
    kernel: &str,
    binaries: &[PathBuf],
    command: &str,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<VmOutcome> {
    setup::ensure_vm_tools()?;
    let kernel = kernels::ensure(kernel)?;
    let work = workspace_root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    let initrd = work.join(format!("initrd-{}.gz", std::process::id()));
    initramfs::build(&initrd, binaries, &kernel.modules, command)?;

    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 quiet rdinit=/init panic=-1 oops=panic",
            "-nographic",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (run `cargo xtask setup`)")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut status = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&initrd);
            bail!(
                "VM on {} timed out after {}s",
                kernel.name,
                timeout.as_secs()
            );
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                if echo {
                    println!("{line}");
                }
                if let Some(code) = line.strip_prefix(initramfs::EXIT_MARKER) {
                    status = code.trim().parse().ok();
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(&initrd);
    match status {
        Some(status) => Ok(VmOutcome { status, lines }),
        None => bail!(
            "VM on {} ended without reporting an exit status (kernel panic or init failure); last lines:\n{}",
            kernel.name,
            lines
                .iter()
                .rev()
                .take(15)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}
