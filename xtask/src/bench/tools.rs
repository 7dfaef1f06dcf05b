//! Inside the VM: starting a tracer, watching for its first data, and
//! reading what it costs (CPU, memory, its BPF programs' run time).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::fd::{FromRawFd as _, OwnedFd},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where the kernel's BPF run-time statistics are switched.
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's per-program run-time statistics on or off.
pub fn set_bpf_stats(on: bool) -> anyhow::Result<()> {
    fs::write(BPF_STATS_SYSCTL, if on { "1" } else { "0" })
        .with_context(|| format!("writing {BPF_STATS_SYSCTL}"))
}

/// A running tracer whose output goes through a pseudo-terminal, so tools
/// that buffer a pipe's output (C stdio) print each line as they would on
/// a user's terminal.
pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Output seen so far (for error messages).
    pub seen: Vec<String>,
    /// From spawn to the first line that carries data.
    pub first_data: Duration,
    /// BPF programs in the kernel before it started.
    programs_before: u32,
}

/// How long a tracer took to stop.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// From SIGINT to the process gone.
    pub exited: Duration,
    /// From SIGINT to the kernel holding no more BPF programs than before
    /// the start (it may finish detaching after the process is gone).
    pub freed: Duration,
}

/// How long the kernel gets to free a stopped tracer's programs.
const FREE_TIMEOUT: Duration = Duration::from_secs(300);

/// Opens a pseudo-terminal: (master, slave).
fn pty() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!("openpty: {}", std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, both descriptors are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

impl Tracer {
    /// Starts `argv` and waits (up to `timeout`) for a line for which
    /// `is_data` holds.
    pub fn start(
        argv: &[String],
        mut is_data: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Tracer> {
        let programs_before = super::bpf_objects::program_count()?;
        let (master, slave) = pty()?;
        let started = Instant::now();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(fs::File::from(master));
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    break;
                }
            }
        });
        let mut tracer = Tracer {
            child,
            lines: rx,
            seen: Vec::new(),
            first_data: Duration::ZERO,
            programs_before,
        };
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match tracer.lines.recv_timeout(left) {
                Ok(line) => {
                    let data = is_data(&line);
                    tracer.seen.push(line);
                    if data {
                        tracer.first_data = started.elapsed();
                        return Ok(tracer);
                    }
                }
                Err(reason) => {
                    let _ = tracer.child.kill();
                    let _ = tracer.child.wait();
                    let what = match reason {
                        mpsc::RecvTimeoutError::Timeout => {
                            format!("gave no data within {}s", timeout.as_secs())
                        }
                        mpsc::RecvTimeoutError::Disconnected => "exited before any data".into(),
                    };
                    bail!(
                        "{} {what}; its output:\n{}",
                        argv[0],
                        tracer.seen.join("\n")
                    );
                }
            }
        }
    }

    /// The tracer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the tracer has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.drain();
            bail!("tracer exited early ({status}):\n{}", self.seen.join("\n"));
        }
        Ok(())
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// SIGINT (how a user stops all three tools), then SIGKILL after 20 s;
    /// then waits for the kernel to free its programs, so that the next
    /// tracer's start and runs do not overlap a detach.
    pub fn stop(&mut self) -> anyhow::Result<Stopped> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let signalled = Instant::now();
        let deadline = signalled + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                let exited = signalled.elapsed();
                while super::bpf_objects::program_count()? > self.programs_before {
                    if signalled.elapsed() > FREE_TIMEOUT {
                        bail!(
                            "the stopped tracer's programs were still loaded after {FREE_TIMEOUT:?}"
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Ok(Stopped {
                    exited,
                    freed: signalled.elapsed(),
                });
            }
            // Fine enough to time a stop (the scale benchmark does).
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("tracer did not stop within 20 s of SIGINT")
    }
}

impl Drop for Tracer {
    /// A tracer left behind by an error must not skew the next one.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's CPU time so far (user + system).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = procfs::process::Process::new(pid as i32)?.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    Ok(Duration::from_secs_f64(
        (stat.utime + stat.stime) as f64 / ticks,
    ))
}

/// A process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    procfs::process::Process::new(pid as i32)?
        .status()?
        .vmhwm
        .context("no VmHWM in /proc/PID/status")
}

/// Run time and run count summed over the BPF programs a process holds
/// (each program once, however many descriptors refer to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Programs held.
    pub programs: u64,
    /// Nanoseconds spent running them (with bpf_stats on).
    pub run_time_ns: u64,
    /// Times they ran (with bpf_stats on).
    pub run_count: u64,
}

/// Sums the `fdinfo` statistics of `pid`'s BPF program descriptors.
/// procfs lists the descriptors; it does not parse the BPF fields of
/// fdinfo, which are read here.
pub fn prog_stats(pid: u32) -> anyhow::Result<ProgStats> {
    let process = procfs::process::Process::new(pid as i32)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut total = ProgStats::default();
    for fd in process.fd()? {
        let Ok(fd) = fd else { continue };
        let procfs::process::FDTarget::AnonInode(kind) = &fd.target else {
            continue;
        };
        if kind != "bpf-prog" {
            continue;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.fd)) else {
            continue;
        };
        let info = parse_prog_fdinfo(&text);
        if let Some(id) = info.0
            && seen.insert(id)
        {
            total.programs += 1;
            total.run_time_ns += info.1;
            total.run_count += info.2;
        }
    }
    Ok(total)
}

/// `(prog_id, run_time_ns, run_cnt)` from a BPF program's fdinfo.
fn parse_prog_fdinfo(text: &str) -> (Option<u64>, u64, u64) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    (
        field("prog_id"),
        field("run_time_ns").unwrap_or(0),
        field("run_cnt").unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bpf_prog_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t26\nprog_jited:\t1\nprog_tag:\t7f1d2c1a1f0e9b3c\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t12\n";
        assert_eq!(parse_prog_fdinfo(text), (Some(42), 123456, 789));
        assert_eq!(parse_prog_fdinfo("pos:\t0\n"), (None, 0, 0));
    }
}
