//! Booting a kernel under qemu (TCG) with an initramfs that runs one
//! command, streaming the serial console and returning the command's exit
//! status.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitCode, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, initramfs, install, kernels, qemu, workspace};

/// What a VM run produced.
pub struct VmOutcome {
    /// The command's exit status inside the VM.
    pub status: i32,
    /// Every console line.
    pub lines: Vec<String>,
}

/// The guest died in a way that says nothing about the command, so the
/// run can be repeated: see [`EmulatorDeathCause`].
#[derive(Debug)]
pub struct EmulatorDeath {
    /// Kernel name.
    pub kernel: String,
    /// How it died.
    pub cause: EmulatorDeathCause,
    /// The console's last lines (the oops, usually).
    pub last_lines: String,
}

/// The two deaths [`EmulatorDeath`] stands for.
#[derive(Debug)]
pub enum EmulatorDeathCause {
    /// Before /init printed [`initramfs::BOOT_MARKER`]: nothing of the
    /// command ran.
    BeforeInit,
    /// An int3 that no handler claimed, the way qemu's multi-threaded TCG
    /// kills guests while kernel text is live-patched (fentry attach or
    /// detach, static keys): under 7.2 in 2 of 3 boots of a start/stop
    /// loop beside a pinning workload, and once under 10 (a fresh-clone
    /// CI's 6.18 guest at `get_user_pages_fast+0x5`, its `Code:` dump
    /// showing the trampoline call whole where the int3 had been). On
    /// hardware the kernel's patching claims every int3 it places until
    /// all CPUs have serialized, and pinwatch's programs cannot jump into
    /// kernel text.
    UnclaimedInt3 {
        /// The oops's `RIP:` line.
        rip: String,
    },
}

impl std::fmt::Display for EmulatorDeath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            EmulatorDeathCause::BeforeInit => write!(
                f,
                "VM on {} died while booting, before its init ran",
                self.kernel
            )?,
            EmulatorDeathCause::UnclaimedInt3 { rip } => write!(
                f,
                "VM on {} died of an unclaimed int3 at {rip} (qemu's multi-threaded TCG during live patching)",
                self.kernel
            )?,
        }
        write!(f, "; last lines:\n{}", self.last_lines)
    }
}

impl std::error::Error for EmulatorDeath {}

/// Where an int3 oops on the console stopped the kernel: its `RIP:`
/// line, without the timestamp. `None` for any other death.
fn int3_oops(lines: &[String]) -> Option<String> {
    // "Oops: int3: 0000 [#1] ..." (6.x), "int3: 0000 [#1] ..." (5.10).
    let oops = lines.iter().position(|l| l.contains("int3: 0000 [#"))?;
    let rip = lines[oops..].iter().find_map(|l| l.split_once("RIP: "))?.1;
    Some(rip.trim().to_string())
}

/// Builds pinwatch with the release profile, what users run (the VMs'
/// figures and start-up times are then theirs; a debug build took 36 s to
/// start on 5.10 under TCG), and returns the binary's path.
pub fn build_pinwatch() -> anyhow::Result<PathBuf> {
    install::ensure_build_tools()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "pin-user", "--bin", "pinwatch"])
            .current_dir(workspace::root()),
    )?;
    Ok(workspace::root().join("target/release/pinwatch"))
}

/// The release pinwatch as `cargo xtask dist` ships it: static (musl), the
/// eBPF objects embedded. `dist` uses it.
pub fn build_static_pinwatch() -> anyhow::Result<PathBuf> {
    install::ensure_build_tools()?;
    install::ensure_static_target()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "pin-user", "--bin", "pinwatch"])
            .args(["--target", install::STATIC_TARGET])
            .current_dir(workspace::root()),
    )?;
    Ok(workspace::root()
        .join("target")
        .join(install::STATIC_TARGET)
        .join("release/pinwatch"))
}

/// The host's tmux, which the VM images carry so the dashboard can run in
/// a real terminal there.
pub fn tmux() -> anyhow::Result<PathBuf> {
    install::ensure_vm_tools()?;
    initramfs::which("tmux")
}

/// `cargo xtask vm`: fresh pinwatch (and `with`), boot, run, return the
/// status.
pub fn run_cli(
    kernel: &str,
    timeout: u64,
    command: &str,
    interactive: bool,
    with: &[PathBuf],
    kernel_params: &str,
    cpus: u32,
) -> anyhow::Result<ExitCode> {
    // The glibc build the matrix runs: the static one costs a second
    // release build (musl, 3 minutes on 2 cores), which CI's demo paid
    // while dist was out of CI (demo 252 s against 61 s).
    let pinwatch = build_pinwatch()?;
    let mut binaries = vec![pinwatch, tmux()?];
    binaries.extend(with.iter().cloned());
    let timeout = Duration::from_secs(timeout);
    let options = VmOptions {
        interactive,
        // Extra tools (bpftrace brings ~200 MiB of libraries) live in the
        // initramfs, in guest memory.
        memory_mb: if with.is_empty() {
            DEFAULT_MEMORY_MB
        } else {
            4 * DEFAULT_MEMORY_MB
        },
        kernel_params: kernel_params.to_string(),
        cpus,
        ..VmOptions::default()
    };
    let outcome = run_with(kernel, &binaries, command, timeout, &options)?;
    Ok(ExitCode::from(outcome.status.clamp(0, 255) as u8))
}

/// The exit status a console line reports, wherever the marker sits in it:
/// a dashboard that restores the terminal as it quits leaves escape
/// sequences (and no newline) before it.
fn exit_status_in(line: &str) -> Option<i32> {
    let (_, after) = line.rsplit_once(initramfs::EXIT_MARKER)?;
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// How a VM boots, beyond its kernel, binaries and command.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// How the console reaches stdout as it comes.
    pub echo: Echo,
    /// Give the VM this terminal's keyboard (qemu puts it in raw mode;
    /// Ctrl-A X leaves qemu).
    pub interactive: bool,
    /// Guest memory (the initramfs lives in it).
    pub memory_mb: u32,
    /// Extra kernel command-line parameters (e.g. `lockdown=...`).
    pub kernel_params: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Run every vCPU on one host thread (`-accel tcg,thread=single`):
    /// slower (6.18's suite 220 s against 159 s), but no vCPU can run
    /// code another is patching (see [`EmulatorDeathCause::UnclaimedInt3`]).
    pub single_threaded: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            echo: Echo::Raw,
            interactive: false,
            memory_mb: DEFAULT_MEMORY_MB,
            kernel_params: String::new(),
            cpus: DEFAULT_CPUS,
            single_threaded: false,
        }
    }
}

/// How a VM's console is forwarded to stdout while it runs.
#[derive(Clone, Debug)]
pub enum Echo {
    /// Byte for byte as it comes (a dashboard draws without newlines).
    Raw,
    /// Whole lines, each after this tag: the console of one of several
    /// VMs running at once, told apart in the interleaved output.
    Tagged(String),
}

/// Virtual CPUs of a VM run: one per host core here.
pub const DEFAULT_CPUS: u32 = 2;

/// Guest memory of a VM run.
pub const DEFAULT_MEMORY_MB: u32 = 1024;

/// The host terminal's (rows, columns), when stdin is a terminal.
fn host_terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Boots `kernel` as `options` say, with `binaries` in /bin, runs
/// `command`, streams the console.
pub fn run_with(
    kernel: &str,
    binaries: &[PathBuf],
    command: &str,
    timeout: Duration,
    options: &VmOptions,
) -> anyhow::Result<VmOutcome> {
    let command = sized_to_terminal(command, options.interactive);
    let qemu = qemu::ensure()?;
    let kernel = kernels::ensure(kernel)?;
    let work = workspace::root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    // One image per VM: several may boot at once from one process.
    static BOOTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let initrd = work.join(format!(
        "initrd-{}-{}.cpio",
        std::process::id(),
        BOOTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    initramfs::build(
        &initrd,
        binaries,
        &kernel.modules,
        kernel.files.as_deref(),
        &command,
    )?;
    let mut child = start_qemu(&qemu, &kernel, &initrd, options)?;
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = forward_console(stdout, options.echo.clone());
    let Some(console) = read_console(&lines, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&initrd);
        bail!(
            "VM on {} timed out after {}s",
            kernel.name,
            timeout.as_secs()
        );
    };
    let _ = child.wait();
    let _ = std::fs::remove_file(&initrd);
    console.outcome(&kernel.name)
}

/// `command` told the host terminal's size first when the VM is
/// interactive: the serial console cannot tell the guest its size.
fn sized_to_terminal(command: &str, interactive: bool) -> String {
    match (interactive, host_terminal_size()) {
        (true, Some((rows, cols))) => format!("stty rows {rows} cols {cols}; {command}"),
        _ => command.to_string(),
    }
}

/// Starts qemu on `kernel` and `initrd`, the console on its stdout.
fn start_qemu(
    qemu: &qemu::Qemu,
    kernel: &kernels::Kernel,
    initrd: &Path,
    options: &VmOptions,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(&qemu.binary);
    for dir in &qemu.data_dirs {
        cmd.arg("-L").arg(dir);
    }
    // More vCPUs than host cores: one TCG thread for them all. A 64-vCPU
    // guest under multi-threaded TCG died at boot in code patching.
    let accel = if options.cpus > DEFAULT_CPUS || options.single_threaded {
        "tcg,thread=single"
    } else {
        "tcg"
    };
    cmd.args(["-accel", accel, "-cpu", "max"])
        .args(["-smp", &options.cpus.to_string()])
        // No network; no audio (it would try Debian 7.2's audio modules,
        // which qemu 10 cannot load).
        .args(["-nic", "none", "-audio", "none"])
        .args(["-m", &options.memory_mb.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet rdinit=/init panic=-1 oops=panic {}",
            options.kernel_params
        ))
        .args(["-nographic", "-no-reboot"])
        .stdin(if options.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (run `cargo xtask setup`)",
                qemu.binary.display()
            )
        })
}

/// Forwards the console to stdout as `echo` says and hands complete lines
/// on, for the exit marker.
fn forward_console(mut stdout: ChildStdout, echo: Echo) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut partial = Vec::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Echo::Raw = echo {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            partial.extend_from_slice(&buf[..n]);
            while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if let Echo::Tagged(tag) = &echo {
                    // Ignored like the raw path's: a closed stdout must not
                    // end the reader and cut the console short.
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "{tag} {}",
                        line.trim_end_matches('\r')
                    );
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// What the console showed until qemu closed it.
struct Console {
    /// Every line, carriage returns trimmed.
    lines: Vec<String>,
    /// The exit status the last marker line reported.
    status: Option<i32>,
}

/// Gathers console lines until qemu closes the console; `None` once
/// `timeout` has passed first.
fn read_console(lines: &Receiver<String>, timeout: Duration) -> Option<Console> {
    let started = Instant::now();
    let mut console = Console {
        lines: Vec::new(),
        status: None,
    };
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return None;
        }
        match lines.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                if let Some(code) = exit_status_in(&line) {
                    console.status = Some(code);
                }
                console.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Some(console),
        }
    }
}

impl Console {
    /// The run's outcome: the command's status, or why there is none (a
    /// guest that died booting or of an int3 is an [`EmulatorDeath`]).
    fn outcome(self, kernel: &str) -> anyhow::Result<VmOutcome> {
        let Self { lines, status } = self;
        let last_lines = || lines[lines.len().saturating_sub(15)..].join("\n");
        let death = |cause| EmulatorDeath {
            kernel: kernel.to_string(),
            cause,
            last_lines: last_lines(),
        };
        match status {
            Some(status) => Ok(VmOutcome { status, lines }),
            None if let Some(rip) = int3_oops(&lines) => {
                Err(death(EmulatorDeathCause::UnclaimedInt3 { rip }).into())
            }
            None if !lines.iter().any(|l| l.contains(initramfs::BOOT_MARKER)) => {
                Err(death(EmulatorDeathCause::BeforeInit).into())
            }
            None => bail!(
                "VM on {} ended without reporting an exit status (kernel panic or init failure); last lines:\n{}",
                kernel,
                last_lines()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{exit_status_in, int3_oops};

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn an_int3_oops_names_where_it_stopped() {
        // The 6.18 guest of a fresh-clone CI (shortened).
        let died = lines(
            "[   70.25] Oops: int3: 0000 [#1] SMP NOPTI
[   70.25] CPU: 1 UID: 0 PID: 600 Comm: pinwatch-workload
[   70.259061] RIP: 0010:get_user_pages_fast+0x5/0x50
[   70.259081] Code: cc cc 0f 0b eb e6 0f 1f 40 00 90 90 f3 0f 1e fa e8 <57> 51 cc ff
[   70.259313] Kernel panic - not syncing: Fatal exception in interrupt",
        );
        assert_eq!(
            int3_oops(&died).as_deref(),
            Some("0010:get_user_pages_fast+0x5/0x50")
        );
        // 5.10 prints no "Oops: " before it.
        let older = lines("int3: 0000 [#1] SMP NOPTI\nRIP: 0010:sched_clock_cpu+0x1/0x10");
        assert_eq!(
            int3_oops(&older).as_deref(),
            Some("0010:sched_clock_cpu+0x1/0x10")
        );
    }

    #[test]
    fn other_deaths_are_not_int3_oopses() {
        let bug = lines(
            "Oops: invalid opcode: 0000 [#1] SMP NOPTI
RIP: 0010:f+0x5/0x50",
        );
        assert_eq!(int3_oops(&bug), None);
        // An RIP line before the oops belongs to something else.
        let warning = lines("RIP: 0010:g+0x1/0x2\nKernel panic - not syncing");
        assert_eq!(int3_oops(&warning), None);
    }

    #[test]
    fn exit_status_after_a_dashboard() {
        assert_eq!(exit_status_in("PINWATCH_VM_EXIT=0"), Some(0));
        // `pinwatch top` quit: the terminal restored on the same line.
        assert_eq!(
            exit_status_in("\u{1b}[?1049l\u{1b}[?25hPINWATCH_VM_EXIT=3\r"),
            Some(3)
        );
        assert_eq!(exit_status_in("echo PINWATCH_VM_EXIT=$?"), None);
        assert_eq!(exit_status_in("nothing here"), None);
    }
}
