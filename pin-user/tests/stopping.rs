//! How the `pinwatch` binary's long-running commands stop and end, with no
//! kernel probes (reduced mode): stop signals at any moment, even at
//! start-up and inherited as ignored; the default Ctrl-C of short
//! commands; complete recordings whatever ends `record`; `record` killing
//! a command that ignores SIGTERM; and `serve` under a flood of idle
//! connections or out of file descriptors.
//!
//! Every wait on a child here is bounded: a hung pinwatch fails its test
//! (killed) instead of hanging the run.

mod common;
#[path = "common/signals.rs"]
mod signals;
use signals::holds_signal;

use std::{
    io::{Read as _, Write as _},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::Command,
    time::{Duration, Instant},
};

use common::{HANG, Pinwatch, STOP_BOUND, run_to_end, scrape, start_reduced_serve};
use pinwatch::export::record::Record;

#[test]
fn reduced_stat_is_labelled_and_ends_on_each_signal() {
    let out = run_to_end(&[
        "stat",
        "--reduced",
        "--json",
        "--count",
        "2",
        "--interval",
        "50ms",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    for line in &lines {
        assert_eq!(line["mode"], "reduced");
        assert!(line["vmstat"]["nr_foll_pin_acquired"].is_u64(), "{line}");
        // No per-variant figure exists in reduced mode, not even as zero.
        assert!(line.get("variants").is_none(), "{line}");
    }
    assert_eq!(
        out.stderr.matches("reduced mode").count(),
        1,
        "{}",
        out.stderr
    );

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // Whenever the signal lands (before or after the loop starts: on a
        // loaded machine 300 ms may still be start-up), it ends the run.
        let mut stat = Pinwatch::run(&["stat", "--reduced", "--interval", "1h"]);
        std::thread::sleep(Duration::from_millis(300));
        stat.signal(sig);
        let out = stat.finish(STOP_BOUND, &format!("stat after signal {sig}"));
        assert_eq!(out.status.code(), Some(0), "signal {sig}: {}", out.stderr);
        // The interval cut short by the signal is still reported.
        assert!(out.stdout.contains("[reduced mode"), "signal {sig}");
    }
}

#[test]
fn stop_signal_at_start_up_is_not_lost_even_if_ignored() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // As a non-interactive shell starts a background job: SIGINT
        // ignored (here each stop signal in turn).
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinwatch"));
        cmd.args(["stat", "--reduced", "--json", "--interval", "1h"]);
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(sig, libc::SIG_IGN);
                Ok(())
            })
        };
        let mut stat = Pinwatch::start(&mut cmd);
        // The earliest moment a program can keep the signal: when its own
        // code first runs (it blocks the stop signals first thing in
        // `main`). Before that, in the dynamic loader, an ignored signal
        // is discarded by the kernel whatever the program does. Polled
        // without pause, so the signal lands in the first milliseconds of
        // start-up, long before the loop (or any probe) could start.
        let spawned = Instant::now();
        while !holds_signal(stat.pid() as u32, sig) {
            assert!(stat.running(), "signal {sig}: pinwatch ended early");
            assert!(
                spawned.elapsed() < HANG,
                "signal {sig}: pinwatch never blocked or caught it"
            );
            std::thread::yield_now();
        }
        let sent = Instant::now();
        stat.signal(sig);
        let out = stat.finish(STOP_BOUND, &format!("stat after early signal {sig}"));
        let took = sent.elapsed();
        eprintln!(
            "signal {sig} {:?} after spawn: exit {:?} {took:?} later",
            sent - spawned,
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(0), "signal {sig}: {}", out.stderr);
        // Reduced mode starts counting at once: the (empty) interval the
        // signal ended is reported.
        assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    }
}

#[test]
fn short_commands_keep_the_default_ctrl_c() {
    // A workload is not a long-running command: SIGINT ends it at once,
    // by the default action (set here: this test may itself run as a
    // background job, with SIGINT ignored).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinwatch"));
    cmd.args(["workload", "process-vm-writev", "--calls", "1"])
        .arg("--wait-stdin");
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        })
    };
    let mut workload = Pinwatch::start(&mut cmd);
    workload.wait_for_stdout("\"ready\"", HANG);
    workload.signal(libc::SIGINT);
    let out = workload.finish(STOP_BOUND, "workload after SIGINT");
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{}", out.stderr);
}

#[test]
fn reduced_record_is_complete_whatever_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reduced.json");
    let p = path.display().to_string();
    let out = run_to_end(&[
        "record",
        "--reduced",
        "-o",
        &p,
        "--interval",
        "50ms",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "the command's exit status");
    let rec = Record::read(&path).expect("a valid recording");
    assert!(rec.meta.reduced.is_some());
    assert!(rec.counts.totals.is_empty());
    assert!(rec.intervals.len() >= 3, "{}", rec.intervals.len());
    let sum: u64 = rec
        .intervals
        .iter()
        .map(|i| i.counts.vmstat.unwrap().nr_foll_pin_acquired)
        .sum();
    assert_eq!(sum, rec.counts.vmstat.unwrap().nr_foll_pin_acquired);

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        std::fs::remove_file(&path).ok();
        let mut record = Pinwatch::run(&["record", "--reduced", "-o", &p, "--interval", "50ms"]);
        std::thread::sleep(Duration::from_millis(400));
        record.signal(sig);
        let out = record.finish(STOP_BOUND, &format!("record after signal {sig}"));
        assert_eq!(out.status.code(), Some(0), "signal {sig}: {}", out.stderr);
        let rec = Record::read(&path).expect("complete JSON after a signal");
        assert!(!rec.intervals.is_empty(), "signal {sig}");
    }

    let csv = dir.path().join("reduced.csv");
    let c = csv.display().to_string();
    let out = run_to_end(&[
        "record",
        "--reduced",
        "--format",
        "csv",
        "--duration",
        "100ms",
        "--interval",
        "50ms",
        "-o",
        &c,
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("interval,t_s,duration_s,nr_foll_pin_acquired,nr_foll_pin_released\n"),
        "{text}"
    );
    assert!(text.contains("\ntotal,"), "{text}");
}

/// A command that ignores SIGTERM, as `record -- CMD` runs it; it says
/// when it does. Its sleeps are short: one may outlive the shell by that
/// long, holding the output.
const IGNORES_SIGTERM: &str = "trap '' TERM; echo ignoring SIGTERM; while :; do sleep 0.1; done";

/// How long after its end (duration or signal) record may take with a
/// command that ignores SIGTERM: the 2 s grace before SIGKILL, then the
/// final sample and the file; 15 s covers a loaded machine.
const RECORD_END_BOUND: Duration = Duration::from_secs(15);

#[test]
fn record_kills_a_command_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stubborn.json");
    let p = path.display().to_string();
    let base = ["record", "--reduced", "-o", &p, "--interval", "50ms"];
    let command = ["--", "sh", "-c", IGNORES_SIGTERM];

    // Ended by --duration.
    let args: Vec<&str> = base
        .iter()
        .chain(&["--duration", "1s"])
        .chain(&command)
        .copied()
        .collect();
    let mut record = Pinwatch::run(&args);
    let started = Instant::now();
    let out = record.finish(HANG, "record --duration with a command ignoring SIGTERM");
    let took = started.elapsed();
    assert!(took < RECORD_END_BOUND, "took {took:?}");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("sending SIGKILL"), "{}", out.stderr);
    let rec = Record::read(&path).expect("the recording is written");
    assert_eq!(rec.meta.exit_status, Some(128 + libc::SIGKILL));

    // Ended by SIGTERM to pinwatch; then by two stop signals, the second
    // skipping the grace period.
    for signals in [1, 2] {
        std::fs::remove_file(&path).ok();
        let args: Vec<&str> = base.iter().chain(&command).copied().collect();
        let mut record = Pinwatch::run(&args);
        record.wait_for_stdout("ignoring SIGTERM", HANG);
        record.signal(libc::SIGTERM);
        if signals == 2 {
            std::thread::sleep(Duration::from_millis(200));
            record.signal(libc::SIGINT);
        }
        let sent = Instant::now();
        let out = record.finish(HANG, &format!("record after {signals} signal(s)"));
        let took = sent.elapsed();
        eprintln!(
            "{signals} signal(s): exit {:?} {took:?} after the last",
            out.status
        );
        assert!(took < RECORD_END_BOUND, "took {took:?}");
        if signals == 2 {
            // Well inside the 2 s grace: the second signal escalated.
            assert!(took < Duration::from_millis(1500), "took {took:?}");
        }
        assert_eq!(
            out.status.code(),
            Some(128 + libc::SIGKILL),
            "{}",
            out.stderr
        );
        let rec = Record::read(&path).expect("the recording is written");
        assert_eq!(rec.meta.exit_status, Some(128 + libc::SIGKILL));
        assert!(!rec.intervals.is_empty());
    }
}

/// Raises this process's open-file limit so it can hold `want` more
/// descriptors (root may raise the hard limit too); returns how many it
/// may hold.
fn raise_own_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let need = want + 256;
        limit.rlim_cur = limit.rlim_cur.max(need.min(limit.rlim_max));
        if limit.rlim_cur < need {
            limit.rlim_cur = need;
            limit.rlim_max = limit.rlim_max.max(need);
        }
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur.saturating_sub(256).min(want)
}

/// How soon a scrape must be answered while idle connections crowd the
/// server: it sheds the oldest idle connection for the new one at once,
/// and a reduced scrape is one /proc scan (milliseconds); 10 s leaves
/// room for a loaded machine.
const SCRAPE_BOUND: Duration = Duration::from_secs(10);

#[test]
fn serve_outlasts_a_flood_of_idle_connections() {
    // The usual default soft limit (1024), at which ~1000 idle connections
    // used to end serve with EMFILE; the hard limit stays as it is.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinwatch"));
    // SAFETY: getrlimit and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max.min(1024);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        })
    };
    let (mut serve, addr) = start_reduced_serve(&mut cmd);
    // Twice the ~1000 that used to end it with EMFILE.
    let wanted = raise_own_fd_limit(2000);
    let socket: std::net::SocketAddr = addr.parse().unwrap();
    let flood_started = Instant::now();
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..wanted {
        match std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5)) {
            Ok(conn) => idle.push(conn),
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "{} idle connections opened ({refused} not) in {:?}",
        idle.len(),
        flood_started.elapsed()
    );
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    assert!(serve.running(), "serve died under the flood");
    let asked = Instant::now();
    let body = scrape(&addr, SCRAPE_BOUND);
    eprintln!("scrape answered in {:?}", asked.elapsed());
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.contains("pinwatch_mode_info"), "{body}");
    assert!(serve.running(), "serve died under the flood");
    drop(idle);
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish(STOP_BOUND, "serve").status.code(), Some(0));
}

#[test]
fn serve_keeps_serving_when_out_of_file_descriptors() {
    let (mut serve, addr) = start_reduced_serve(&mut Command::new(env!("CARGO_BIN_EXE_pinwatch")));
    let pid = serve.pid();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on our own child with a valid struct.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) },
        0
    );
    // Every new descriptor fails with EMFILE (0, 1 and 2 are open).
    let starved = libc::rlimit {
        rlim_cur: 3,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &starved, std::ptr::null_mut()) },
        0
    );
    // Waits in the listen queue while accept fails.
    let socket: std::net::SocketAddr = addr.parse().unwrap();
    let mut conn = std::net::TcpStream::connect_timeout(&socket, HANG).expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(serve.running(), "serve ended on EMFILE");
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) },
        0
    );
    conn.set_read_timeout(Some(SCRAPE_BOUND)).unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body)
        .expect("answered once descriptors are back");
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish(STOP_BOUND, "serve").status.code(), Some(0));
}
