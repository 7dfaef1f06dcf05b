//! `xtask bench-guest`: the benchmark's driver inside the VM.
//!
//! Each repetition starts every tracer in turn (the order rotates from one
//! repetition to the next, so drift in the emulator spreads over all of
//! them), waits for its first report, runs every workload once with the
//! kernel's BPF statistics off (timing pass), then again with them on
//! (statistics pass), and stops it. The untraced runs interleave with the
//! traced ones, so each ratio compares runs minutes apart at most.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{
    results::{BenchRun, InKernel, Timing, TracerKind, TracerRun, WorkloadSpec},
    scripts::{self, INTERVAL_MARKER, Probe},
    tools::{self, Tracer},
};

/// What the host asks of the guest.
#[derive(Clone, Debug, clap::Args)]
pub struct GuestArgs {
    /// Repetitions of every (tracer, workload) pair.
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// Wall time an untraced timing pass of each workload should take.
    #[arg(long, default_value_t = 400)]
    pub target_ms: u64,
    /// Scratch block device for the O_DIRECT workloads.
    #[arg(long, default_value = "/dev/ram0")]
    pub device: String,
    /// Also measure this other pinwatch build (a path inside the VM).
    #[arg(long, hide = true)]
    pub baseline_binary: Option<String>,
}

/// Printed before the JSON of the whole run.
pub const RESULT_MARKER: &str = "PINWATCH_BENCH_RESULT=";

const PINWATCH: &str = "/bin/pinwatch";
const BPFTRACE: &str = "/bin/bpftrace";
const FUNCLATENCY: &str = "/bin/funclatency";
const GUP_SCRIPT: &str = "/tmp/pinwatch-gup.bt";
const EMPTY_SCRIPT: &str = "/tmp/pinwatch-empty.bt";
/// Tracers get this long to attach and report (bpftrace compiles with LLVM
/// under an emulated CPU).
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// One tracer configuration of a repetition.
#[derive(Clone, Debug)]
struct Config {
    kind: TracerKind,
    /// funclatency's function (it times one); empty for the others.
    function: String,
}

impl Config {
    /// A tracer that needs no function of its own.
    fn plain(kind: TracerKind) -> Self {
        Self {
            kind,
            function: String::new(),
        }
    }

    /// Every configuration of a repetition, in their first order: untraced,
    /// pinwatch with and without callers, pinwatch on kprobe_multi links
    /// where the kernel has them, bpftrace, the empty pair, the baseline
    /// pinwatch when there is one, funclatency on each function.
    fn all(functions: &[String], baseline: bool, kprobe_multi: bool) -> Vec<Self> {
        let mut configs = vec![
            Self::plain(TracerKind::Untraced),
            Self::plain(TracerKind::Pinwatch),
            Self::plain(TracerKind::PinwatchNoCallers),
        ];
        if kprobe_multi {
            configs.push(Self::plain(TracerKind::PinwatchKprobeMulti));
        }
        configs.extend([
            Self::plain(TracerKind::Bpftrace),
            Self::plain(TracerKind::EmptyPair),
        ]);
        if baseline {
            configs.push(Self::plain(TracerKind::Baseline));
        }
        configs.extend(functions.iter().map(|f| Self {
            kind: TracerKind::Funclatency,
            function: f.clone(),
        }));
        configs
    }

    fn covers(&self, w: &WorkloadSpec) -> bool {
        self.kind != TracerKind::Funclatency || self.function == w.function
    }
}

#[derive(Deserialize)]
struct WorkloadReport {
    calls: u64,
    elapsed_ns: u64,
}

#[derive(Deserialize)]
struct ProbesReport {
    probes: Vec<ProbeStatus>,
}

#[derive(Deserialize)]
struct ProbeStatus {
    function: String,
    symbol: Option<String>,
    attached: Option<String>,
}

/// Runs the benchmark and prints the result line.
pub fn run(args: &GuestArgs) -> anyhow::Result<std::process::ExitCode> {
    tools::set_bpf_stats(false)?;
    let kernel = cmd_output(Command::new("uname").arg("-r"))?
        .trim()
        .to_string();
    let kernel_version = fs::read_to_string("/proc/version")?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let probes = pinwatch_probes()?;
    let pinwatch_attach = probes
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.function,
                if p.fentry { "fentry" } else { "kprobe" }
            )
        })
        .collect();
    fs::write(GUP_SCRIPT, scripts::gup_script(&probes))?;
    let mut workloads = workloads(&kernel, args)?;
    calibrate(&mut workloads, args)?;
    let mut functions: Vec<String> = workloads.iter().map(|w| w.function.clone()).collect();
    functions.sort();
    functions.dedup();
    fs::write(EMPTY_SCRIPT, scripts::empty_pair_script(&functions))?;
    let kprobe_multi_refused = kprobe_multi_refusal();
    let configs = Config::all(
        &functions,
        args.baseline_binary.is_some(),
        kprobe_multi_refused.is_none(),
    );

    let mut run = BenchRun {
        kernel,
        kernel_version,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        reps: args.reps,
        pinwatch_attach,
        workloads: workloads.clone(),
        timings: Vec::new(),
        in_kernel: Vec::new(),
        tracer_runs: Vec::new(),
        not_measured: kprobe_multi_refused
            .map(|why| {
                format!(
                    "{}, refused: {why}",
                    TracerKind::PinwatchKprobeMulti.label()
                )
            })
            .into_iter()
            .collect(),
    };
    for rep in 0..args.reps {
        let mut order = configs.clone();
        order.rotate_left(rep as usize % configs.len());
        for config in &order {
            eprintln!(
                "bench: rep {}/{} {} {}",
                rep + 1,
                args.reps,
                config.kind.label(),
                config.function
            );
            measure(rep, config, &workloads, args, &mut run)
                .with_context(|| format!("{} (rep {})", config.kind.label(), rep + 1))?;
        }
    }
    println!("{RESULT_MARKER}{}", serde_json::to_string(&run)?);
    Ok(std::process::ExitCode::SUCCESS)
}

fn cmd_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What pinwatch attaches here, and how: the bpftrace script probes the
/// same symbols with the same mechanism.
fn pinwatch_probes() -> anyhow::Result<Vec<Probe>> {
    let text = cmd_output(Command::new(PINWATCH).args(["probes", "--json"]))?;
    let report: ProbesReport = serde_json::from_str(&text).context("pinwatch probes --json")?;
    Ok(report
        .probes
        .into_iter()
        .filter_map(|p| {
            let mechanism = p.attached?;
            Some(Probe {
                function: p.function,
                symbol: p.symbol?,
                fentry: mechanism == "fentry",
            })
        })
        .collect())
}

/// Why pinwatch cannot attach with kprobe_multi links here (its own
/// one-line error), or None where it can: asked by attaching once.
fn kprobe_multi_refusal() -> Option<String> {
    let out = match Command::new(PINWATCH)
        .args(["probes", "--json", "--attach", "kprobe-multi"])
        .output()
    {
        Ok(out) => out,
        Err(e) => return Some(format!("running {PINWATCH}: {e}")),
    };
    if out.status.success() {
        return None;
    }
    // With --json the error is the report's `error`; else stderr says it.
    let from_json = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|report| report["error"].as_str().map(str::to_string));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let from_stderr = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    Some(
        from_json
            .or(from_stderr)
            .unwrap_or_else(|| format!("exited {} without a reason", out.status)),
    )
}

/// `(major, minor)` of a `uname -r` release.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// null_blk's device: with `irqmode=2` (the VM's init loads it so) every
/// request completes in a timer interrupt, as on real disks, so O_DIRECT's
/// pages are released in interrupt context; the ramdisk completes in the
/// submitting task.
const IRQ_DEVICE: &str = "/dev/nullb0";

/// The workloads: 1/16/64/256-page O_DIRECT reads, 1-page FUTEX_WAKE on a
/// shared futex, the 1-page ones again with two callers at once, and
/// 512-page O_DIRECT writes completed in interrupt context (the per-page
/// release path as real disks take it; two bios, so the block layer's
/// completion releases the pages).
fn workloads(kernel: &str, args: &GuestArgs) -> anyhow::Result<Vec<WorkloadSpec>> {
    let version = major_minor(kernel).with_context(|| format!("kernel release {kernel}"))?;
    // O_DIRECT pins since 6.3 (iov_iter_extract_pages); before, it takes
    // FOLL_GET references through get_user_pages_fast.
    let odirect_fn = if version >= (6, 3) {
        "pin_user_pages_fast"
    } else {
        "get_user_pages_fast"
    };
    if !std::path::Path::new(&args.device).exists() {
        bail!("{} is missing (brd.ko not loaded?)", args.device);
    }
    if !std::path::Path::new(IRQ_DEVICE).exists() {
        bail!("{IRQ_DEVICE} is missing (null_blk.ko not loaded?)");
    }
    let w = |name: &str, kind: &str, pages: u64, callers: u32, function: &str| WorkloadSpec {
        name: name.into(),
        kind: kind.into(),
        pages,
        callers,
        calls: 0,
        function: function.into(),
        file: None,
    };
    Ok(vec![
        w("futex-1p", "futex-wake", 1, 1, "get_user_pages_fast"),
        w("odirect-1p", "odirect-read", 1, 1, odirect_fn),
        w("odirect-16p", "odirect-read", 16, 1, odirect_fn),
        w("odirect-64p", "odirect-read", 64, 1, odirect_fn),
        w("odirect-256p", "odirect-read", 256, 1, odirect_fn),
        w("futex-1p-x2", "futex-wake", 1, 2, "get_user_pages_fast"),
        w("odirect-1p-x2", "odirect-read", 1, 2, odirect_fn),
        WorkloadSpec {
            file: Some(IRQ_DEVICE.into()),
            ..w("odirect-irq-512p", "odirect-write", 512, 1, odirect_fn)
        },
    ])
}

/// Sizes each workload's timing pass to about `target_ms` untraced.
fn calibrate(workloads: &mut [WorkloadSpec], args: &GuestArgs) -> anyhow::Result<()> {
    const PROBE_CALLS: u64 = 300;
    for w in workloads {
        let ns = run_workload(w, PROBE_CALLS, args)?;
        w.calls = ((args.target_ms as f64 * 1e6 / ns) as u64).clamp(500, 200_000);
        eprintln!(
            "bench: {} untraced {:.0} ns/call -> {} calls per pass",
            w.name, ns, w.calls
        );
    }
    Ok(())
}

/// Runs `calls` calls in each of the workload's callers, started together;
/// returns the mean wall-clock nanoseconds per call.
fn run_workload(w: &WorkloadSpec, calls: u64, args: &GuestArgs) -> anyhow::Result<f64> {
    let mut children = Vec::new();
    for _ in 0..w.callers {
        let mut cmd = Command::new(PINWATCH);
        cmd.args(["workload", &w.kind, "--json", "--wait-stdin"])
            .args([
                "--calls",
                &calls.to_string(),
                "--pages",
                &w.pages.to_string(),
            ]);
        if w.kind.starts_with("odirect") {
            cmd.args(["--file", w.file.as_deref().unwrap_or(&args.device)]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting pinwatch workload")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        if !ready.contains("ready") {
            let _ = child.kill();
            bail!("workload {} did not get ready: {ready:?}", w.name);
        }
        children.push((child, stdout));
    }
    // Every caller is set up; let them go together.
    for (child, _) in &mut children {
        child.stdin.take().expect("piped").write_all(b"go\n")?;
    }
    let mut total = 0.0;
    for (mut child, mut stdout) in children {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let status = child.wait()?;
        if !status.success() {
            bail!("workload {} failed ({status})", w.name);
        }
        let report: WorkloadReport =
            serde_json::from_str(&line).with_context(|| format!("workload report {line:?}"))?;
        total += report.elapsed_ns as f64 / report.calls as f64;
    }
    Ok(total / w.callers as f64)
}

fn start_tracer(config: &Config, args: &GuestArgs) -> anyhow::Result<Option<Tracer>> {
    let argv: Vec<String> = match config.kind {
        TracerKind::Untraced => return Ok(None),
        TracerKind::Pinwatch => [PINWATCH, "stat", "--json", "--interval", "1s"]
            .map(String::from)
            .to_vec(),
        TracerKind::Baseline => {
            let binary = args.baseline_binary.clone().unwrap_or_default();
            [binary.as_str(), "stat", "--json", "--interval", "1s"]
                .map(String::from)
                .to_vec()
        }
        TracerKind::PinwatchNoCallers => [
            PINWATCH,
            "stat",
            "--no-callers",
            "--json",
            "--interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        TracerKind::PinwatchKprobeMulti => [
            PINWATCH,
            "stat",
            "--attach",
            "kprobe-multi",
            "--json",
            "--interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        TracerKind::Bpftrace => vec![BPFTRACE.into(), GUP_SCRIPT.into()],
        TracerKind::EmptyPair => vec![BPFTRACE.into(), EMPTY_SCRIPT.into()],
        TracerKind::Funclatency => vec![
            FUNCLATENCY.into(),
            "-i".into(),
            "1".into(),
            config.function.clone(),
        ],
    };
    let kind = config.kind.clone();
    // funclatency says "Tracing ..." once attached, then reports each second.
    let mut attached = false;
    let is_data = move |line: &str| match kind {
        TracerKind::Pinwatch
        | TracerKind::PinwatchNoCallers
        | TracerKind::PinwatchKprobeMulti
        | TracerKind::Baseline => line.starts_with('{'),
        TracerKind::Funclatency => {
            let data = attached;
            attached |= line.starts_with("Tracing");
            data
        }
        _ => line.contains(INTERVAL_MARKER),
    };
    Tracer::start(&argv, is_data, START_TIMEOUT).map(Some)
}

/// One tracer over every workload it covers: timing passes, then
/// statistics passes.
fn measure(
    rep: u32,
    config: &Config,
    workloads: &[WorkloadSpec],
    args: &GuestArgs,
    run: &mut BenchRun,
) -> anyhow::Result<()> {
    let mut tracer = start_tracer(config, args)?;
    let covered: Vec<&WorkloadSpec> = workloads.iter().filter(|w| config.covers(w)).collect();
    let cpu_before = match &tracer {
        Some(t) => tools::cpu_time(t.pid())?,
        None => Duration::ZERO,
    };
    let started = Instant::now();
    for w in &covered {
        let ns_per_call = run_workload(w, w.calls, args)?;
        run.timings.push(Timing {
            rep,
            tracer: config.kind.clone(),
            workload: w.name.clone(),
            ns_per_call,
        });
    }
    let wall = started.elapsed();
    let Some(mut tracer) = tracer.take() else {
        return Ok(());
    };
    tracer.check_alive()?;
    let cpu = tools::cpu_time(tracer.pid())?.saturating_sub(cpu_before);
    tools::set_bpf_stats(true)?;
    let stats = statistics_passes(rep, config, &covered, tracer.pid(), args, run);
    tools::set_bpf_stats(false)?;
    stats?;
    tracer.check_alive()?;
    run.tracer_runs.push(TracerRun {
        rep,
        tracer: config.kind.clone(),
        function: config.function.clone(),
        first_data_ms: tracer.first_data.as_secs_f64() * 1e3,
        cpu_share: cpu.as_secs_f64() / wall.as_secs_f64(),
        peak_rss_kib: tools::peak_rss_kib(tracer.pid())?,
    });
    tracer.stop().map(drop)
}

fn statistics_passes(
    rep: u32,
    config: &Config,
    covered: &[&WorkloadSpec],
    pid: u32,
    args: &GuestArgs,
    run: &mut BenchRun,
) -> anyhow::Result<()> {
    for w in covered {
        let calls = (w.calls / 4).max(200);
        let before = tools::prog_stats(pid)?;
        run_workload(w, calls, args)?;
        let after = tools::prog_stats(pid)?;
        let calls = calls * u64::from(w.callers);
        let run_count = after.run_count.saturating_sub(before.run_count);
        // Every tracer here probes the call's entry and return: fewer runs
        // mean it did not see the calls, and its cost would look too low.
        if run_count < 2 * calls {
            bail!(
                "{} ran its programs {run_count} times over {calls} calls of {}: it is not tracing them",
                config.kind.label(),
                w.name
            );
        }
        run.in_kernel.push(InKernel {
            rep,
            tracer: config.kind.clone(),
            workload: w.name.clone(),
            calls,
            run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
            run_count,
            programs: after.programs,
        });
    }
    Ok(())
}
