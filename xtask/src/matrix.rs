//! The VM matrix: which kernels boot, with which attach mechanism, kernel
//! parameters and pinwatch build, which tests each runs, and how
//! `cargo xtask test --only/--tests` select entries. Running an entry is
//! `test`'s.

/// One boot of the VM matrix.
pub(crate) struct Entry {
    pub(crate) kernel: &'static str,
    /// `PINWATCH_ATTACH`: auto, fentry, kprobe, kprobe-multi or
    /// fentry-multi.
    pub(crate) attach: &'static str,
    /// The VM tests it runs: a libtest filter, "" for all.
    pub(crate) subset: &'static str,
    /// Extra kernel command-line parameters.
    pub(crate) params: &'static str,
    /// Whether the entry runs the [`AGENT_ONLY`] tests (and carries
    /// Prometheus for the `fleet` ones).
    pub(crate) agent: bool,
    /// Which pinwatch build the entry runs.
    pub(crate) binary: Binary,
}

/// The two pinwatch builds the matrix runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Binary {
    /// The release build for the host's glibc (`cargo build --release`,
    /// what a user building from source runs).
    Glibc,
    /// The static (musl) release build `cargo xtask dist` ships.
    Static,
}

impl Binary {
    /// `PINWATCH_BUILD` for the VM suite, which checks it.
    pub(crate) fn env_name(self) -> &'static str {
        match self {
            Binary::Glibc => "glibc",
            Binary::Static => "static",
        }
    }
}

/// The VM tests whose outcome depends on neither the kernel nor the attach
/// mechanism: the dashboard's terminal handling, the HTTP exporter,
/// Prometheus scraping it and evaluating the shipped rules (`fleet`), and
/// `record`'s supervision of a command that ignores SIGTERM. What they
/// read from the kernel, the others check on every entry (exact counts in
/// `cases`/`checks`, detaching on signals in `robustness`). They run on
/// the one entry marked `agent`; every other entry skips them by name,
/// which keeps 114 s of each other full entry's 525 (measured on
/// 6.12/fentry) for the tests where kernels differ.
pub(crate) const AGENT_ONLY: &[&str] = &[
    "dashboard::",
    "serve::",
    "fleet::",
    "record::record_kills_a_command_that_ignores_sigterm",
];

const fn entry(kernel: &'static str, attach: &'static str) -> Entry {
    Entry {
        kernel,
        attach,
        subset: "",
        params: "",
        agent: false,
        binary: Binary::Glibc,
    }
}

/// An entry that runs the static build `cargo xtask dist` ships.
const fn shipped(entry: Entry) -> Entry {
    Entry {
        binary: Binary::Static,
        ..entry
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

/// What the kprobe_multi entry, 6.1's kprobe entry and 7.3's per-function
/// fentry entry run (libtest
/// filters): the tests whose outcome hangs on the nesting bookkeeping;
/// a stop in a child PID namespace, where on 6.1 a kprobe link closed
/// by a child process that outlived the agent hung the kernel
/// (`probes::handoff`); and the setcap route, where a regular user is
/// refused kprobes (the release hook's, beside kprobe_multi links).
const NESTING_TESTS: &str = "cases:: checks:: startup:: interrupts:: lifetimes:: \
                             pending::in_a_child_pid_namespace setcap::";

/// The matrix. The PREEMPT_RT kernel runs the concurrency tests (`busy`):
/// what differs there is that BPF programs can be preempted. The
/// `movablecore` boots run the FOLL_LONGTERM migration tests (`longterm`):
/// with half the memory in ZONE_MOVABLE, where user pages go first, a
/// long-term pin must migrate them, and GUP releases its own pins.
///
/// The oldest and the newest kernel run the static build `cargo xtask
/// dist` ships (a release tarball is what lands on hosts that cannot
/// build pinwatch); the others the glibc build. Measured in one 6.12 boot,
/// `pinwatch probes` took 14.8/16.3/13.7 s (glibc) against 14.7/16.7/14.3 s
/// (static), run alternately: the builds start and stop alike.
pub(crate) const MATRIX: &[Entry] = &[
    shipped(entry("debian-5.10", "auto")),
    entry("debian-6.1", "auto"),
    // 6.1's kprobes see tail calls (`pin_user_pages` jumps into
    // `__gup_longterm_locked`: two calls on one return-address slot),
    // which fentry (the default there) never shows and 6.12's code has
    // none of: the nesting, exact counts, releases and lifetimes are what
    // they could get wrong.
    Entry {
        subset: NESTING_TESTS,
        ..entry("debian-6.1", "kprobe")
    },
    // The kernel-independent tests run here, beside Prometheus.
    Entry {
        agent: true,
        ..entry("debian-6.12", "fentry")
    },
    entry("debian-6.12", "kprobe"),
    // kprobe_multi links carry the same programs' bookkeeping as the
    // kprobes above: the exact counts, the errors, releases in interrupt
    // context and lifetimes are what the dispatch by cookie could get
    // wrong; the rest (signals, soak, stop) does not depend on it.
    Entry {
        subset: NESTING_TESTS,
        ..entry("debian-6.12", "kprobe-multi")
    },
    entry("debian-6.18", "auto"),
    // `auto` attaches on tracing multi links here (7.3 has them): the
    // per-function fentry pairs, which every other 7.x kernel without
    // the links gets, run the tests whose outcome hangs on the nesting.
    shipped(entry("debian-7.3", "auto")),
    Entry {
        subset: NESTING_TESTS,
        ..entry("debian-7.3", "fentry")
    },
    Entry {
        subset: "busy::",
        ..entry("debian-6.12-rt", "fentry")
    },
    shipped(longterm("debian-5.10", "auto")),
    longterm("debian-6.1", "auto"),
    longterm("debian-6.12", "fentry"),
    longterm("debian-6.12", "kprobe"),
    longterm("debian-6.18", "auto"),
    shipped(longterm("debian-7.3", "auto")),
];

impl Entry {
    /// The entry's name (`kernel/attach[ params]`) when `only` (names'
    /// parts, comma-separated: any of them) and `tests` select it. An entry that runs a subset runs only when asked for
    /// that subset.
    pub(crate) fn selected(&self, only: Option<&str>, tests: Option<&str>) -> Option<String> {
        let Self {
            kernel,
            attach,
            subset,
            params,
            agent,
            binary,
        } = self;
        let mut name = if params.is_empty() {
            format!("{kernel}/{attach}")
        } else {
            format!("{kernel}/{attach} {params}")
        };
        if *agent {
            name.push_str(" +agent");
        }
        if *binary == Binary::Static {
            name.push_str(" static");
        }
        if only.is_some_and(|o| !only_parts(o).any(|one| name.contains(one))) {
            return None;
        }
        // Asked only for kernel-independent tests: the agent entry runs
        // them, the others would boot to run none.
        if !agent && tests.is_some_and(only_agent_tests) {
            return None;
        }
        // A subset of several filters runs when any of them is asked for.
        let asked = |t: &str| {
            subset
                .split_whitespace()
                .any(|filter| t.contains(filter.trim_end_matches(':')))
        };
        if !subset.is_empty() && tests.is_some_and(|t| !asked(t)) {
            return None;
        }
        Some(name)
    }
}

/// The parts of `--only`, comma-separated; empty ones (a trailing comma)
/// name nothing rather than everything.
pub(crate) fn only_parts(only: &str) -> impl Iterator<Item = &str> {
    only.split(',').filter(|part| !part.is_empty())
}

/// Whether every filter of `tests` lies within [`AGENT_ONLY`].
fn only_agent_tests(tests: &str) -> bool {
    let mut filters = tests.split_whitespace().peekable();
    filters.peek().is_some() && filters.all(|f| AGENT_ONLY.iter().any(|a| f.starts_with(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel-independent tests run exactly once in the whole matrix:
    /// one full entry runs them, every other full entry skips them.
    #[test]
    fn agent_tests_run_on_exactly_one_full_entry() {
        let full: Vec<&Entry> = MATRIX.iter().filter(|e| e.subset.is_empty()).collect();
        assert_eq!(full.iter().filter(|e| e.agent).count(), 1);
        assert!(MATRIX.iter().all(|e| !e.agent || e.subset.is_empty()));
    }

    /// The full suite runs on both builds: the static one dist ships and
    /// the glibc one a source build gives.
    #[test]
    fn both_builds_run_the_full_suite() {
        for binary in [Binary::Glibc, Binary::Static] {
            assert!(
                MATRIX
                    .iter()
                    .any(|e| e.subset.is_empty() && e.binary == binary),
                "no full entry runs the {binary:?} build"
            );
        }
        assert_eq!(
            MATRIX[0].selected(None, None).as_deref(),
            Some("debian-5.10/auto static")
        );
    }

    #[test]
    fn a_filter_of_agent_tests_selects_the_agent_entry_only() {
        let names = |tests: Option<&str>| -> Vec<String> {
            MATRIX
                .iter()
                .filter_map(|e| e.selected(None, tests))
                .collect()
        };
        assert_eq!(names(Some("fleet::")), ["debian-6.12/fentry +agent"]);
        assert_eq!(
            names(Some("dashboard:: serve::serve_exports")),
            ["debian-6.12/fentry +agent"]
        );
        // One kernel-dependent filter brings back every full entry.
        assert_eq!(names(Some("fleet:: cases::")).len(), 9);
        assert_eq!(names(Some("record::")).len(), 6);
        // Any one filter of a subset of several selects its entry.
        assert!(names(Some("interrupts::")).contains(&"debian-6.12/kprobe-multi".to_string()));
        assert_eq!(names(None).len(), MATRIX.len());
    }

    #[test]
    fn only_selects_the_entries_any_of_its_parts_names() {
        let names: Vec<String> = MATRIX
            .iter()
            .filter_map(|e| {
                e.selected(
                    Some("debian-5.10/auto static,debian-6.18/auto movable"),
                    None,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "debian-5.10/auto static",
                "debian-6.18/auto movablecore=50%"
            ]
        );
    }
}
