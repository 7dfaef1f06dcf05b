//! The integration suite that runs inside the VM matrix (`cargo xtask
//! test`): real probes on a stock kernel, real workloads, exact counts.
//!
//! Each test starts `pinwatch workload ... --wait-stdin`, waits until the
//! workload has set up its buffers, snapshots the maps and /proc/vmstat
//! (flushed with stat_refresh), lets the workload run, waits for it to exit
//! and snapshots again. The difference must equal what the workload
//! reports it did, for the variant the kernel is expected to use, and no
//! other variant may move. FOLL_PIN pages must equal the
//! `nr_foll_pin_acquired` delta, released pages the `nr_foll_pin_released`
//! delta.
//!
//! Needs root and a kernel with kprobes or fentry; run it through
//! `cargo xtask test`, which boots such kernels. Environment:
//! `PINWATCH_ATTACH` (auto|fentry|kprobe), `PINWATCH_BIN` (default
//! `pinwatch` on PATH).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
};

use pin_common::{FUNCS, GUP_FUNC_COUNT};
use pinwatch::{
    kernel::{KernelFacts, parse_version},
    probes::{self, AttachMode, Mechanism, Probes},
    report::IntervalView,
    snapshot::{Delta, Snapshot},
    vmstat,
    workload::WorkloadReport,
};

struct Harness {
    probes: Probes,
    mode: AttachMode,
    version: (u32, u32),
    release: String,
}

fn harness() -> MutexGuard<'static, Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let mode = match std::env::var("PINWATCH_ATTACH").as_deref() {
                Ok("fentry") => AttachMode::Fentry,
                Ok("kprobe") => AttachMode::Kprobe,
                _ => AttachMode::Auto,
            };
            let facts = KernelFacts::discover();
            let probes = probes::attach(&facts, mode).expect("probes attach in the VM");
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
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn id_of(name: &str) -> usize {
    FUNCS
        .iter()
        .position(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in catalogue"))
}

/// Runs one workload between two snapshots.
fn measure(h: &Harness, args: &[&str]) -> (WorkloadReport, Delta) {
    let bin = std::env::var("PINWATCH_BIN").unwrap_or_else(|_| "pinwatch".into());
    let mut child = Command::new(&bin)
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
    let before = Snapshot::read(&h.probes.ebpf).expect("snapshot");
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
    let after = Snapshot::read(&h.probes.ebpf).expect("snapshot");
    let report: WorkloadReport =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("report {line:?}: {e}"));
    (report, after.since(&before))
}

/// What a workload must have produced.
struct Expect {
    variant: &'static str,
    calls: u64,
    pages: u64,
    /// Some(n): the fast path must have fallen back exactly n times.
    fallbacks: Option<u64>,
}

/// Checks a delta against an expectation and prints the comparison line
/// the issue notes quote.
fn check(h: &Harness, workload: &str, report: &WorkloadReport, delta: &Delta, want: Expect) {
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
    eprintln!(
        "OBSERVED kernel={} attach={:?} workload={workload} variant={} calls={}/{} pages={}/{} \
         fallbacks={} fast_pages={} slow_pages={} vmstat_acquired={}/{} released={} vmstat_released={}",
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
        pin_pages,
        "{workload}: vmstat nr_foll_pin_acquired\n{}",
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
            released,
            "{workload}: vmstat nr_foll_pin_released vs unpin probes\n{}",
            dump()
        );
    }
    assert_eq!(
        delta.health, [0; 3],
        "{workload}: probe health counters moved"
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
fn odirect_variant(h: &Harness) -> &'static str {
    if h.version >= (6, 3) {
        "pin_user_pages_fast"
    } else {
        "get_user_pages_fast"
    }
}

/// io_uring pinned with pin_user_pages under mmap_read_lock until
/// io_pin_pages moved to io_uring/memmap.c (6.10), pin_user_pages_fast
/// since. Measured: 6.1 and 6.12.
fn io_uring_variant(h: &Harness) -> (&'static str, bool) {
    if h.version >= (6, 10) {
        ("pin_user_pages_fast", true)
    } else {
        ("pin_user_pages", false)
    }
}

#[test]
fn mechanism_is_the_one_asked_for() {
    let h = harness();
    let want = match h.mode {
        AttachMode::Fentry => Some(Mechanism::Fentry),
        AttachMode::Kprobe => Some(Mechanism::Kprobe),
        AttachMode::Auto => None,
    };
    for st in &h.probes.status {
        if st.symbol.is_some() {
            assert!(
                st.attached.is_some(),
                "{} present but not attached: {:?}",
                st.function,
                st.notes
            );
        }
        if let (Some(want), Some(got)) = (want, st.attached) {
            assert_eq!(got, want, "{}", st.function);
        }
    }
}

#[test]
fn process_vm_readv_unaligned() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "process-vm-readv",
            "--calls",
            "50",
            "--pages",
            "64",
            "--offset",
            "100",
        ],
    );
    assert_eq!(r.pages_per_call, 65);
    check(
        &h,
        "process-vm-readv",
        &r,
        &d,
        Expect {
            variant: "pin_user_pages_remote",
            calls: 50,
            pages: 50 * 65,
            fallbacks: None,
        },
    );
}

#[test]
fn process_vm_writev() {
    let h = harness();
    let (r, d) = measure(&h, &["process-vm-writev", "--calls", "20", "--pages", "16"]);
    check(
        &h,
        "process-vm-writev",
        &r,
        &d,
        Expect {
            variant: "pin_user_pages_remote",
            calls: 20,
            pages: 320,
            fallbacks: None,
        },
    );
}

#[test]
fn odirect_read_warm_takes_the_fast_path() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "odirect-read",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "16",
        ],
    );
    let v = odirect_variant(&h);
    check(
        &h,
        "odirect-read warm",
        &r,
        &d,
        Expect {
            variant: v,
            calls: 20,
            pages: 320,
            fallbacks: Some(0),
        },
    );
}

#[test]
fn odirect_read_cold_falls_back() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "odirect-read",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "16",
            "--cold",
        ],
    );
    let v = odirect_variant(&h);
    check(
        &h,
        "odirect-read cold",
        &r,
        &d,
        Expect {
            variant: v,
            calls: 20,
            pages: 320,
            fallbacks: Some(20),
        },
    );
}

#[test]
fn odirect_write_warm() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "odirect-write",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "8",
        ],
    );
    let v = odirect_variant(&h);
    check(
        &h,
        "odirect-write warm",
        &r,
        &d,
        Expect {
            variant: v,
            calls: 20,
            pages: 160,
            fallbacks: Some(0),
        },
    );
}

#[test]
fn odirect_write_cold_pins_the_zero_page() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "odirect-write",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "8",
            "--cold",
        ],
    );
    assert!(r.zero_page);
    let v = odirect_variant(&h);
    check(
        &h,
        "odirect-write cold",
        &r,
        &d,
        Expect {
            variant: v,
            calls: 20,
            pages: 160,
            fallbacks: Some(20),
        },
    );
}

/// Errors and partial returns, made by this test process itself: a
/// process_vm_readv whose remote range is PROT_NONE from its first page
/// (pin_user_pages_remote returns -EFAULT), then one whose range turns
/// PROT_NONE after two pages. The second makes two GUP calls: the first
/// returns 2 of 4 pages (partial), process_vm_rw_single_vec copies them
/// and asks again for the remaining 2, which fails with -EFAULT.
#[test]
fn errors_and_partial_returns() {
    let h = harness();
    const PAGE: usize = 4096;
    let map = || {
        // SAFETY: a fresh anonymous mapping, used only through syscalls here.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED);
        // SAFETY: writing inside the mapping just made.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, 4 * PAGE) };
        p.cast::<u8>()
    };
    let (local, remote) = (map(), map());
    // SAFETY: changing protection of our own mapping's second half.
    assert_eq!(
        unsafe {
            libc::mprotect(
                remote.wrapping_add(2 * PAGE).cast(),
                2 * PAGE,
                libc::PROT_NONE,
            )
        },
        0
    );
    let readv = |offset: usize, len: usize| -> isize {
        let l = libc::iovec {
            iov_base: local.cast(),
            iov_len: len,
        };
        let r = libc::iovec {
            iov_base: remote.wrapping_add(offset).cast(),
            iov_len: len,
        };
        // SAFETY: both ranges lie in our own mappings.
        unsafe { libc::process_vm_readv(std::process::id() as i32, &l, 1, &r, 1, 0) }
    };
    vmstat::refresh().expect("stat_refresh");
    let before = Snapshot::read(&h.probes.ebpf).expect("snapshot");
    let efault = readv(2 * PAGE, 2 * PAGE);
    let errno = std::io::Error::last_os_error().raw_os_error();
    let partial = readv(0, 4 * PAGE);
    vmstat::refresh().expect("stat_refresh");
    let d = Snapshot::read(&h.probes.ebpf)
        .expect("snapshot")
        .since(&before);
    assert_eq!((efault, errno), (-1, Some(libc::EFAULT)));
    assert_eq!(
        partial,
        (2 * PAGE) as isize,
        "process_vm_readv copies what was pinned"
    );
    let got = &d.gup[id_of("pin_user_pages_remote")];
    let view = IntervalView::new(&d);
    let v = view
        .variants
        .iter()
        .find(|v| v.variant == "pin_user_pages_remote")
        .expect("variant in view");
    let acquired = d.vmstat.map(|v| v.nr_foll_pin_acquired).unwrap_or(0);
    eprintln!(
        "OBSERVED kernel={} attach={:?} workload=errors-and-partial variant=pin_user_pages_remote calls={}/3 pages={}/2 partial={}/1 errors={}/2 errno={:?} vmstat_acquired={acquired}/2",
        h.release, h.mode, got.calls, got.pages_returned, got.partial, got.errors, v.errno,
    );
    assert_eq!(got.calls, 3);
    assert_eq!(got.pages_requested, 2 + 4 + 2);
    assert_eq!(got.pages_returned, 2);
    assert_eq!(got.partial, 1);
    assert_eq!(got.errors, 2);
    assert_eq!(v.errno.get("EFAULT"), Some(&2), "{:?}", v.errno);
    assert_eq!(acquired, 2);
}

#[test]
fn io_uring_register_pins_longterm() {
    let h = harness();
    let (r, d) = measure(&h, &["io-uring-register", "--calls", "20", "--pages", "16"]);
    let (variant, fast) = io_uring_variant(&h);
    let fallbacks = fast.then_some(0);
    check(
        &h,
        "io-uring-register",
        &r,
        &d,
        Expect {
            variant,
            calls: 20,
            pages: 320,
            fallbacks,
        },
    );
}

#[test]
fn io_uring_register_cold_falls_back() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &[
            "io-uring-register",
            "--calls",
            "10",
            "--pages",
            "16",
            "--cold",
        ],
    );
    let (variant, fast) = io_uring_variant(&h);
    let fallbacks = fast.then_some(10);
    check(
        &h,
        "io-uring-register cold",
        &r,
        &d,
        Expect {
            variant,
            calls: 10,
            pages: 160,
            fallbacks,
        },
    );
}

#[test]
fn vmsplice_gets_in_16_page_batches() {
    let h = harness();
    let (r, d) = measure(&h, &["vmsplice", "--calls", "20", "--pages", "32"]);
    // iter_to_pipe takes at most 16 pages per iov_iter_get_pages2 call.
    let per_call = r.pages_per_call.div_ceil(16);
    check(
        &h,
        "vmsplice",
        &r,
        &d,
        Expect {
            variant: "get_user_pages_fast",
            calls: 20 * per_call,
            pages: 20 * 32,
            fallbacks: Some(0),
        },
    );
}

#[test]
fn proc_mem_read_gets_one_page_per_call() {
    let h = harness();
    let (r, d) = measure(&h, &["proc-mem-read", "--calls", "10", "--pages", "8"]);
    // access_remote_vm takes one page per get_user_pages_remote call.
    check(
        &h,
        "proc-mem-read",
        &r,
        &d,
        Expect {
            variant: "get_user_pages_remote",
            calls: 80,
            pages: 80,
            fallbacks: None,
        },
    );
}

#[test]
fn shared_futex_wake() {
    let h = harness();
    let (r, d) = measure(&h, &["futex-wake", "--calls", "50"]);
    check(
        &h,
        "futex-wake",
        &r,
        &d,
        Expect {
            variant: "get_user_pages_fast",
            calls: 50,
            pages: 50,
            fallbacks: Some(0),
        },
    );
}

#[test]
fn madv_populate_write() {
    let h = harness();
    let (r, d) = measure(
        &h,
        &["populate", "--calls", "10", "--pages", "16", "--cold"],
    );
    check(
        &h,
        "populate",
        &r,
        &d,
        Expect {
            variant: "__get_user_pages",
            calls: 10,
            pages: 160,
            fallbacks: None,
        },
    );
}

#[test]
fn mlock_populates() {
    let h = harness();
    let (r, d) = measure(&h, &["mlock", "--calls", "10", "--pages", "16"]);
    check(
        &h,
        "mlock",
        &r,
        &d,
        Expect {
            variant: "__get_user_pages",
            calls: 10,
            pages: 160,
            fallbacks: None,
        },
    );
}

/// The user-facing command: `pinwatch stat --json` sees a workload run
/// beside it, and its totals agree with the workload.
#[test]
fn stat_json_sees_a_workload() {
    let h = harness();
    let bin = std::env::var("PINWATCH_BIN").unwrap_or_else(|_| "pinwatch".into());
    let attach = format!("{:?}", h.mode).to_lowercase();
    let stat = Command::new(&bin)
        .args([
            "stat",
            "--json",
            "--interval",
            "2s",
            "--count",
            "3",
            "--attach",
            &attach,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pinwatch stat");
    // Wait until it counts, then run a workload whose total fits in the window.
    let mut stat = stat;
    let mut err = BufReader::new(stat.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("stat start line");
    assert!(
        line.contains("attached"),
        "pinwatch stat did not start: {line:?}"
    );
    let status = Command::new(&bin)
        .args([
            "workload",
            "process-vm-writev",
            "--calls",
            "25",
            "--pages",
            "4",
        ])
        .status()
        .expect("workload");
    assert!(status.success());
    let out = stat.wait_with_output().expect("stat output");
    assert!(out.status.success(), "pinwatch stat failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut calls = 0;
    let mut pages = 0;
    let mut lines = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        lines += 1;
        for variant in v["variants"].as_array().expect("variants") {
            if variant["variant"] == "pin_user_pages_remote" {
                calls += variant["calls"].as_u64().unwrap_or(0);
                pages += variant["pages"].as_u64().unwrap_or(0);
            }
        }
    }
    eprintln!(
        "OBSERVED kernel={} attach={:?} workload=stat --json lines={lines} pin_user_pages_remote calls={calls}/25 pages={pages}/100",
        h.release, h.mode
    );
    assert_eq!(lines, 3, "three intervals");
    assert_eq!((calls, pages), (25, 100), "stat totals:\n{text}");
}
