//! `pinwatch diff BASE NEW`: compare two recordings; exit 1 on a
//! regression, 0 otherwise, 2 on bad input, so a CI gate can call it.

use std::{path::Path, process::ExitCode};

use crate::{
    cli::UsageError,
    export::{
        diff::{diff, render_text},
        record::Record,
    },
};

/// Runs the comparison.
pub fn run(base: &Path, new: &Path, threshold: f64, json: bool) -> anyhow::Result<ExitCode> {
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
