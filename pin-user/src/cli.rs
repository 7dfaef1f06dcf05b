//! The command line: argument definitions, dispatch, and turning errors into
//! one line on stderr plus a distinct exit code.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    commands,
    probes::{AttachError, AttachMode, AttachOptions},
    workload::{WorkloadError, WorkloadKind},
};

/// Exit code for bad usage (also what clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the kernel does not allow tracing.
pub const EXIT_CANNOT_TRACE: u8 = 3;
/// Exit code when the process lacks the privileges attaching needs.
pub const EXIT_PRIVILEGES: u8 = 5;

/// Trace, count and time Linux page pinning (the get_user_pages family).
#[derive(Debug, Parser)]
#[command(name = "pinwatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: top).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options shared by the commands that attach probes.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// Probe mechanism: fentry/fexit where possible, else kprobe/kretprobe.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
    /// Do not attribute calls to their kernel call site (saves a short
    /// stack read on every outermost call).
    #[arg(long)]
    pub no_callers: bool,
    /// Time how long pinned pages stay pinned (costs a map update per
    /// pinned page and per release; hooks gup_put_folio).
    #[arg(long)]
    pub lifetimes: bool,
}

impl AttachArgs {
    /// The probe options these flags ask for.
    pub fn options(&self) -> AttachOptions {
        AttachOptions {
            mode: self.attach,
            callers: !self.no_callers,
            lifetimes: self.lifetimes,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live dashboard (the default command).
    Top {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Run without probes, from /proc/vmstat and per-process VmPin only
        /// (what pinwatch does by itself when the kernel refuses probes).
        #[arg(long)]
        reduced: bool,
        /// Time between refreshes (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Show only this process in the processes panel.
        #[arg(long, conflicts_with = "comm")]
        pid: Option<u32>,
        /// Show only processes whose comm contains this.
        #[arg(long)]
        comm: Option<String>,
    },
    /// Check the live kernel against the reference pinning model: run each
    /// scenario's real call path and compare, field by field, what the model
    /// predicts with what the probes and /proc/vmstat observe. Exit 0: all
    /// agree; 1: a disagreement; 4: a scenario could not run here.
    Validate {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Run only this scenario (see --list).
        #[arg(long)]
        scenario: Option<String>,
        /// Scratch block device or file for the O_DIRECT and file-mapping
        /// scenarios; its first 64 KiB are overwritten (default: /dev/ram0
        /// when it is a brd ramdisk).
        #[arg(long)]
        device: Option<PathBuf>,
        /// JSON report instead of the table.
        #[arg(long)]
        json: bool,
        /// List the scenarios and exit.
        #[arg(long)]
        list: bool,
    },
    /// List every GUP function pinwatch knows and how it attached (or why not).
    Probes {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve Prometheus / OpenMetrics metrics over HTTP at /metrics.
    Serve {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Run without probes, from /proc/vmstat and per-process VmPin only
        /// (what pinwatch does by itself when the kernel refuses probes).
        #[arg(long)]
        reduced: bool,
        /// Address to listen on (loopback unless you name another).
        #[arg(long, default_value = "127.0.0.1:9435")]
        listen: std::net::SocketAddr,
        /// Turn on the kernel's BPF run-time statistics while serving, to
        /// export the probes' own cost.
        #[arg(long)]
        bpf_stats: bool,
    },
    /// Record counters to a file while CMD runs (only its process tree
    /// counts) or for a duration (the whole host).
    Record {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Run without probes, from /proc/vmstat and per-process VmPin only
        /// (what pinwatch does by itself when the kernel refuses probes).
        #[arg(long)]
        reduced: bool,
        /// Output file (written atomically).
        #[arg(short, long, default_value = "pinwatch-record.json")]
        output: PathBuf,
        /// Stop after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Sampling interval.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::commands::record::RecordFormat::Json)]
        format: crate::commands::record::RecordFormat,
        /// Command to run and follow (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Compare two recordings: exit 1 on a regression, 0 otherwise, 2 on bad input.
    Diff {
        /// The baseline recording.
        base: PathBuf,
        /// The recording to judge.
        new: PathBuf,
        /// Relative change that counts (also must exceed the intervals' noise).
        #[arg(long, default_value = "5%", value_parser = crate::export::diff::parse_threshold)]
        threshold: f64,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One line per GUP call as it happens (like bcc's trace): time, pid,
    /// comm, variant, start, nr_pages, flags, result, fast/slow pages,
    /// latency and the calling kernel function.
    Trace {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Only this process (filtered in the kernel).
        #[arg(long)]
        pid: Option<u32>,
        /// Only threads whose comm contains this.
        #[arg(long)]
        comm: Option<String>,
        /// Only this function (e.g. pin_user_pages_fast, unpin_user_pages).
        #[arg(long)]
        variant: Option<String>,
        /// Stop after this long (e.g. 10s).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// One JSON object per call instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Periodic per-variant summaries, like vmstat.
    Stat {
        /// Attach options.
        #[command(flatten)]
        attach: AttachArgs,
        /// Run without probes, from /proc/vmstat and per-process VmPin only
        /// (what pinwatch does by itself when the kernel refuses probes).
        #[arg(long)]
        reduced: bool,
        /// Time between summaries (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Stop after this many summaries (default: until Ctrl-C).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drive one kernel GUP path with known counts and report what was done.
    Workload {
        /// Which path.
        #[arg(value_enum)]
        name: WorkloadKind,
        /// Number of system calls.
        #[arg(long, default_value_t = 100)]
        calls: u64,
        /// Buffer size in pages.
        #[arg(long, default_value_t = 16)]
        pages: u64,
        /// Byte offset of the buffer from a page boundary.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Drop the buffer's pages before every call (forces fast-path fallback).
        #[arg(long)]
        cold: bool,
        /// File or block device for odirect-read/odirect-write.
        #[arg(long)]
        file: Option<PathBuf>,
        /// JSON report instead of text.
        #[arg(long)]
        json: bool,
        /// After setup print {"ready":PID} and wait for a line on stdin (for test harnesses).
        #[arg(long)]
        wait_stdin: bool,
        /// Threads calling at once (stalled-readv only).
        #[arg(long, default_value_t = 1)]
        threads: u64,
    },
}

impl Command {
    /// The long-running commands, which SIGINT, SIGTERM and SIGHUP end
    /// cleanly (probes detached, output finished) from the moment the
    /// command line is parsed. The others keep the default: a signal ends
    /// them at once.
    pub fn ends_on_stop_signals(&self) -> bool {
        match self {
            Command::Top { .. }
            | Command::Stat { .. }
            | Command::Trace { .. }
            | Command::Serve { .. }
            | Command::Record { .. } => true,
            Command::Validate { .. }
            | Command::Probes { .. }
            | Command::Diff { .. }
            | Command::Workload { .. } => false,
        }
    }
}

/// Bad input detected after argument parsing (exit code [`EXIT_USAGE`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses a duration such as `30s` or `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 30s, 5m)"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

/// Parses an interval such as `1s`, `250ms`, `2m`; must be at least 10ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 1s, 500ms, 2m)"))?;
    if d < Duration::from_millis(10) {
        return Err(format!("interval {s} is below the 10ms minimum"));
    }
    Ok(d)
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // Held (blocked) until the command is known, so a stop signal that
    // comes during start-up is never lost; see `signals`.
    crate::signals::hold();
    // Like other Unix tools, end quietly when a reader of our output goes
    // away (`pinwatch stat | head`) instead of panicking on EPIPE. The
    // kernel detaches the probes with the process; a recording is written
    // before anything is printed about it.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Milliseconds: `RUST_LOG=info` is how start-up and stop are timed.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: print as clap does, exit 0.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("pinwatch: error: {}", clap_one_line(&err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let command = cli.command.unwrap_or(Command::Top {
        attach: AttachArgs {
            attach: AttachMode::Auto,
            no_callers: false,
            lifetimes: false,
        },
        reduced: false,
        interval: Duration::from_secs(1),
        pid: None,
        comm: None,
    });
    if command.ends_on_stop_signals() {
        // Before anything slow (kernel discovery, attaching): from here a
        // stop signal is counted, and attach or the command's loop ends on
        // it.
        if let Err(err) = crate::signals::install() {
            eprintln!("pinwatch: error: {}", one_line(&err));
            return ExitCode::FAILURE;
        }
    } else {
        crate::signals::release();
    }
    match run(command) {
        Ok(code) => code,
        Err(err) if matches!(err.downcast_ref(), Some(AttachError::Stopped)) => {
            // Asked to stop while attaching: what was attached is detached
            // (dropped) by now, and stopping is what the user wanted.
            eprintln!("pinwatch: stopped during start-up");
            ExitCode::SUCCESS
        }
        Err(err) => {
            let code = if let Some(AttachError::Privileges(_)) = err.downcast_ref::<AttachError>() {
                EXIT_PRIVILEGES
            } else if err.downcast_ref::<AttachError>().is_some() {
                EXIT_CANNOT_TRACE
            } else if err.downcast_ref::<UsageError>().is_some()
                || matches!(
                    err.downcast_ref::<WorkloadError>(),
                    Some(WorkloadError::Usage(_))
                )
            {
                EXIT_USAGE
            } else {
                1
            };
            eprintln!("pinwatch: error: {}", one_line(&err));
            ExitCode::from(code)
        }
    }
}

/// clap's multi-line usage error as one line: the error, its tip if it
/// has one, and where to look.
fn clap_one_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ");
    let tip = lines
        .find_map(|l| l.strip_prefix("tip: "))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    format!("{first}{tip}; see pinwatch --help")
}

/// An error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Top {
            attach,
            reduced,
            interval,
            pid,
            comm,
        } => {
            if let Some(pid) = pid
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                return Err(UsageError(format!("no process with pid {pid}")).into());
            }
            let filter = match (pid, comm) {
                (Some(pid), _) => Some(crate::tui::app::Filter::Pid(pid)),
                (None, Some(comm)) => Some(crate::tui::app::Filter::Comm(comm)),
                (None, None) => None,
            };
            crate::tui::run(crate::tui::TopOptions {
                attach: attach.options(),
                interval,
                filter,
                reduced,
            })
        }
        Command::Serve {
            attach,
            reduced,
            listen,
            bpf_stats,
        } => crate::export::serve::run(crate::export::serve::ServeOptions {
            attach: attach.options(),
            listen,
            bpf_stats,
            reduced,
        }),
        Command::Record {
            attach,
            reduced,
            output,
            duration,
            interval,
            format,
            command,
        } => crate::commands::record::run(crate::commands::record::RecordOptions {
            attach: attach.options(),
            output,
            duration,
            interval,
            format,
            command,
            reduced,
        }),
        Command::Diff {
            base,
            new,
            threshold,
            json,
        } => crate::commands::diff::run(&base, &new, threshold, json),
        Command::Probes { attach, json } => commands::probes::run(attach.options(), json),
        Command::Validate {
            attach,
            scenario,
            device,
            json,
            list,
        } => commands::validate::run(commands::validate::ValidateOptions {
            attach: attach.options(),
            scenario,
            device,
            json,
            list,
        }),
        Command::Trace {
            attach,
            pid,
            comm,
            variant,
            duration,
            json,
        } => commands::trace::run(commands::trace::TraceOptions {
            attach: attach.options(),
            pid,
            comm,
            variant,
            duration,
            json,
        }),
        Command::Stat {
            attach,
            reduced,
            interval,
            count,
            json,
        } => commands::stat::run(attach.options(), reduced, interval, count, json),
        Command::Workload {
            name,
            calls,
            pages,
            offset,
            cold,
            file,
            json,
            wait_stdin,
            threads,
        } => commands::workload::run(
            crate::workload::WorkloadOptions {
                kind: name,
                calls,
                pages,
                offset,
                cold,
                file,
                wait_stdin,
                threads,
            },
            json,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
        assert!(Cli::try_parse_from(["pinwatch", "stat", "--interval", "x"]).is_err());
        assert!(Cli::try_parse_from(["pinwatch", "workload", "nope"]).is_err());
        assert!(Cli::try_parse_from(["pinwatch", "probes", "--attach", "uprobe"]).is_err());
    }
}
