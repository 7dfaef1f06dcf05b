//! `pinwatch top`: the live dashboard's command-line options and their
//! checks; the dashboard itself is [`crate::tui`].

use std::{process::ExitCode, time::Duration};

use clap::{Args as _, FromArgMatches as _};

use super::args::{SourceArgs, parse_interval};
use crate::{
    error::UsageError,
    tui::{self, TopOptions, app::Filter},
};

/// Options of `pinwatch top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Where the figures come from: the probes, or reduced mode.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Time between refreshes (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Show only this process in the processes panel.
    #[arg(long, conflicts_with = "comm")]
    pub pid: Option<u32>,
    /// Show only processes whose comm contains this.
    #[arg(long)]
    pub comm: Option<String>,
}

impl Default for TopArgs {
    /// `pinwatch top` without flags (what plain `pinwatch` runs): clap's
    /// own defaults, so each is written once, in its `#[arg]`.
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("top"));
        let matches = command
            .try_get_matches_from(["top"])
            .expect("top parses without flags");
        Self::from_arg_matches(&matches).expect("top's defaults are its fields")
    }
}

impl TopArgs {
    /// The dashboard's options; a `--pid` that names no process is a usage
    /// error.
    pub fn options(self) -> Result<TopOptions, UsageError> {
        if let Some(pid) = self.pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            return Err(UsageError(format!("no process with pid {pid}")));
        }
        let filter = match (self.pid, self.comm) {
            (Some(pid), _) => Some(Filter::Pid(pid)),
            (None, Some(comm)) => Some(Filter::Comm(comm)),
            (None, None) => None,
        };
        Ok(TopOptions {
            attach: self.source.options(),
            interval: self.interval,
            filter,
            reduced: self.source.reduced,
        })
    }
}

/// Runs the dashboard.
pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    tui::run(args.options()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_top_without_flags() {
        let top = TopArgs::default();
        assert_eq!(
            top.source.options(),
            crate::probes::AttachOptions::new(crate::probes::AttachMode::Auto)
        );
        assert!(!top.source.reduced);
        assert_eq!(top.interval, Duration::from_secs(1));
        assert_eq!((top.pid, top.comm), (None, None));
    }
}
