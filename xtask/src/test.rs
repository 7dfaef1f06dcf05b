//! `cargo xtask test`: host unit tests, then the integration suite inside
//! the VM on every kernel and attach mechanism of the matrix. A matrix
//! entry that cannot boot is a failure, never a skip.

use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{install, vm, workspace};

/// One boot of the VM matrix.
struct Entry {
    kernel: &'static str,
    /// `PINWATCH_ATTACH`: auto, fentry or kprobe.
    attach: &'static str,
    /// The VM tests it runs: a libtest filter, "" for all.
    subset: &'static str,
    /// Extra kernel command-line parameters.
    params: &'static str,
}

const fn entry(kernel: &'static str, attach: &'static str) -> Entry {
    Entry {
        kernel,
        attach,
        subset: "",
        params: "",
    }
}

/// A boot with half the memory in ZONE_MOVABLE for the `longterm` tests.
const fn longterm(kernel: &'static str, attach: &'static str) -> Entry {
    Entry {
        subset: "longterm::",
        params: "movablecore=50%",
        ..entry(kernel, attach)
    }
}

/// The matrix. The PREEMPT_RT kernel runs the concurrency tests (`busy`):
/// what differs there is that BPF programs can be preempted. The
/// `movablecore` boots run the FOLL_LONGTERM migration tests (`longterm`):
/// with half the memory in ZONE_MOVABLE, where user pages go first, a
/// long-term pin must migrate them, and GUP releases its own pins.
const MATRIX: &[Entry] = &[
    entry("debian-5.10", "auto"),
    entry("debian-6.1", "auto"),
    entry("debian-6.12", "fentry"),
    entry("debian-6.12", "kprobe"),
    entry("debian-6.18", "auto"),
    entry("debian-7.3", "auto"),
    Entry {
        subset: "busy::",
        ..entry("debian-6.12-rt", "fentry")
    },
    longterm("debian-5.10", "auto"),
    longterm("debian-6.1", "auto"),
    longterm("debian-6.12", "fentry"),
    longterm("debian-6.12", "kprobe"),
    longterm("debian-6.18", "auto"),
    longterm("debian-7.3", "auto"),
];

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Adds libtest's "test result: ok. N passed; M failed; ..." lines.
    fn add_libtest(&mut self, text: &str) -> bool {
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("test result: ") else {
                continue;
            };
            seen = true;
            for part in rest.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                let num = |w: &[&str]| w.iter().find_map(|x| x.parse::<u64>().ok()).unwrap_or(0);
                if part.contains(" passed") {
                    self.passed += num(&words);
                } else if part.contains(" failed") {
                    self.failed += num(&words);
                }
            }
        }
        seen
    }
}

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
            std::fs::copy(exe, &dest)?;
            return Ok(dest);
        }
    }
    bail!("cargo did not report the vm test executable")
}

/// Runs everything; the last line is "N passed, M failed".
pub fn run(only: Option<&str>, tests: Option<&str>) -> anyhow::Result<ExitCode> {
    install::ensure_build_tools()?;
    install::ensure_test_tools()?;
    let mut tally = Tally::default();
    // Where the matrix's minutes go: host tests, builds, each VM.
    let run_started = Instant::now();
    let mut steps: Vec<(String, Duration, String)> = Vec::new();

    println!("== unit tests (host)");
    let host = Command::new("cargo")
        .args(["test", "--workspace"])
        .current_dir(workspace::root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test")?;
    let host_text = String::from_utf8_lossy(&host.stdout);
    print!("{host_text}");
    if !tally.add_libtest(&host_text) || !host.status.success() {
        tally.failed += u64::from(!host.status.success() && tally.failed == 0);
        println!("host unit tests failed");
    }

    steps.push((
        "host unit tests (with their build)".into(),
        run_started.elapsed(),
        if host.status.success() {
            "passed"
        } else {
            "failed"
        }
        .into(),
    ));
    let building = Instant::now();
    let pinwatch = vm::build_pinwatch()?;
    let suite = vm_test_binary()?;
    let tmux = vm::tmux()?;
    steps.push((
        "release pinwatch and VM suite builds".into(),
        building.elapsed(),
        "done".into(),
    ));
    let mut failures = Vec::new();
    let mut faults = Vec::new();
    // Per VM: its name, wall time (boot to power-off) and result, for the
    // summary: where the matrix's minutes go.
    let mut per_vm: Vec<(String, Duration, String)> = Vec::new();
    for &Entry {
        kernel,
        attach,
        subset,
        params,
    } in MATRIX
    {
        let name = if params.is_empty() {
            format!("{kernel}/{attach}")
        } else {
            format!("{kernel}/{attach} {params}")
        };
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // An entry that runs a subset runs only when asked for that subset.
        let subset_name = subset.trim_end_matches(':');
        if !subset.is_empty() && tests.is_some_and(|t| !t.contains(subset_name)) {
            continue;
        }
        println!("== VM {name}");
        let command = format!(
            "PINWATCH_ATTACH={attach} PINWATCH_KERNEL={kernel} /bin/pinwatch-vm-tests --test-threads=1 --nocapture {}",
            tests.unwrap_or(subset)
        );
        let binaries = [pinwatch.clone(), suite.clone(), tmux.clone()];
        let timeout = Duration::from_secs(1200);
        let options = vm::VmOptions {
            kernel_params: params.to_string(),
            ..Default::default()
        };
        let started = Instant::now();
        let mut result = vm::run_with(kernel, &binaries, &command, timeout, &options);
        // A guest that died before its init ran tested nothing (seen once
        // under Debian's qemu 7.2: an int3 oops in sched_clock_cpu at 7.7 s;
        // not seen since the move to qemu 10). Boot it once more; a second
        // such death is a failure like any other.
        if let Err(e) = &result
            && let Some(boot) = e.downcast_ref::<vm::BootFailure>()
        {
            println!("{boot}\n== VM {name}: booting once more (nothing had run)");
            result = vm::run_with(kernel, &binaries, &command, timeout, &options);
        }
        match result {
            Ok(outcome) => {
                faults.extend(
                    outcome
                        .lines
                        .iter()
                        // libtest may print a row after "test name ... ".
                        .filter_map(|l| {
                            l.find(FAULT_MARKER).map(|at| &l[at + FAULT_MARKER.len()..])
                        })
                        .map(|row| row.trim().to_string()),
                );
                let text = outcome.lines.join("\n");
                let mut this_vm = Tally::default();
                if !this_vm.add_libtest(&text) {
                    tally.failed += 1;
                    failures.push(format!("{name}: the suite reported no result"));
                } else if outcome.status != 0 {
                    failures.push(format!("{name}: exit status {}", outcome.status));
                }
                tally.passed += this_vm.passed;
                tally.failed += this_vm.failed;
                per_vm.push((
                    format!("VM {name}"),
                    started.elapsed(),
                    format!("{} passed, {} failed", this_vm.passed, this_vm.failed),
                ));
            }
            Err(e) => {
                tally.failed += 1;
                failures.push(format!("{name}: {e:#}"));
                per_vm.push((
                    format!("VM {name}"),
                    started.elapsed(),
                    "did not finish".into(),
                ));
            }
        }
    }
    // The README's first demo, as a newcomer runs it (a terminal, `q`).
    let demo = "demo: cargo xtask vm -i on debian-6.12";
    if tests.is_none() && only.is_none_or(|o| demo.contains(o)) {
        println!("== {demo}");
        let started = Instant::now();
        let result = match crate::demo::run() {
            Ok(()) => "passed".to_string(),
            Err(e) => {
                failures.push(format!("{demo}: {e:#}"));
                "failed".to_string()
            }
        };
        per_vm.push((demo.to_string(), started.elapsed(), result));
    }
    // The whole matrix rewrites the committed table; a partial run writes
    // beside it.
    let table = if only.is_none() && tests.is_none() {
        workspace::root().join("docs/faults/vm.md")
    } else {
        workspace::root().join("target/vm/faults-vm.md")
    };
    std::fs::write(&table, fault_table(&faults))
        .with_context(|| format!("writing {}", table.display()))?;
    println!("fault table: {}", table.display());
    println!("== summary");
    print_times(steps.iter().chain(&per_vm), run_started.elapsed());
    for f in &failures {
        println!("FAILED {f}");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(
        if tally.failed == 0 && failures.is_empty() && host.status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Each step's wall time and result (host tests, builds, each VM, the
/// demo), then the total: where the matrix's minutes go.
fn print_times<'a>(steps: impl Iterator<Item = &'a (String, Duration, String)>, total: Duration) {
    for (name, took, result) in steps {
        println!("{name}: {:.0} s, {result}", took.as_secs_f64());
    }
    println!("total: {:.0} s", total.as_secs_f64());
}

/// What the VM suite prints before each fault-table row.
const FAULT_MARKER: &str = "FAULT|";

/// The VM fault table from `FAULT|kernel|attach|fault|outcome` rows.
fn fault_table(rows: &[String]) -> String {
    let mut out = String::from(
        "# Faults on kernels that can trace\n\n\
         Written by `cargo xtask test` from the `FAULT|` rows \
         the VM suite (`pin-user/tests/vm/`: robustness, soak, dashboard) prints; \
         each row is also an assertion there. Bad input and host-side faults: `host.snap`.\n\n\
         | kernel | attach | fault | observed |\n|---|---|---|---|\n",
    );
    for row in rows {
        let cells: Vec<&str> = row.splitn(4, '|').collect();
        if let [kernel, attach, fault, outcome] = cells[..] {
            out.push_str(&format!("| {kernel} | {attach} | {fault} | {outcome} |\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_libtest_lines() {
        let mut t = Tally::default();
        assert!(t.add_libtest(
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             test result: FAILED. 3 passed; 2 failed; 0 ignored"
        ));
        assert_eq!((t.passed, t.failed), (15, 2));
        assert!(!t.add_libtest("nothing here"));
    }
}
