//! Memlock limits and accounting per process: an unprivileged process
//! holding an io_uring registration under `ulimit -l` shows its limit and
//! the memory charged to its `pinned_vm`, read from /proc and exported in
//! `/metrics`; one refused beyond it shows the kernel's own verdict.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use pinwatch::{figures::verdicts, limits::MemlockState, probes::Mechanism, snapshot::Snapshot};

use crate::harness::{Harness, get_metrics, harness, pinwatch_bin, sample};
use crate::processes::{start_pinwatch, wait_within};

/// The limit the holder runs under, in KiB (`ulimit -l` counts KiB).
const LIMIT_KB: u64 = 1024;
/// Pages the holder keeps registered.
const PAGES: u64 = 16;
/// A regular user (as in `setcap.rs`): root could raise its limit (the
/// workload does, as root) and io_uring would not charge it.
const USER: u32 = 1000;

#[test]
fn a_holder_shows_its_limit_and_pinned_memory() {
    let h = harness();
    let attach = h.attach_arg();
    let addr = "127.0.0.1:9438";
    let mut serve = start_pinwatch(
        &["serve", "--listen", addr, "--attach", &attach],
        "serving metrics",
    );
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l {LIMIT_KB} && exec \"$0\" workload io-uring-hold --calls 1 --pages {PAGES}"
        ))
        .arg(pinwatch_bin())
        .uid(USER)
        .gid(USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn io-uring-hold");
    let mut out = BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("holding line");
    let pid: u32 = line
        .trim()
        .trim_start_matches("{\"holding\":")
        .trim_end_matches('}')
        .parse()
        .unwrap_or_else(|e| panic!("holding line {line:?}: {e}"));

    let state = MemlockState::read(pid).expect("the holder's /proc");
    let (_, text) = get_metrics(addr, "text/plain");
    let series = |family: &str| {
        sample(
            &text,
            &format!("pinwatch_{family}{{pid=\"{pid}\",comm=\"pinwatch\"}}"),
        )
    };
    let (limit, pinned) = (
        series("process_memlock_limit_bytes"),
        series("process_pinned_bytes"),
    );
    eprintln!(
        "OBSERVED kernel={} io_uring registration of {PAGES} pages under ulimit -l {LIMIT_KB}: /proc {state:?}; /metrics limit={limit:?} pinned={pinned:?}",
        h.release
    );
    let bytes = PAGES * 4096;
    assert_eq!(state.limit, Some(LIMIT_KB << 10));
    assert_eq!(state.pinned, bytes, "io_uring charges pinned_vm");
    assert_eq!(state.pinned_headroom(), Some((LIMIT_KB << 10) - bytes));
    assert!(!state.near_limit());
    assert_eq!(
        (limit, pinned),
        (Some(LIMIT_KB << 10), Some(bytes)),
        "{text}"
    );

    holder
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"unregister\n")
        .expect("unregister");
    let status = wait_within(&mut holder, Duration::from_secs(60), "io-uring-hold");
    assert!(status.success(), "io-uring-hold exited with {status}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut serve, Duration::from_secs(60), "serve after SIGTERM");
    assert!(status.success(), "serve exited with {status}");
}

/// Pages each of two registrations asks for: the first fits the limit
/// (256 pages), the second does not.
const REFUSED_PAGES: u64 = 200;

/// How memlock check `name` is watched on this kernel, as the probes'
/// list says (printed for the record).
fn watched(h: &Harness, name: &str) -> Result<Mechanism, String> {
    let check = h
        .probes
        .checks
        .iter()
        .find(|c| c.check == name)
        .unwrap_or_else(|| panic!("the {name} check is in the probes' list"));
    eprintln!(
        "OBSERVED kernel={} {name} check at {}: {:?}",
        h.release, check.function, check.attached
    );
    check.attached.clone()
}

/// The mechanism a check attached with must be: kprobes when asked for,
/// else fexit (every kernel of the matrix has it for these functions).
/// With kprobe_multi links for the catalogue, the checks are kprobes.
fn expected_mechanism(h: &Harness) -> Mechanism {
    use pinwatch::probes::AttachMode;
    if matches!(h.mode, AttachMode::Kprobe | AttachMode::KprobeMulti) {
        Mechanism::Kprobe
    } else {
        Mechanism::Fentry
    }
}

/// Runs `pinwatch workload ARGS` as [`USER`] under `ulimit -l limit_kb`.
fn workload_as_user(limit_kb: u64, args: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l {limit_kb} && exec \"$0\" workload {args}"
        ))
        .arg(pinwatch_bin())
        .uid(USER)
        .gid(USER)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run workload {args}: {e}"))
}

#[test]
fn a_refused_registration_shows_the_kernels_verdict() {
    let h = harness();
    let io_uring = watched(&h, "io_uring");
    // docs/limits.md: `static inline` up to 5.19, a function from 6.1.
    if h.version < (6, 1) {
        let why = io_uring.expect_err("inlined before 6.1");
        assert!(why.contains("not a function of this kernel"), "{why}");
        return;
    }
    assert_eq!(io_uring, Ok(expected_mechanism(&h)));

    // `stat --json` beside it: the user-facing view of the same refusal.
    let attach = h.attach_arg();
    let stat = start_pinwatch(
        &[
            "stat",
            "--json",
            "--interval",
            "2s",
            "--count",
            "3",
            "--attach",
            &attach,
        ],
        "attached",
    );
    let before = Snapshot::read(h.probes.maps()).expect("snapshot");
    let out = workload_as_user(
        LIMIT_KB,
        &format!("io-uring-hold --calls 2 --pages {REFUSED_PAGES}"),
    );
    let after = Snapshot::read(h.probes.maps()).expect("snapshot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "registration beyond the limit worked"
    );
    // ENOMEM, as the OS error number: its text is the libc's (glibc "Cannot
    // allocate memory", musl "Out of memory").
    assert!(stderr.contains("(os error 12)"), "{stderr}");

    let delta = after.since(&before);
    let found = verdicts(&delta.denials);
    eprintln!("OBSERVED kernel={} verdicts {found:?}", h.release);
    let [v] = found.as_slice() else {
        panic!("one refusal expected: {found:?}");
    };
    let limit_pages = (LIMIT_KB << 10) / 4096;
    assert_eq!(
        (
            v.check.as_str(),
            v.errno.as_str(),
            v.uid,
            v.denials,
            v.pages
        ),
        ("io_uring", "ENOMEM", USER, 1, REFUSED_PAGES)
    );
    assert_eq!(v.limit_bytes, Some(LIMIT_KB << 10));
    // The user's locked_vm at the second registration: the first one's
    // pages; from 6.18 the rings' own regions are charged there too.
    if h.version < (6, 18) {
        assert_eq!(v.counter_pages, REFUSED_PAGES);
    }
    assert!(
        (REFUSED_PAGES..limit_pages).contains(&v.counter_pages),
        "{v:?}"
    );
    // The process's VmPin: the first registration's pages (io_uring
    // charges pinned_vm only once the user's charge passed).
    assert_eq!((v.vm_pinned_pages, v.vm_locked_pages), (REFUSED_PAGES, 0));
    assert_eq!(
        v.shortfall_pages,
        v.counter_pages + REFUSED_PAGES - limit_pages
    );
    let stat = stat.wait_with_output().expect("stat output");
    assert!(
        stat.status.success(),
        "pinwatch stat failed: {}",
        stat.status
    );
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&stat.stdout)
        .lines()
        .flat_map(|line| {
            let view: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            view["limit_verdicts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    eprintln!(
        "OBSERVED kernel={} stat limit_verdicts {shown:?}",
        h.release
    );
    let [shown] = shown.as_slice() else {
        panic!("stat showed one refusal: {shown:?}");
    };
    assert_eq!(
        (
            shown["pid"].as_u64(),
            shown["errno"].as_str(),
            shown["pages"].as_u64(),
            shown["counter_pages"].as_u64(),
            shown["shortfall_pages"].as_u64(),
            shown["vm_pinned_pages"].as_u64(),
        ),
        (
            Some(u64::from(v.pid)),
            Some("ENOMEM"),
            Some(REFUSED_PAGES),
            Some(v.counter_pages),
            Some(v.shortfall_pages),
            Some(REFUSED_PAGES),
        )
    );
    let sentence = v.sentence();
    eprintln!(
        "VERDICT kernel={} pid {} ({}): {sentence}",
        h.release, v.pid, v.comm
    );
    assert!(
        sentence.starts_with(&format!(
            "io_uring charge of {REFUSED_PAGES} pages refused ENOMEM: user locked_vm {} + {REFUSED_PAGES} > RLIMIT_MEMLOCK {limit_pages} pages (1M)",
            v.counter_pages
        )),
        "{sentence}"
    );
}

/// The limit the mlock test runs under, in KiB: 16 pages.
const MLOCK_LIMIT_KB: u64 = 64;
/// Pages the refused mlock asks for (beyond the limit).
const MLOCK_PAGES: u64 = 64;

/// mlock as root of a range with a hole under a soft RLIMIT_MEMLOCK of 0:
/// the numbers pass the limit, but CAP_IPC_LOCK lets `do_mlock` past it
/// and its -ENOMEM is the hole's, which is not a refusal.
fn mlock_with_a_hole() {
    const PAGE: usize = 4096;
    let len = 3 * PAGE;
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: this test's own limit and mapping (the harness lock keeps
    // other tests out meanwhile); both are restored below.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved), 0);
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: saved.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(p != libc::MAP_FAILED);
        assert_eq!(libc::munmap(p.cast::<u8>().add(PAGE).cast(), PAGE), 0);
        assert_eq!(libc::mlock(p, len), -1, "mlock over a hole worked");
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &saved), 0);
        assert_eq!(errno, Some(libc::ENOMEM));
        libc::munmap(p, len);
    }
}

#[test]
fn a_refused_mlock_shows_the_kernels_verdict() {
    let h = harness();
    // `do_mlock` is a function (static, out of line) on every kernel of
    // the matrix (docs/limits.md).
    assert_eq!(watched(&h, "mlock"), Ok(expected_mechanism(&h)));

    let before = Snapshot::read(h.probes.maps()).expect("snapshot");
    mlock_with_a_hole();
    let run =
        |pages: u64| workload_as_user(MLOCK_LIMIT_KB, &format!("mlock --calls 1 --pages {pages}"));
    // Within the limit: locked, no verdict.
    let fits = run(8);
    assert!(fits.status.success(), "{fits:?}");
    let refused = run(MLOCK_PAGES);
    let after = Snapshot::read(h.probes.maps()).expect("snapshot");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "mlock beyond the limit worked");
    assert!(
        stderr.contains("mlock: ") && stderr.contains("(os error 12)"),
        "{stderr}"
    );

    let found = verdicts(&after.since(&before).denials);
    eprintln!("OBSERVED kernel={} mlock verdicts {found:?}", h.release);
    let [v] = found.as_slice() else {
        panic!("one refusal expected (not the hole, not the fitting mlock): {found:?}");
    };
    let limit_pages = (MLOCK_LIMIT_KB << 10) / 4096;
    assert_eq!(
        (
            v.check.as_str(),
            v.errno.as_str(),
            v.uid,
            v.denials,
            v.pages,
            v.counter_pages,
            v.limit_bytes,
            v.shortfall_pages,
            v.vm_locked_pages,
        ),
        (
            "mlock",
            "ENOMEM",
            USER,
            1,
            MLOCK_PAGES,
            0,
            Some(MLOCK_LIMIT_KB << 10),
            MLOCK_PAGES - limit_pages,
            0
        )
    );
    let sentence = v.sentence();
    eprintln!(
        "VERDICT kernel={} pid {} ({}): {sentence}",
        h.release, v.pid, v.comm
    );
    assert!(
        sentence.starts_with(&format!(
            "mlock charge of {MLOCK_PAGES} pages refused ENOMEM: mm locked_vm 0 + {MLOCK_PAGES} > RLIMIT_MEMLOCK {limit_pages} pages (64K), short by 48 pages (192K)"
        )),
        "{sentence}"
    );
}
