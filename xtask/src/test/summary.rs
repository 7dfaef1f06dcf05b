//! The run's summary: tests passed and failed (from libtest's lines), the
//! VMs booted twice and the failures, each step's time, the slowest VM
//! tests, and the fault table the VM suite's `FAULT|` rows make.

use std::{process::ExitCode, time::Duration};

use crate::vm;

/// Tests passed and failed.
#[derive(Default)]
pub(super) struct Tally {
    /// Tests passed.
    pub(super) passed: u64,
    /// Tests failed.
    pub(super) failed: u64,
}

impl Tally {
    /// Adds libtest's "test result: ok. N passed; M failed; ..." lines.
    pub(super) fn add_libtest(&mut self, text: &str) -> bool {
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

/// What the run gathers for its summary and fault table.
#[derive(Default)]
pub(super) struct Summary {
    /// Tests passed and failed, host and VMs.
    pub(super) tally: Tally,
    /// Each failed VM or demo: its name and what went wrong.
    pub(super) failures: Vec<String>,
    /// Each VM booted a second time: its name and why the first boot did
    /// not count.
    pub(super) booted_twice: Vec<String>,
    /// The `FAULT|` rows the VMs printed.
    pub(super) faults: Vec<String>,
    /// Each step's name, wall time and result (host tests, builds, each VM
    /// from boot to power-off, the demo): where the matrix's minutes go.
    pub(super) times: Vec<(String, Duration, String)>,
    /// Each VM test's time as libtest reported it (`--report-time`), with
    /// its entry's name: which tests those minutes are.
    pub(super) test_times: Vec<(Duration, String)>,
}

impl Summary {
    /// Prints the times, the failures and the count; the exit code.
    pub(super) fn print(&self, total: Duration, host_passed: bool) -> ExitCode {
        print_times(self.times.iter(), total);
        print_slowest(&self.test_times);
        for b in &self.booted_twice {
            println!("BOOTED TWICE {b}");
        }
        for f in &self.failures {
            println!("FAILED {f}");
        }
        println!("{} passed, {} failed", self.tally.passed, self.tally.failed);
        if self.tally.failed == 0 && self.failures.is_empty() && host_passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// Adds a finished VM's fault rows and test results; its verdict.
    pub(super) fn add_vm(&mut self, name: &str, outcome: &vm::VmOutcome) -> String {
        self.faults.extend(
            outcome
                .lines
                .iter()
                // libtest may print a row after "test name ... ".
                .filter_map(|l| l.find(FAULT_MARKER).map(|at| &l[at + FAULT_MARKER.len()..]))
                .map(|row| row.trim().to_string()),
        );
        self.test_times.extend(
            test_times(&outcome.lines)
                .into_iter()
                .map(|(test, took)| (took, format!("{name}: {test}"))),
        );
        let text = outcome.lines.join("\n");
        let mut this_vm = Tally::default();
        if !this_vm.add_libtest(&text) {
            self.tally.failed += 1;
            self.failures
                .push(format!("{name}: the suite reported no result"));
        } else if outcome.status != 0 {
            self.failures
                .push(format!("{name}: exit status {}", outcome.status));
        } else if this_vm.passed + this_vm.failed == 0 {
            // A boot that ran nothing (a `--tests` filter that matches no
            // test, e.g. comma-separated where libtest takes spaces) is
            // no pass.
            self.tally.failed += 1;
            self.failures.push(format!(
                "{name}: no test ran (a --tests filter that matches none? \
                 filters are separated by spaces)"
            ));
        }
        self.tally.passed += this_vm.passed;
        self.tally.failed += this_vm.failed;
        format!("{} passed, {} failed", this_vm.passed, this_vm.failed)
    }
}

/// Each step's wall time and result (host tests, builds, each VM, the
/// demo), then the total: where the matrix's minutes go.
fn print_times<'a>(steps: impl Iterator<Item = &'a (String, Duration, String)>, total: Duration) {
    for (name, took, result) in steps {
        println!("{name}: {:.0} s, {result}", took.as_secs_f64());
    }
    println!("total: {:.0} s", total.as_secs_f64());
}

/// How many of the slowest VM tests the summary names.
const SLOWEST_SHOWN: usize = 25;

/// The matrix's slowest VM tests, slowest first, and what all of them took.
fn print_slowest(times: &[(Duration, String)]) {
    let mut sorted: Vec<&(Duration, String)> = times.iter().collect();
    sorted.sort_by_key(|t| std::cmp::Reverse(t.0));
    let sum: Duration = times.iter().map(|(t, _)| *t).sum();
    println!(
        "slowest VM tests ({} timed, {:.0} s in all):",
        times.len(),
        sum.as_secs_f64()
    );
    for (took, test) in sorted.into_iter().take(SLOWEST_SHOWN) {
        println!("  {:6.1} s  {test}", took.as_secs_f64());
    }
}

/// Each test's time from libtest's `--report-time` output under
/// `--nocapture`: "test NAME ... " opens a test, whatever it prints
/// follows, and a line ending "ok <1.234s>" (or FAILED) closes it.
fn test_times(lines: &[String]) -> Vec<(String, Duration)> {
    let mut open: Option<&str> = None;
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim_end();
        // "test NAME ..." (its trailing space trimmed when nothing
        // follows on the line).
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, _)) = rest.split_once(" ...")
        {
            open = Some(name);
        }
        let Some(time) = line
            .strip_suffix("s>")
            .and_then(|l| l.rsplit_once('<'))
            .filter(|(before, _)| before.ends_with("ok ") || before.ends_with("FAILED "))
            .and_then(|(_, secs)| secs.parse::<f64>().ok())
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        else {
            continue;
        };
        if let Some(name) = open.take() {
            out.push((name.to_string(), time));
        }
    }
    out
}

/// What the VM suite prints before each fault-table row.
const FAULT_MARKER: &str = "FAULT|";

/// The VM fault table from `FAULT|kernel|attach|fault|outcome` rows.
pub(super) fn fault_table(rows: &[String]) -> String {
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
    fn reads_each_tests_time_through_its_output() {
        let lines: Vec<String> = [
            "test a::one ... OBSERVED x",
            "more output",
            "ok <12.345s>",
            "test a::two ... ok <0.500s>",
            "test a::quiet ...",
            "ok <1.000s>\r",
            "test a::three ... FAULT|k|a|f|o",
            "FAILED <3.000s>",
            "test result: ok. 3 passed; finished in 15.85s",
        ]
        .map(String::from)
        .into();
        let times = test_times(&lines);
        assert_eq!(
            times,
            [
                ("a::one".to_string(), Duration::from_millis(12_345)),
                ("a::two".to_string(), Duration::from_millis(500)),
                ("a::quiet".to_string(), Duration::from_secs(1)),
                ("a::three".to_string(), Duration::from_secs(3)),
            ]
        );
    }

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

    #[test]
    fn a_boot_that_ran_no_test_fails() {
        let outcome = |result: &str| vm::VmOutcome {
            status: 0,
            lines: vec![result.to_string()],
        };
        let mut summary = Summary::default();
        summary.add_vm(
            "k/a",
            &outcome("test result: ok. 0 passed; 0 failed; 68 filtered out"),
        );
        assert_eq!((summary.tally.passed, summary.tally.failed), (0, 1));
        assert!(
            summary.failures[0].contains("no test ran"),
            "{:?}",
            summary.failures
        );
        summary.add_vm("k/a", &outcome("test result: ok. 2 passed; 0 failed"));
        assert_eq!((summary.tally.passed, summary.tally.failed), (2, 1));
    }
}
