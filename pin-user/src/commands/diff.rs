//! `pinwatch diff BASE NEW`: compare two recordings; exit 1 on a
//! regression, 0 otherwise, 2 on bad input, so a CI gate can call it.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    error::UsageError,
    export::{
        diff::{diff, parse_threshold, render_text},
        record::Record,
    },
};

/// Options of `pinwatch diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The baseline recording.
    pub base: PathBuf,
    /// The recording to judge.
    pub new: PathBuf,
    /// Relative change that counts (also must exceed the intervals' noise).
    #[arg(long, default_value = "5%", value_parser = parse_threshold)]
    pub threshold: f64,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the comparison.
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let DiffArgs {
        base,
        new,
        threshold,
        json,
    } = args;
    let (base, new) = (base.as_path(), new.as_path());
    let read = |p: &Path| Record::read(p).map_err(|e| UsageError(e.to_string()));
    for (path, record) in [(base, read(base)?), (new, read(new)?)] {
        if record.meta.reduced.is_some() {
            return Err(UsageError(format!(
                "{} was recorded in reduced mode (no probes): it has no per-variant figures to \
                 compare; record on a kernel pinwatch can trace",
                path.display()
            ))
            .into());
        }
    }
    let (base, new) = (read(base)?, read(new)?);
    let report = diff(&base, &new, threshold);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(if report.regressions > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
