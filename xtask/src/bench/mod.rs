//! `cargo xtask bench`: what pinwatch costs on the GUP hot path, next to
//! the tools users would pick instead (a bpftrace script gathering the same
//! figures, libbpf-tools `funclatency`) and to an empty fentry+fexit pair.
//!
//! The host builds a release pinwatch, boots each kernel once with
//! pinwatch, bpftrace, funclatency and this very binary in the image, and
//! runs `xtask bench-guest` there ([`guest`]); the guest prints one JSON
//! line of raw samples ([`results`]) that the host turns into tables
//! ([`report`]).

mod bpf_objects;
pub mod guest;
mod report;
mod results;
pub mod scale;
mod scripts;
mod tools;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{initramfs, install, vm, workspace};

/// The kernels the benchmark runs on by default (the stock cloud kernels
/// users run most).
const BENCH_KERNELS: &[&str] = &["debian-6.1", "debian-6.12"];
/// bpftrace brings LLVM and clang libraries (~200 MiB) into the initramfs.
const GUEST_MEMORY_MB: u32 = 4096;

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Kernels to run on (repeat the flag); default: every matrix kernel.
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
    /// Where bench.json and bench.md go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Another pinwatch build to measure side by side (e.g. the previous
    /// release), shown as "baseline pinwatch".
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Passed to the guest.
    #[command(flatten)]
    pub guest: guest::GuestArgs,
    /// Instead of the overhead benchmark: start, stop, memory and sample
    /// cost against vCPUs and table entries, one boot per vCPU count
    /// (writes target/bench/scale.{md,json,svg}).
    #[arg(long)]
    pub scale: bool,
    /// Options of `--scale`.
    #[command(flatten)]
    pub scale_args: scale::ScaleArgs,
}

/// Builds pinwatch with the release profile (what users run).
fn build_release_pinwatch() -> anyhow::Result<PathBuf> {
    crate::vm::build_pinwatch()
}

/// The command line that reproduces a run.
fn command_line(args: &BenchArgs, kernels: &[String]) -> String {
    let mut s = String::from("cargo xtask bench");
    for k in kernels {
        s.push_str(&format!(" --kernel {k}"));
    }
    s.push_str(&format!(
        " --reps {} --target-ms {}",
        args.guest.reps, args.guest.target_ms
    ));
    if let Some(baseline) = &args.baseline {
        s.push_str(&format!(" --baseline {}", baseline.display()));
    }
    s
}

/// Runs the benchmark on every kernel and writes the tables.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    install::ensure_vm_tools()?;
    if args.scale {
        return run_scale(args);
    }
    install::ensure_bench_tools()?;
    let kernels: Vec<String> = if args.kernels.is_empty() {
        BENCH_KERNELS.iter().map(|k| k.to_string()).collect()
    } else {
        args.kernels.clone()
    };
    let mut binaries = vec![
        build_release_pinwatch()?,
        std::env::current_exe().context("locating the xtask binary")?,
        initramfs::which("bpftrace")?,
        initramfs::which("funclatency")?,
    ];
    let mut command = format!(
        "mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; /bin/xtask bench-guest --reps {} --target-ms {} --device {}",
        args.guest.reps, args.guest.target_ms, args.guest.device
    );
    if let Some(baseline) = &args.baseline {
        // The image keeps file names: give the other build its own.
        let staged = workspace::root().join("target/vm/pinwatch-baseline");
        fs::create_dir_all(staged.parent().expect("has a parent"))?;
        fs::copy(baseline, &staged)
            .with_context(|| format!("copying the baseline {}", baseline.display()))?;
        binaries.push(staged);
        command.push_str(" --baseline-binary /bin/pinwatch-baseline");
    }
    let mut runs = Vec::new();
    for kernel in &kernels {
        println!("== bench on {kernel}");
        let outcome = vm::run_with(
            kernel,
            &binaries,
            &command,
            Duration::from_secs(3 * 3600),
            &vm::VmOptions {
                memory_mb: GUEST_MEMORY_MB,
                ..vm::VmOptions::default()
            },
        )?;
        let result = outcome
            .lines
            .iter()
            .find_map(|l| l.strip_prefix(guest::RESULT_MARKER))
            .with_context(|| {
                format!(
                    "the benchmark on {kernel} printed no result (exit status {})",
                    outcome.status
                )
            })?;
        let run: results::BenchRun =
            serde_json::from_str(result).context("parsing the guest's result")?;
        runs.push(run);
    }
    write_outputs(&args.out, &command_line(args, &kernels), &runs)?;
    Ok(ExitCode::SUCCESS)
}

/// `--scale`: one kernel (6.12 unless one `--kernel` is given).
fn run_scale(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let kernel = match args.kernels.as_slice() {
        [] => scale::SCALE_KERNEL.to_string(),
        [one] => one.clone(),
        _ => bail!("--scale runs on one kernel; give at most one --kernel"),
    };
    if args.baseline.is_some() {
        bail!("--scale measures one build; --baseline is for the overhead benchmark");
    }
    let s = &args.scale_args;
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let command = format!(
        "cargo xtask bench --scale --kernel {kernel} --cpus {} --entries {} --window-s {} --starts {}",
        list(&s.cpus),
        list(&s.entries),
        s.window_s,
        s.starts
    );
    scale::run(s, &kernel, &output_dir(&args.out), &command)?;
    Ok(ExitCode::SUCCESS)
}

/// `out`, relative to the workspace unless absolute.
fn output_dir(out: &Path) -> PathBuf {
    if out.is_absolute() {
        out.to_path_buf()
    } else {
        workspace::root().join(out)
    }
}

fn write_outputs(out: &Path, command: &str, runs: &[results::BenchRun]) -> anyhow::Result<()> {
    let out = output_dir(out);
    fs::create_dir_all(&out)?;
    fs::write(out.join("bench.json"), serde_json::to_string_pretty(runs)?)?;
    let mut md = format!(
        "## pinwatch overhead benchmark\n\nProduced by `{command}` (qemu TCG, 2 vCPUs; only ratios taken in one run mean anything).\n\n"
    );
    for run in runs {
        md.push_str(&report::markdown(run));
        md.push('\n');
    }
    fs::write(out.join("bench.md"), &md)?;
    println!("{md}");
    println!("wrote {}/bench.{{md,json}}", out.display());
    if runs.is_empty() {
        bail!("no kernel was benchmarked");
    }
    Ok(())
}
