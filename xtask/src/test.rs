//! `cargo xtask test`: host unit tests, then the integration suite inside
//! the VM on every kernel and attach mechanism of the matrix (its entries
//! are `matrix`'s). A matrix entry that cannot boot is a failure, never a
//! skip.

use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

mod summary;

use summary::{Summary, fault_table};

use crate::{
    cmd, dashboard, initramfs, install,
    matrix::{AGENT_ONLY, Binary, Entry, MATRIX, only_parts},
    vm, workspace,
};

/// Builds the VM suite and copies its executable to where the VM image
/// takes it from (`target/vm/pinwatch-vm-tests`).
fn vm_test_binary() -> anyhow::Result<PathBuf> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-p",
            "pin-user",
            "--test",
            "vm",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace::root())
        .stderr(Stdio::inherit())
        .output()
        .context("building the VM test suite")?;
    if !out.status.success() {
        bail!("building the VM test suite failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "vm"
            && let Some(exe) = msg["executable"].as_str()
        {
            let dest = workspace::root().join("target/vm/pinwatch-vm-tests");
            std::fs::create_dir_all(dest.parent().expect("has parent"))?;
            // Without its debug info (103 MB of its 128):
            // every boot carries it and the guest unpacks it under
            // emulation, 18.6 s to a 6.12 guest's first command with it,
            // 10.7 s without. Panics still name their file and line.
            cmd::run(
                Command::new("strip")
                    .args(["--strip-debug", "-o"])
                    .arg(&dest)
                    .arg(exe),
            )
            .context("stripping the VM suite's debug info (strip, from binutils)")?;
            return Ok(dest);
        }
    }
    bail!("cargo did not report the vm test executable")
}

/// Runs everything; the last line is "N passed, M failed".
pub fn run(only: Option<&str>, tests: Option<&str>, lanes: usize) -> anyhow::Result<ExitCode> {
    install::ensure_build_tools()?;
    install::ensure_test_tools()?;
    let run_started = Instant::now();
    let mut summary = Summary::default();
    let selected: Vec<(&Entry, String)> = MATRIX
        .iter()
        .filter_map(|e| Some((e, e.selected(only, tests)?)))
        .collect();
    // A filter that names no entry would otherwise end in "0 failed" with
    // no VM booted: green for nothing (an entry that runs a subset is
    // selected only for that subset's tests).
    if selected.is_empty() && (only.is_some() || tests.is_some()) {
        bail!(
            "--only {} --tests {} selects no entry of the VM matrix (see xtask/src/matrix.rs; \
             entries with a subset run only those tests)",
            only.unwrap_or("(any)"),
            tests.unwrap_or("(all)")
        );
    }
    let host_passed = host_tests(&mut summary)? & dashboard_is_generated(&mut summary);
    let images = Images::build(&mut summary, selected.iter().map(|(e, _)| e.binary))?;
    if lanes > 1 {
        // Fetched and unpacked one at a time first: lanes booting from a
        // cold cache would unpack into the same directories at once.
        crate::qemu::ensure()?;
        let mut kernels: Vec<&str> = selected.iter().map(|(e, _)| e.kernel).collect();
        kernels.sort_unstable();
        kernels.dedup();
        for kernel in kernels {
            crate::kernels::ensure(kernel)?;
        }
    }
    run_entries(&selected, tests, &images, lanes, &mut summary);
    // The README's first demo, as a newcomer runs it (a terminal, `q`).
    if tests.is_none() && only.is_none_or(|o| only_parts(o).any(|one| DEMO.contains(one))) {
        run_demo(&mut summary);
    }
    // The whole matrix rewrites the committed table; a partial run writes
    // beside it.
    let table = if only.is_none() && tests.is_none() {
        workspace::root().join("docs/faults/vm.md")
    } else {
        workspace::root().join("target/vm/faults-vm.md")
    };
    std::fs::write(&table, fault_table(&summary.faults))
        .with_context(|| format!("writing {}", table.display()))?;
    println!("fault table: {}", table.display());
    println!("== summary");
    Ok(summary.print(run_started.elapsed(), host_passed))
}

/// The workspace's unit tests on the host; whether cargo test succeeded.
fn host_tests(summary: &mut Summary) -> anyhow::Result<bool> {
    let started = Instant::now();
    println!("== unit tests (host)");
    let host = Command::new("cargo")
        .args(["test", "--workspace"])
        .current_dir(workspace::root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test")?;
    let host_text = String::from_utf8_lossy(&host.stdout);
    print!("{host_text}");
    let tally = &mut summary.tally;
    if !tally.add_libtest(&host_text) || !host.status.success() {
        tally.failed += u64::from(!host.status.success() && tally.failed == 0);
        println!("host unit tests failed");
    }
    let passed = host.status.success();
    summary.times.push((
        "host unit tests (with their build)".into(),
        started.elapsed(),
        if passed { "passed" } else { "failed" }.into(),
    ));
    Ok(passed)
}

/// Whether the committed Grafana dashboard is what its grafanalib source
/// generates (counted as one test).
fn dashboard_is_generated(summary: &mut Summary) -> bool {
    let started = Instant::now();
    let result = dashboard::check();
    let passed = result.is_ok();
    if let Err(e) = result {
        println!("dashboard check failed: {e:#}");
        summary.tally.failed += 1;
        summary.failures.push(format!("dashboard: {e:#}"));
    } else {
        summary.tally.passed += 1;
    }
    summary.times.push((
        "dashboard generated from its source".into(),
        started.elapsed(),
        if passed { "passed" } else { "failed" }.into(),
    ));
    passed
}

/// The binaries every VM of the matrix carries.
struct Images {
    /// The glibc release pinwatch, if a selected entry runs it.
    glibc: Option<PathBuf>,
    /// The static one `cargo xtask dist` ships, if a selected entry runs it.
    shipped: Option<PathBuf>,
    /// The VM suite's test executable.
    suite: PathBuf,
    /// The host's tmux, for the dashboard tests.
    tmux: PathBuf,
    /// The host's Prometheus (Debian package), for the fleet tests.
    prometheus: PathBuf,
}

impl Images {
    /// Builds the pinwatch builds `binaries` name and the VM suite, timed
    /// as one step.
    fn build(
        summary: &mut Summary,
        binaries: impl Iterator<Item = Binary>,
    ) -> anyhow::Result<Self> {
        let building = Instant::now();
        let wanted: Vec<Binary> = binaries.collect();
        let images = Self {
            glibc: match wanted.contains(&Binary::Glibc) {
                true => Some(vm::build_pinwatch()?),
                false => None,
            },
            shipped: match wanted.contains(&Binary::Static) {
                true => Some(vm::build_static_pinwatch()?),
                false => None,
            },
            suite: vm_test_binary()?,
            tmux: vm::tmux()?,
            prometheus: install::ensure_test_tools()
                .and_then(|()| initramfs::which("prometheus"))?,
        };
        summary.times.push((
            "release pinwatch builds and VM suite build".into(),
            building.elapsed(),
            "done".into(),
        ));
        Ok(images)
    }
}

/// One matrix entry's boot: what `Entry::boot` hands back for the summary.
struct EntryRun {
    /// The VM's console and exit status, or why it did not finish.
    result: anyhow::Result<vm::VmOutcome>,
    /// From the first boot to power-off (both boots if it booted twice).
    took: Duration,
    /// Why the first boot was not the one that counts, when it booted twice.
    first_boot_lost: Option<String>,
}

impl Entry {
    /// Boots the entry's VM and runs the suite (`tests`, else its subset),
    /// beside `lanes - 1` other guests (its console lines then tagged with
    /// its name).
    fn boot(&self, name: &str, tests: Option<&str>, images: &Images, lanes: usize) -> EntryRun {
        println!("== VM {name}");
        let skip: String = if self.agent {
            String::new()
        } else {
            AGENT_ONLY.iter().map(|t| format!(" --skip {t}")).collect()
        };
        let command = format!(
            // RUSTC_BOOTSTRAP lets the stable-built libtest take its
            // unstable --report-time: each test's time for the summary.
            "PINWATCH_ATTACH={} PINWATCH_KERNEL={} PINWATCH_BUILD={} RUSTC_BOOTSTRAP=1 /bin/pinwatch-vm-tests --test-threads=1 --nocapture -Z unstable-options --report-time {}{skip}",
            self.attach,
            self.kernel,
            self.binary.env_name(),
            tests.unwrap_or(self.subset)
        );
        let pinwatch = match self.binary {
            Binary::Glibc => &images.glibc,
            Binary::Static => &images.shipped,
        }
        .as_ref()
        .expect("Images::build builds what every selected entry runs");
        let mut binaries = vec![pinwatch.clone(), images.suite.clone(), images.tmux.clone()];
        let echo = match lanes {
            1 => vm::Echo::Raw,
            _ => vm::Echo::Tagged(format!("[{name}]")),
        };
        let mut options = vm::VmOptions {
            kernel_params: self.params.to_string(),
            echo,
            ..Default::default()
        };
        if self.agent {
            binaries.push(images.prometheus.clone());
            // Its 50 MB binary lives in the initramfs, its heap beside the
            // suite's.
            options.memory_mb = 2 * vm::DEFAULT_MEMORY_MB;
        }
        // 20 minutes per guest sharing the host (the longest entry alone
        // took 13 on a 2-core host where CI came to 87): when all are
        // busy, each gets that share of it.
        let timeout = Duration::from_secs(1200) * u32::try_from(lanes).unwrap_or(u32::MAX);
        let started = Instant::now();
        let mut result = vm::run_with(self.kernel, &binaries, &command, timeout, &options);
        let mut first_boot_lost = None;
        // Two deaths say nothing about pinwatch (vm::EmulatorDeath): a
        // guest that died before its init ran (seen once under Debian's
        // qemu 7.2: an int3 oops in sched_clock_cpu at 7.7 s), and one that
        // died of an int3 nothing claimed while kernel text was
        // live-patched (a fresh-clone CI of 18213fd lost 6.18 so under
        // qemu 10). Boot it once more, all its tests again, its
        // vCPUs on one host thread, where the emulator showed neither (3
        // of 3 start/stop rounds under load clean where 7.2 died in 2 of
        // 3); any failure there is a failure. The summary lists it.
        if let Err(e) = &result
            && e.is::<vm::EmulatorDeath>()
        {
            println!(
                "{e:#}\n== VM {name}: booting once more, its vCPUs on one host thread (-accel tcg,thread=single)"
            );
            first_boot_lost = e.to_string().lines().next().map(str::to_string);
            options.single_threaded = true;
            result = vm::run_with(self.kernel, &binaries, &command, timeout, &options);
        }
        EntryRun {
            result,
            took: started.elapsed(),
            first_boot_lost,
        }
    }
}

/// Boots the `selected` entries, `lanes` at a time, and adds what each
/// reports to `summary` in matrix order. A guest spends much of its time
/// waiting (grace periods, timers, the suite's own polls): one guest of
/// two vCPUs kept a 2-core host 64 % busy over the 6.12/fentry entry
/// (`/proc/stat` every 10 s), so a second guest fills the idle part.
/// Measured on that host: 5.10 and 6.1 (full, and 6.1's `longterm`) in
/// two lanes took 941 s against about 1180 s one after the other. Not the
/// default: in a fresh-clone CI with two lanes, one `serve` on 5.10 left a
/// scrape unanswered for 60 s (`cgroups::the_cgroup_filter_...`), which
/// no run one after the other has shown and no reading of the scrape path
/// explains yet. With more than one lane each console line is tagged with
/// its entry.
fn run_entries(
    selected: &[(&Entry, String)],
    tests: Option<&str>,
    images: &Images,
    lanes: usize,
    summary: &mut Summary,
) {
    let runs: Mutex<Vec<Option<EntryRun>>> = Mutex::new(selected.iter().map(|_| None).collect());
    // The agent entry boots alone: Prometheus scrapes `serve` there every
    // second with a 1 s timeout (the interval bounds it; the rules' 1m,
    // scaled 1/20, needs two scrapes in 3 s), and its slowest scrape came
    // within 0.02 s of that with the host to itself.
    let (alone, mut shared): (Vec<usize>, Vec<usize>) =
        (0..selected.len()).partition(|&i| selected[i].0.agent);
    boot_in_lanes(selected, &alone, 1, tests, images, &runs);
    // The full entries first, the short subset ones last, so that the
    // lanes finish close together.
    shared.sort_by_key(|&i| !selected[i].0.subset.is_empty());
    boot_in_lanes(selected, &shared, lanes, tests, images, &runs);
    let runs = runs.into_inner().expect("no lane panicked holding it");
    for ((_, name), run) in selected.iter().zip(runs) {
        let run = run.expect("every selected entry ran");
        if let Some(why) = &run.first_boot_lost {
            summary.booted_twice.push(format!("{name}: {why}"));
        }
        let verdict = match run.result {
            Ok(outcome) => summary.add_vm(name, &outcome),
            Err(e) => {
                summary.tally.failed += 1;
                summary.failures.push(format!("{name}: {e:#}"));
                "did not finish".into()
            }
        };
        summary
            .times
            .push((format!("VM {name}"), run.took, verdict));
    }
}

/// Boots the entries of `selected` that `order` lists, in that order,
/// `lanes` at a time; each one's run lands at its index in `runs`.
fn boot_in_lanes(
    selected: &[(&Entry, String)],
    order: &[usize],
    lanes: usize,
    tests: Option<&str>,
    images: &Images,
    runs: &Mutex<Vec<Option<EntryRun>>>,
) {
    let lanes = lanes.clamp(1, order.len().max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..lanes {
            scope.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (entry, name) = &selected[i];
                    let run = entry.boot(name, tests, images, lanes);
                    println!(
                        "== VM {name}: powered off after {:.0} s",
                        run.took.as_secs_f64()
                    );
                    runs.lock().expect("no lane panics holding it")[i] = Some(run);
                }
            });
        }
    });
}

/// The README's first demo in the summary.
const DEMO: &str = "demo: cargo xtask vm -i on debian-6.12";

/// Runs the README's first demo ([`crate::demo`]).
fn run_demo(summary: &mut Summary) {
    println!("== {DEMO}");
    let started = Instant::now();
    let result = match crate::demo::run() {
        Ok(()) => "passed".to_string(),
        Err(e) => {
            summary.failures.push(format!("{DEMO}: {e:#}"));
            "failed".to_string()
        }
    };
    summary
        .times
        .push((DEMO.to_string(), started.elapsed(), result));
}
