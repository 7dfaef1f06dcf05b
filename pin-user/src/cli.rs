//! The command line: the subcommands (each one's options are its own
//! `Args` struct in [`crate::commands`]), dispatch, and turning errors into
//! one line on stderr plus the exit code [`crate::error`] names for them.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::{
    commands::{
        self, diff::DiffArgs, generate::GenerateArgs, probes::ProbesArgs, record::RecordArgs,
        serve::ServeArgs, stat::StatArgs, top::TopArgs, trace::TraceArgs, validate::ValidateArgs,
        workload::WorkloadArgs,
    },
    error::{EXIT_USAGE, UsageError},
    probes::AttachError,
};

/// Trace, count and time Linux page pinning (the get_user_pages family).
#[derive(Debug, Parser)]
#[command(
    name = "pinwatch",
    version = crate::build_info::VERSION,
    long_version = crate::build_info::LONG_VERSION,
    about,
    long_about = None
)]
pub struct Cli {
    /// What to do (default: top).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands, each with its options next to the command it
/// configures (in [`crate::commands`]).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live dashboard (the default command).
    Top(TopArgs),
    /// Check the live kernel against the reference pinning model: run each
    /// scenario's real call path and compare, field by field, what the model
    /// predicts with what the probes and /proc/vmstat observe. Exit 0: all
    /// agree; 1: a disagreement; 4: a scenario could not run here.
    Validate(ValidateArgs),
    /// List every GUP function pinwatch knows and how it attached (or why not).
    Probes(ProbesArgs),
    /// Serve Prometheus / OpenMetrics metrics over HTTP at /metrics.
    Serve(ServeArgs),
    /// Record counters to a file while CMD runs (only its process tree
    /// counts) or for a duration (the whole host).
    Record(RecordArgs),
    /// Compare two recordings: exit 1 on a regression, 0 otherwise, 2 on bad input.
    Diff(DiffArgs),
    /// One line per GUP call as it happens (like bcc's trace): time, pid,
    /// comm, variant, start, nr_pages, flags, result, fast/slow pages,
    /// latency and the calling kernel function.
    Trace(TraceArgs),
    /// Periodic per-variant summaries, like vmstat.
    Stat(StatArgs),
    /// Drive one kernel GUP path with known counts and report what was done.
    Workload(WorkloadArgs),
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

impl Command {
    /// The long-running commands, which SIGINT, SIGTERM and SIGHUP end
    /// cleanly (probes detached, output finished) from the moment the
    /// command line is parsed. The others keep the default: a signal ends
    /// them at once.
    pub fn ends_on_stop_signals(&self) -> bool {
        match self {
            Command::Top(_)
            | Command::Stat(_)
            | Command::Trace(_)
            | Command::Serve(_)
            | Command::Record(_) => true,
            Command::Validate(_)
            | Command::Probes(_)
            | Command::Diff(_)
            | Command::Workload(_)
            | Command::Generate(_) => false,
        }
    }
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
            match parser_usage(&err) {
                Some(usage) => eprintln!("pinwatch: error: {usage}"),
                None => eprintln!("pinwatch: error: {}", clap_one_line(&err)),
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let command = cli
        .command
        .unwrap_or_else(|| Command::Top(TopArgs::default()));
    // Every command exits once it has stopped its probes: their detach
    // may finish in a child after it.
    crate::probes::exits_after_stop();
    if command.ends_on_stop_signals() {
        // The long-running commands: before their first allocation.
        crate::agent_memory::no_huge_pages();
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
            eprintln!("pinwatch: error: {}", one_line(&err));
            ExitCode::from(crate::error::exit_code(&err))
        }
    }
}

/// The usage error a value parser of ours gave for bad input (such as
/// `trace --variant`'s): said in its own words, as a check after parsing
/// would say it, rather than wrapped in clap's "invalid value" line.
fn parser_usage(err: &clap::Error) -> Option<&UsageError> {
    if err.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    std::error::Error::source(err)?.downcast_ref()
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

/// Runs the command the line asked for.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Top(args) => commands::top::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Record(args) => commands::record::run(args),
        Command::Diff(args) => commands::diff::run(args),
        Command::Probes(args) => commands::probes::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Trace(args) => commands::trace::run(args),
        Command::Stat(args) => commands::stat::run(args),
        Command::Workload(args) => commands::workload::run(args),
        Command::Generate(args) => commands::generate::run(args, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{
        args::parse_interval,
        generate::{completions, man_pages},
    };
    use std::time::Duration;

    #[test]
    fn every_visible_command_gets_a_man_page_and_every_shell_a_script() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(Cli::command(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "pinwatch.1",
            "pinwatch-serve.1",
            "pinwatch-top.1",
            "pinwatch-workload.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help")),
            "{names:?}"
        );
        let serve = std::fs::read_to_string(dir.path().join("pinwatch-serve.1")).unwrap();
        assert!(serve.contains("\\-\\-listen"), "{serve}");
        let scripts = completions(Cli::command(), dir.path()).unwrap();
        assert_eq!(scripts.len(), 3, "{scripts:?}");
        let bash = std::fs::read_to_string(dir.path().join("pinwatch.bash")).unwrap();
        assert!(bash.contains("serve"), "{bash}");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_variant_is_said_in_its_own_words() {
        let err = Cli::try_parse_from(["pinwatch", "trace", "--variant", "gup"]).unwrap_err();
        let usage = parser_usage(&err).expect("the variant parser's own error");
        assert!(usage.0.starts_with("unknown variant \"gup\"; one of: "));
        let err = Cli::try_parse_from(["pinwatch", "stat", "--interval", "x"]).unwrap_err();
        assert!(parser_usage(&err).is_none());
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
