//! The shared harness: probes attached once per VM run, a workload run
//! between two snapshots, and the comparison against an expectation.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use pin_common::{FUNCS, GUP_FUNC_COUNT};
use pinwatch::{
    kernel::{KernelFacts, parse_version},
    probes::{self, AttachMode, AttachOptions, Probes},
    report::IntervalView,
    snapshot::{Delta, Snapshot},
    vmstat,
    workload::WorkloadReport,
};

pub struct Harness {
    /// The attached probes.
    pub probes: Probes,
    /// The mechanism asked for (PINWATCH_ATTACH).
    pub mode: AttachMode,
    /// Kernel (major, minor).
    pub version: (u32, u32),
    /// Kernel release string.
    pub release: String,
    /// Why pin lifetimes are off on this kernel (the feature table's
    /// reason), or None where they are timed.
    pub lifetimes_off: Option<String>,
}

pub fn harness() -> MutexGuard<'static, Harness> {
    crate::strays::reap_strays();
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let mode = match std::env::var("PINWATCH_ATTACH").as_deref() {
                Ok("fentry") => AttachMode::Fentry,
                Ok("kprobe") => AttachMode::Kprobe,
                Ok("kprobe-multi") => AttachMode::KprobeMulti,
                Ok("fentry-multi") => AttachMode::FentryMulti,
                _ => AttachMode::Auto,
            };
            let facts = KernelFacts::discover();
            // Everything on: callers and pin lifetimes are checked too,
            // where the kernel can time lifetimes (the tests that need
            // them check the reason where it cannot).
            let options = AttachOptions {
                lifetimes: facts.features.lifetimes_unavailable().is_none(),
                ..AttachOptions::new(mode)
            };
            let probes = probes::attach(&facts, options).expect("probes attach in the VM");
            for st in &probes.status {
                eprintln!(
                    "probe {:<34} {:<8} {}",
                    st.function,
                    st.attached
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into()),
                    st.notes.join("; ")
                );
            }
            let version = parse_version(&facts.release).expect("kernel version");
            Mutex::new(Harness {
                probes,
                mode,
                version,
                release: facts.release.clone(),
                lifetimes_off: facts.features.lifetimes_unavailable(),
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

pub fn id_of(name: &str) -> usize {
    FUNCS
        .iter()
        .position(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in catalogue"))
}

/// The pinwatch binary under test (`PINWATCH_BIN`, default on PATH).
pub fn pinwatch_bin() -> String {
    std::env::var("PINWATCH_BIN").unwrap_or_else(|_| "pinwatch".into())
}

impl Harness {
    /// Whether pin lifetimes are timed here. Where not, checks that the
    /// kernel really lacks what they need (the helpers came in 5.17) and
    /// that the reason says so, and returns false.
    pub fn lifetimes_on(&self) -> bool {
        match &self.lifetimes_off {
            None => {
                assert!(self.probes.lifetimes.is_some(), "lifetimes not attached");
                true
            }
            Some(why) => {
                assert!(
                    self.version < (5, 17),
                    "lifetimes off on {}: {why}",
                    self.release
                );
                assert!(why.contains("bpf_loop"), "{why}");
                eprintln!("OBSERVED lifetimes unavailable: {why}");
                false
            }
        }
    }

    /// The `--attach` value matching the harness's own probes.
    pub fn attach_arg(&self) -> String {
        use clap::ValueEnum as _;
        self.mode
            .to_possible_value()
            .expect("every mode has a name")
            .get_name()
            .to_string()
    }
}

/// 30 process_vm_writev calls of 8 pages: 30 pin_user_pages_remote calls,
/// 240 FOLL_PIN pages, 240 released.
pub fn pinning_workload() {
    let status = Command::new(pinwatch_bin())
        .args([
            "workload",
            "process-vm-writev",
            "--calls",
            "30",
            "--pages",
            "8",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Spawns `pinwatch workload io-uring-hold --calls 1 --pages PAGES` plus
/// `extra` (such as `--wait-stdin`), stdin and stdout piped: it registers
/// one buffer, prints `{"holding":PID}` and holds the pins until a line on
/// stdin (`unregister` releases them before it exits). Returns the child
/// and its stdout, which must stay open (the workload reports there last).
pub fn spawn_io_uring_hold(
    pages: u64,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(pinwatch_bin())
        .args(["workload", "io-uring-hold", "--calls", "1"])
        .args(["--pages", &pages.to_string()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn io-uring-hold");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, out)
}

/// How long a scrape may take before the test fails rather than hangs
/// (a scrape reads every map: well under a second even under TCG).
pub const SCRAPE_WITHIN: Duration = Duration::from_secs(60);

/// One HTTP/1.1 GET of /metrics with this Accept header, answered within
/// [`SCRAPE_WITHIN`]; returns (headers, body).
pub fn get_metrics(addr: &str, accept: &str) -> (String, String) {
    use std::{io::Read as _, net::TcpStream};
    let socket: std::net::SocketAddr = addr.parse().expect("a socket address");
    let mut s =
        TcpStream::connect_timeout(&socket, SCRAPE_WITHIN).expect("connect to pinwatch serve");
    s.set_read_timeout(Some(SCRAPE_WITHIN)).unwrap();
    s.set_write_timeout(Some(SCRAPE_WITHIN)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
}

/// Raises this process's open-file limit to hold `want` more descriptors
/// (root: the hard limit too).
pub fn raise_fd_limit(want: u64) {
    let need = want + 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < need {
            limit.rlim_cur = need;
            limit.rlim_max = limit.rlim_max.max(need);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
                0,
                "raising RLIMIT_NOFILE to {need}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A command running pinwatch, inside the cgroup directory `cgroup` when
/// given: a shell moves itself there and execs pinwatch, so every task
/// pinwatch starts is in it from the start.
pub fn pinwatch_in(cgroup: Option<&std::path::Path>) -> Command {
    let bin = pinwatch_bin();
    match cgroup {
        Some(dir) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                    dir.display()
                ))
                .arg(bin);
            sh
        }
        None => Command::new(bin),
    }
}

/// The value of the first exposition line that starts with `prefix` (a
/// series name with its labels).
pub fn sample(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Runs one workload between two snapshots.
pub fn measure(h: &Harness, args: &[&str]) -> (WorkloadReport, Delta) {
    measure_in(h, None, args)
}

/// Runs one workload between two snapshots, started inside the cgroup
/// directory `cgroup` when given (it moves itself there before it execs
/// pinwatch, so every task of the workload is in it from the start).
pub fn measure_in(
    h: &Harness,
    cgroup: Option<&std::path::Path>,
    args: &[&str],
) -> (WorkloadReport, Delta) {
    measure_by(&h.probes, cgroup, args)
}

/// [`measure_in`] with the maps of `probes` (an agent other than the
/// harness's own).
pub fn measure_by(
    probes: &Probes,
    cgroup: Option<&std::path::Path>,
    args: &[&str],
) -> (WorkloadReport, Delta) {
    let mut child = pinwatch_in(cgroup)
        .arg("workload")
        .args(args)
        .args(["--json", "--wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pinwatch workload");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert!(
        line.contains("\"ready\""),
        "workload did not get ready: {line:?}"
    );

    vmstat::refresh().expect("stat_refresh");
    let before = Snapshot::read(probes.maps()).expect("snapshot");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("start workload");
    line.clear();
    out.read_line(&mut line).expect("report line");
    let status = child.wait().expect("wait workload");
    assert!(status.success(), "workload {args:?} failed: {status}");
    vmstat::refresh().expect("stat_refresh");
    let after = Snapshot::read(probes.maps()).expect("snapshot");
    let report: WorkloadReport =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("report {line:?}: {e}"));
    (report, after.since(&before))
}

/// What a workload must have produced.
pub struct Expect {
    /// The outermost variant the path must reach.
    pub variant: &'static str,
    /// Outermost calls.
    pub calls: u64,
    /// Pages requested and returned.
    pub pages: u64,
    /// Some(n): the fast path must have fallen back exactly n times.
    pub fallbacks: Option<u64>,
}

impl Expect {
    /// `calls` calls of `variant` taking `pages` pages in all.
    pub fn new(variant: &'static str, calls: u64, pages: u64) -> Self {
        Self {
            variant,
            calls,
            pages,
            fallbacks: None,
        }
    }

    /// The fast path must fall back exactly `n` times.
    pub fn fallbacks(self, n: u64) -> Self {
        Self {
            fallbacks: Some(n),
            ..self
        }
    }

    /// Like [`Expect::fallbacks`] where the variant has a fast path.
    pub fn fallbacks_if(self, fast: bool, n: u64) -> Self {
        if fast { self.fallbacks(n) } else { self }
    }
}

/// Runs `args` as a workload and checks it against `expect(h, report)`.
pub fn case(args: &[&str], expect: impl FnOnce(&Harness, &WorkloadReport) -> Expect) {
    let h = harness();
    let (report, delta) = measure(&h, args);
    let want = expect(&h, &report);
    check(&h, &args.join(" "), &report, &delta, want);
}

/// Checks a delta against an expectation and prints the comparison line
/// the issue notes quote.
pub fn check(h: &Harness, workload: &str, report: &WorkloadReport, delta: &Delta, want: Expect) {
    let id = id_of(want.variant);
    let got = &delta.gup[id];
    let view = IntervalView::new(delta);
    let is_pin = FUNCS[id].is_pin;
    let pin_pages = if is_pin && !report.zero_page {
        want.pages
    } else {
        0
    };
    let vm = delta.vmstat.expect("vmstat pin counters");
    let released: u64 = delta.release.iter().map(|r| r.pages).sum();
    // vmstat counts GUP's own pins and releases (rollbacks, migration
    // retries) too, seen at gup_put_folio.
    let internal = delta.balance.gup_released;
    eprintln!(
        "OBSERVED kernel={} attach={:?} workload={workload} variant={} calls={}/{} pages={}/{} \
         fallbacks={} fast_pages={} slow_pages={} vmstat_acquired={}/{} released={} gup_internal_released={internal} vmstat_released={}",
        h.release,
        h.mode,
        want.variant,
        got.calls,
        want.calls,
        got.pages_returned,
        want.pages,
        got.fallbacks,
        got.fast_pages,
        got.slow_pages,
        vm.nr_foll_pin_acquired,
        pin_pages,
        released,
        vm.nr_foll_pin_released,
    );
    let dump = || serde_json::to_string_pretty(&view).unwrap_or_default();
    assert_eq!(
        got.calls,
        want.calls,
        "{workload}: calls of {}\n{}",
        want.variant,
        dump()
    );
    assert_eq!(
        got.pages_requested,
        want.pages,
        "{workload}: pages requested\n{}",
        dump()
    );
    assert_eq!(
        got.pages_returned,
        want.pages,
        "{workload}: pages returned\n{}",
        dump()
    );
    assert_eq!(
        got.errors + got.partial + got.zero,
        0,
        "{workload}: errors/partial/zero\n{}",
        dump()
    );
    let others: Vec<String> = (0..GUP_FUNC_COUNT)
        .filter(|&i| i != id && delta.gup[i].calls != 0)
        .map(|i| format!("{}={}", FUNCS[i].name, delta.gup[i].calls))
        .collect();
    assert!(
        others.is_empty(),
        "{workload}: other variants moved: {others:?}\n{}",
        dump()
    );
    if let Some(fallbacks) = want.fallbacks {
        assert_eq!(
            got.fallbacks,
            fallbacks,
            "{workload}: fallbacks\n{}",
            dump()
        );
        assert_eq!(
            got.fast_pages + got.slow_pages,
            want.pages,
            "{workload}: fast+slow pages\n{}",
            dump()
        );
        if fallbacks == 0 {
            assert_eq!(got.slow_pages, 0, "{workload}: slow pages without fallback");
        }
    }
    assert_eq!(
        vm.nr_foll_pin_acquired,
        pin_pages + internal,
        "{workload}: vmstat nr_foll_pin_acquired (pages returned, and GUP's own it released)\n{}",
        dump()
    );
    if report.zero_page && is_pin {
        // The zero page is pinned and unpinned, but vmstat counts neither.
        assert_eq!(
            released,
            want.pages,
            "{workload}: unpinned pages\n{}",
            dump()
        );
        assert_eq!(vm.nr_foll_pin_released, 0, "{workload}: vmstat released");
    } else {
        assert_eq!(
            vm.nr_foll_pin_released,
            released + internal,
            "{workload}: vmstat nr_foll_pin_released vs unpin probes (callers' and GUP's own)\n{}",
            dump()
        );
    }
    assert_eq!(
        delta.health,
        [0; pin_common::HEALTH_COUNT],
        "{workload}: probe health counters moved"
    );
    assert!(
        delta.misses.values().all(|&runs| runs == 0),
        "{workload}: the kernel skipped program runs: {:?}",
        delta.misses
    );
    if let Some(proc) = delta.procs.get(&report.pid) {
        assert_eq!(proc.calls, want.calls, "{workload}: per-process calls");
        assert_eq!(proc.pages, want.pages, "{workload}: per-process pages");
    } else {
        panic!("{workload}: no per-process entry for pid {}", report.pid);
    }
}

/// O_DIRECT takes pages with FOLL_PIN since 6.3 (iov_iter_extract_pages),
/// with FOLL_GET through get_user_pages_fast before.
pub fn odirect_variant(h: &Harness) -> &'static str {
    if h.version >= (6, 3) {
        "pin_user_pages_fast"
    } else {
        "get_user_pages_fast"
    }
}

/// io_uring pinned with pin_user_pages under mmap_read_lock until
/// io_pin_pages moved to io_uring/memmap.c (6.10), pin_user_pages_fast
/// since. Measured: 6.1 and 6.12.
pub fn io_uring_variant(h: &Harness) -> (&'static str, bool) {
    if h.version >= (6, 10) {
        ("pin_user_pages_fast", true)
    } else {
        ("pin_user_pages", false)
    }
}
