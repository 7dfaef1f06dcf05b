//! `pinwatch workload`: run a workload and print its report.

use std::process::ExitCode;

use crate::workload::{self, WorkloadOptions};

/// Runs the workload and prints what it did.
pub fn run(opts: WorkloadOptions, json: bool) -> anyhow::Result<ExitCode> {
    let report = workload::run(&opts)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} calls of {} bytes, buffer offset {} (spans {} pages per call){}{}, {:.3} ms",
            clap::ValueEnum::to_possible_value(&report.workload)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            report.calls,
            report.bytes_per_call,
            report.offset,
            report.pages_per_call,
            if report.cold { ", cold" } else { ", warm" },
            if report.zero_page {
                ", zero-page backed"
            } else {
                ""
            },
            report.elapsed_ns as f64 / 1e6,
        );
    }
    Ok(ExitCode::SUCCESS)
}
