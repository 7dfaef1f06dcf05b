//! `pinwatch record`: sample the counters at an interval while a command
//! runs (only its process tree counts) or for a duration (the whole host),
//! and write a `pinwatch.record/v1` file. Whatever ends the recording
//! (command exit, duration, SIGINT/SIGTERM/SIGHUP, an error while
//! sampling) the file is written, complete, before pinwatch exits; a
//! command still running then gets SIGTERM, SIGKILL after a grace period
//! (or a second stop signal), and a bounded wait, so one that ignores
//! SIGTERM or is stuck in the kernel cannot keep the file from being
//! written. In reduced mode the kernel's own pin counters are recorded
//! instead.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Child, Command, ExitCode},
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;

use super::args::{SourceArgs, parse_duration, parse_interval};
use crate::{
    error::UsageError,
    export::record::{Counts, Interval, Meta, Record, SCHEMA},
    kernel::KernelFacts,
    probes::{AttachError, AttachOptions, Probes},
    reduced::{self, Mode, ReducedSource, ReducedView},
    sampling::{self, ProbeSource, Schedule, Sink, Source},
    snapshot::Delta,
    vmstat,
};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    /// The `pinwatch.record/v1` JSON document.
    Json,
    /// One row per interval and variant.
    Csv,
}

/// Options of `pinwatch record`: what it was asked to do.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Where the figures come from: the probes, or reduced mode.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output file (written atomically).
    #[arg(short, long, default_value = "pinwatch-record.json")]
    pub output: PathBuf,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Sampling interval.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RecordFormat::Json)]
    pub format: RecordFormat,
    /// Command to run and follow (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Whether `program` can be executed: a path, or a name found on PATH.
fn executable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return runnable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))))
}

/// Starts `command` held at a gate until the probes follow its pid, so none
/// of its GUP calls are missed: `sh` waits for a line on fd 3, then execs
/// the command under the same pid. (A blocking `pre_exec` cannot do this:
/// std's spawn waits for the exec.)
/// `memlock` is the RLIMIT_MEMLOCK pinwatch started with, given back to the
/// command (before 5.11 aya raised pinwatch's own to unlimited).
fn spawn_gated(
    command: &[String],
    memlock: Option<libc::rlimit>,
) -> anyhow::Result<(Child, std::os::fd::OwnedFd)> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: fresh descriptors from pipe2.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let gate = read_end.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "read -r _ <&3; exec 3<&-; exec \"$@\"",
        "pinwatch-record",
    ])
    .args(command);
    // SAFETY: dup2, fcntl, prctl and setrlimit are async-signal-safe; they give the
    // shell the gate as fd 3 (without O_CLOEXEC), huge pages and its memlock limit.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps O_CLOEXEC (pipe2 hands out fd 3 when
            // nothing else is open), so clear the flag then.
            let ok = if gate == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(gate, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            crate::agent_memory::restore_huge_pages()?;
            match memlock {
                Some(limit) => crate::probes::memlock::restore(limit),
                None => Ok(()),
            }
        });
    }
    let child = cmd
        .spawn()
        .context("cannot start /bin/sh to run the command")?;
    drop(read_end);
    Ok((child, write_end))
}

/// Fails before anything is recorded when the output could not be written
/// at the end: a missing or unwritable directory, or a directory in the
/// way. Tries exactly what the final write does (a temporary file beside
/// the output).
fn check_output(output: &std::path::Path) -> anyhow::Result<()> {
    let usage = |why: String| UsageError(format!("cannot write {}: {why}", output.display()));
    if output.is_dir() {
        return Err(usage("it is a directory".into()).into());
    }
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(usage(format!("no directory {}", dir.display())).into());
    }
    tempfile::NamedTempFile::new_in(dir).map_err(|e| usage(e.kind().to_string()))?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs the recording; the exit code is the command's, when there is one.
pub fn run(opts: RecordArgs) -> anyhow::Result<ExitCode> {
    if let Some(program) = opts.command.first()
        && !executable(program)
    {
        return Err(UsageError(format!("command not found or not executable: {program}")).into());
    }
    check_output(&opts.output)?;
    // Before the kernel is probed: on kernels before 5.11 aya raises
    // pinwatch's own at its first map.
    let memlock = crate::probes::memlock::current();
    let mut facts = KernelFacts::discover();
    let options = AttachOptions {
        follow: !opts.command.is_empty(),
        ..opts.source.options()
    };
    let mode = reduced::attach_or_reduce(&facts, options, opts.source.reduced)?;
    facts.release_btf();
    // Told to stop while attaching: do not start a command only to end it.
    if !opts.command.is_empty() && crate::signals::stop_flag()?.load(Ordering::Relaxed) {
        return Err(AttachError::Stopped.into());
    }
    match mode {
        Mode::Probes(mut probes) => record_probes(&opts, &facts, &mut probes, memlock),
        Mode::Reduced(reason) => record_reduced(&opts, &facts, reason, memlock),
    }
}

/// Records from the probes; a command is followed from its first
/// instruction (held at a gate until the probes follow its pid).
fn record_probes(
    opts: &RecordArgs,
    facts: &KernelFacts,
    probes: &mut Probes,
    memlock: Option<libc::rlimit>,
) -> anyhow::Result<ExitCode> {
    let mut gated = None;
    if !opts.command.is_empty() {
        let (mut c, gate) = spawn_gated(&opts.command, memlock)?;
        if let Err(e) = probes.follow(c.id()) {
            let _ = c.kill();
            let _ = c.wait();
            return Err(e.context("cannot follow the command's process tree"));
        }
        gated = Some((c, gate));
    }
    let _ = vmstat::refresh();
    // Stays root: it signals and reaps a root child, refreshes vmstat
    // (root's file) and writes where the output was checked.
    probes.shed_privileges(&crate::privileges::Needs {
        stay_root: true,
        keep: vec![caps::Capability::CAP_DAC_OVERRIDE],
    })?;
    let attach = probes
        .status
        .iter()
        .filter_map(|s| s.attached.map(|m| (s.function.to_string(), m.to_string())))
        .collect();
    let mut source = ProbeSource::new(probes)?;
    if gated.is_some() {
        source = source.pruning_followed();
    }
    // Said once counting has started, so a caller that waits for this
    // line misses nothing.
    eprintln!(
        "pinwatch: recording to {}: kernel {}: {}",
        opts.output.display(),
        facts.release,
        source.probes().summary()
    );
    // A line through the gate lets the command exec.
    let child = gated.map(|(c, gate)| {
        let mut gate = std::fs::File::from(gate);
        let _ = std::io::Write::write_all(&mut gate, b"go\n");
        c
    });
    record(opts, facts, source, child, |meta| Meta { attach, ..meta })
}

/// Reduced mode: samples `/proc/vmstat` and `VmPin` (host-wide) while the
/// command runs or for the duration.
fn record_reduced(
    opts: &RecordArgs,
    facts: &KernelFacts,
    reason: crate::reduced::ReducedReason,
    memlock: Option<libc::rlimit>,
) -> anyhow::Result<ExitCode> {
    let _ = vmstat::refresh();
    let source = ReducedSource::new()?;
    let child = match opts.command.is_empty() {
        true => None,
        false => {
            // Nothing to follow: open the gate at once.
            let (c, gate) = spawn_gated(&opts.command, memlock)?;
            let _ = std::io::Write::write_all(&mut std::fs::File::from(gate), b"go\n");
            Some(c)
        }
    };
    record(opts, facts, source, child, |meta| Meta {
        reduced: Some(reason),
        ..meta
    })
}

/// What a recording keeps of one interval.
trait Recorded {
    /// The interval's counts as the record schema has them.
    fn counts(&self) -> Counts;
    /// Its length in seconds.
    fn seconds(&self) -> f64;
}

impl Recorded for Delta {
    fn counts(&self) -> Counts {
        Counts::from_delta(self)
    }
    fn seconds(&self) -> f64 {
        self.seconds
    }
}

impl Recorded for ReducedView {
    /// The part of a recording's counts reduced mode has.
    fn counts(&self) -> Counts {
        Counts {
            vmstat: self.vmstat,
            pinned_processes: self.processes.clone(),
            ..Default::default()
        }
    }
    fn seconds(&self) -> f64 {
        self.interval_s
    }
}

/// Samples `source` until the command ends, the duration passes or a stop
/// signal arrives, ends the command if it still runs, and writes the
/// recording (also after a sampling error, with what came before).
fn record<S>(
    opts: &RecordArgs,
    facts: &KernelFacts,
    mut source: S,
    child: Option<Child>,
    complete: impl FnOnce(Meta) -> Meta,
) -> anyhow::Result<ExitCode>
where
    S: Source,
    S::Interval: Recorded,
{
    let started = SystemTime::now();
    let mut recorder = Recorder {
        child,
        exit_status: None,
        intervals: Vec::new(),
        last_end_s: 0.0,
    };
    let schedule = Schedule {
        interval: opts.interval,
        count: None,
        duration: opts.duration,
        last_interval: true,
    };
    let sampling_error = sampling::drive(&mut source, &mut recorder, &schedule).err();
    let exit_status = recorder
        .exit_status
        .or_else(|| end_command(recorder.child.as_mut()));
    let duration = source.elapsed();
    let record = Record {
        schema: SCHEMA.to_string(),
        meta: complete(meta(opts, facts, started, duration, exit_status)),
        counts: source.since_start().counts(),
        intervals: recorder.intervals,
    };
    finish(opts, record, sampling_error)
}

/// Keeps the intervals and watches the recorded command.
struct Recorder {
    child: Option<Child>,
    exit_status: Option<std::process::ExitStatus>,
    intervals: Vec<Interval>,
    /// Where the last interval ended, in seconds since the first read.
    last_end_s: f64,
}

impl<S> Sink<S> for Recorder
where
    S: Source,
    S::Interval: Recorded,
{
    fn wait(&mut self, until: Instant) -> anyhow::Result<bool> {
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait().context("waiting for the command")?
            {
                self.exit_status = Some(status);
                return Ok(true);
            }
            if crate::signals::stop_requested() || Instant::now() >= until {
                return Ok(false);
            }
            sampling::sleep_until_stopped(until.min(Instant::now() + Duration::from_millis(20)));
        }
    }

    fn ending(&mut self) {
        let _ = vmstat::refresh();
    }

    fn take(&mut self, interval: S::Interval, source: &S) -> anyhow::Result<()> {
        self.intervals.push(Interval {
            t_s: self.last_end_s,
            duration_s: interval.seconds(),
            counts: interval.counts(),
        });
        self.last_end_s = source.elapsed().as_secs_f64();
        Ok(())
    }
}

/// How long the command has to end after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for the command after SIGKILL. A process asleep in the
/// kernel (D state) dies only when it leaves it, which may be never: the
/// recording is written without its status rather than not at all.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Ends the command when the recording stopped first (a signal, the
/// duration, an error) and returns how it ended: SIGTERM, then SIGKILL
/// after [`TERM_GRACE`] (at once on another stop signal), then at most
/// [`KILL_WAIT`] more. `None` when it could not be reaped in that time.
/// Only the command's own process is signalled: it shares pinwatch's
/// process group, which must not be killed.
fn end_command(child: Option<&mut Child>) -> Option<std::process::ExitStatus> {
    let child = child?;
    let pid = child.id();
    let stops = crate::signals::stops_received();
    // SAFETY: signalling our own child, not yet reaped (so the pid is its).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    match reap_within(child, TERM_GRACE, Some(stops)) {
        Reaped::Exited(status) => return Some(status),
        Reaped::Lost => return None,
        Reaped::Running => {}
    }
    eprintln!("pinwatch: the command (pid {pid}) is still running after SIGTERM; sending SIGKILL");
    // SAFETY: as above; still not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    match reap_within(child, KILL_WAIT, None) {
        Reaped::Exited(status) => Some(status),
        Reaped::Lost => None,
        Reaped::Running => {
            eprintln!(
                "pinwatch: the command (pid {pid}) has not ended {}s after SIGKILL (stuck in the \
                 kernel?); not waiting for it",
                KILL_WAIT.as_secs()
            );
            None
        }
    }
}

/// What waiting for the command found.
enum Reaped {
    /// It ended (and is reaped).
    Exited(std::process::ExitStatus),
    /// Still running when the wait ended.
    Running,
    /// It cannot be waited for (should not happen for our own child).
    Lost,
}

/// Waits up to `limit` for `child` to end; stops waiting early when more
/// stop signals than `stops` have arrived.
fn reap_within(child: &mut Child, limit: Duration, stops: Option<u64>) -> Reaped {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Reaped::Exited(status),
            Ok(None) => {}
            Err(e) => {
                log::warn!("waiting for the command: {e}");
                return Reaped::Lost;
            }
        }
        let escalate = stops.is_some_and(|n| crate::signals::stops_received() > n);
        if escalate || Instant::now() >= deadline {
            return Reaped::Running;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The recording's metadata; no probes attached and not reduced (callers
/// fill in what applies).
fn meta(
    opts: &RecordArgs,
    facts: &KernelFacts,
    started: SystemTime,
    duration: Duration,
    exit_status: Option<std::process::ExitStatus>,
) -> Meta {
    Meta {
        kernel: facts.release.clone(),
        hostname: hostname(),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        duration_s: duration.as_secs_f64(),
        interval_s: opts.interval.as_secs_f64(),
        attach: Default::default(),
        command: (!opts.command.is_empty()).then(|| opts.command.clone()),
        exit_status: exit_status.map(exit_code),
        reduced: None,
    }
}

/// A child's exit status as a shell would report it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Writes the recording, says where, and returns the command's exit code
/// (or the sampling error, after the file is safe).
fn finish(
    opts: &RecordArgs,
    record: Record,
    sampling_error: Option<anyhow::Error>,
) -> anyhow::Result<ExitCode> {
    match opts.format {
        RecordFormat::Json => record.write_json(&opts.output),
        RecordFormat::Csv => record.write_csv(&opts.output),
    }
    .with_context(|| format!("writing {}", opts.output.display()))?;
    eprintln!(
        "pinwatch: recorded {:.1}s ({} intervals) to {}",
        record.meta.duration_s,
        record.intervals.len(),
        opts.output.display()
    );
    if let Some(e) = sampling_error {
        return Err(e.context("sampling stopped early; the recording holds what came before"));
    }
    Ok(match record.meta.exit_status {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // Left unreaped only after SIGKILL, which a process cannot escape:
        // it dies of it when it leaves the kernel. Say so as a shell would.
        None if record.meta.command.is_some() => ExitCode::from(128 + libc::SIGKILL as u8),
        None => ExitCode::SUCCESS,
    })
}
