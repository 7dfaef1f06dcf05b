//! `cargo xtask bench --scale`: how pinwatch's start, stop, memory and
//! per-sample cost grow with the host (vCPUs) and the work (entries in
//! its per-process table).
//!
//! One VM boot per vCPU count, on one kernel; the guest ([`guest`]) prints
//! one JSON line ([`ScaleRun`]) that the host turns into tables and an SVG
//! plot ([`report`]), written to the output directory and, with
//! `--into-benchmarks`, into BENCHMARKS.md (between markers) and
//! `docs/scale.svg`. More vCPUs than host cores run on one TCG thread
//! (see `vm::start_qemu`): so a 64-vCPU guest is slow, and only the
//! shape of the curves (how a figure grows) means anything.

pub mod guest;
mod report;

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{vm, workspace};

/// Options of `cargo xtask bench --scale`.
#[derive(Clone, Debug, clap::Args)]
pub struct ScaleArgs {
    /// vCPU counts, one VM boot each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [2, 16, 64], requires = "scale")]
    pub cpus: Vec<u32>,
    /// Write the tables into BENCHMARKS.md (between its scale markers)
    /// and the plot to docs/scale.svg.
    #[arg(long, requires = "scale")]
    pub into_benchmarks: bool,
    /// Per-process table fill levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000, 10_000, 100_000], requires = "scale")]
    pub entries: Vec<u32>,
    /// Seconds of samples over which each fill level's cost is read.
    #[arg(long, default_value_t = 10, requires = "scale")]
    pub window_s: u64,
    /// Starts and stops of the default agent per boot.
    #[arg(long, default_value_t = 3, requires = "scale")]
    pub starts: u32,
}

/// The kernel the scale benchmark boots by default.
pub const SCALE_KERNEL: &str = "debian-6.12";

/// One boot's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleRun {
    /// The guest kernel's release.
    pub kernel: String,
    /// Online vCPUs.
    pub cpus: u32,
    /// Each start and stop of the default agent.
    pub starts: Vec<StartStop>,
    /// `--max-procs` of the sample-cost agent.
    pub max_procs: u32,
    /// The sample-cost agent at each fill level, from empty up.
    pub samples: Vec<SampleCost>,
}

/// One start and stop of `pinwatch stat` with default settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartStop {
    /// From spawn to its "counting" line (probes attached, first
    /// snapshot taken).
    pub counting_ms: f64,
    /// From spawn to its first interval's data (one interval later).
    pub first_data_ms: f64,
    /// From SIGINT to the process gone.
    pub stop_ms: f64,
    /// From SIGINT to the kernel holding no more programs than before the
    /// start (the links detached and the programs freed).
    pub detached_ms: f64,
    /// `memlock` summed over its maps.
    pub map_memory_bytes: u64,
    /// VmRSS two samples after its first data.
    pub idle_rss_kib: u64,
}

/// The sample-cost agent at one fill level of its per-process table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleCost {
    /// Short-lived children forked so far (one call each).
    pub spawned: u32,
    /// Entries the per-process table held (counted from outside).
    pub entries: u64,
    /// How long forking this level's children took.
    pub fill_s: f64,
    /// The measuring window.
    pub window_s: f64,
    /// Agent CPU over the window, in percent of one CPU (one sample a
    /// second).
    pub cpu_percent: f64,
    /// Agent VmRSS at the end of the window.
    pub rss_kib: u64,
    /// `memlock` summed over the agent's maps.
    pub map_memory_bytes: u64,
}

/// Boots one VM per vCPU count on `kernel` and writes the outputs.
pub fn run(args: &ScaleArgs, kernel: &str, out: &Path, command: &str) -> anyhow::Result<()> {
    let binaries = vec![
        vm::build_pinwatch()?,
        std::env::current_exe().context("locating the xtask binary")?,
    ];
    let entries: Vec<String> = args.entries.iter().map(u32::to_string).collect();
    let guest_command = format!(
        "/bin/xtask scale-guest --entries {} --window-s {} --starts {}",
        entries.join(","),
        args.window_s,
        args.starts
    );
    let mut runs = Vec::new();
    for &cpus in &args.cpus {
        println!("== scale: {cpus} vCPUs on {kernel}");
        let outcome = vm::run_with(
            kernel,
            &binaries,
            &guest_command,
            Duration::from_secs(4 * 3600),
            &vm::VmOptions {
                cpus,
                // Room for the children's page tables and 64 vCPUs'
                // per-CPU areas.
                memory_mb: 2 * vm::DEFAULT_MEMORY_MB,
                ..vm::VmOptions::default()
            },
        )?;
        let line = outcome
            .lines
            .iter()
            .find_map(|l| l.strip_prefix(guest::RESULT_MARKER))
            .with_context(|| {
                format!(
                    "the scale run with {cpus} vCPUs printed no result (exit status {})",
                    outcome.status
                )
            })?;
        runs.push(serde_json::from_str::<ScaleRun>(line).context("parsing the guest's result")?);
    }
    if runs.is_empty() {
        bail!("no vCPU count was given");
    }
    write_outputs(args, out, command, &runs)
}

/// scale.json, scale.md and scale.svg in `out`; with `--into-benchmarks`
/// also BENCHMARKS.md's scale section and docs/scale.svg.
fn write_outputs(
    args: &ScaleArgs,
    out: &Path,
    command: &str,
    runs: &[ScaleRun],
) -> anyhow::Result<()> {
    fs::create_dir_all(out)?;
    fs::write(out.join("scale.json"), serde_json::to_string_pretty(runs)?)?;
    let svg = report::plot(runs)?;
    fs::write(out.join("scale.svg"), &svg)?;
    let md = report::markdown(command, runs, "scale.svg");
    fs::write(out.join("scale.md"), &md)?;
    println!("{md}");
    println!("wrote {}/scale.{{md,json,svg}}", out.display());
    if args.into_benchmarks {
        let root = workspace::root();
        fs::write(root.join("docs/scale.svg"), &svg)?;
        let path = root.join("BENCHMARKS.md");
        let text = fs::read_to_string(&path)?;
        let section = report::markdown(command, runs, "docs/scale.svg");
        fs::write(&path, report::replace_section(&text, &section))?;
        println!("updated BENCHMARKS.md and docs/scale.svg");
    }
    Ok(())
}
