//! Memlock limits and accounting per process: an unprivileged process
//! holding an io_uring registration under `ulimit -l` shows its limit and
//! the memory charged to its `pinned_vm`, read from /proc and exported in
//! `/metrics`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use pinwatch::limits::MemlockState;

use crate::harness::{get_metrics, harness, pinwatch_bin, sample, start_pinwatch, wait_within};

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
