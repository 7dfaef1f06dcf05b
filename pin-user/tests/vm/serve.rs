//! `pinwatch serve` against a real scrape: after a workload, the counters
//! at /metrics equal the workload's exact expectation, in both formats.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
};

use crate::harness::{harness, pinwatch_bin, start_pinwatch};

/// One HTTP/1.1 GET; returns (headers, body).
fn get(addr: &str, accept: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to pinwatch serve");
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

fn sample(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn serve_exports_exact_counters() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    let addr = "127.0.0.1:9435";
    let mut serve = start_pinwatch(
        &["serve", "--listen", addr, "--attach", &attach],
        "serving metrics",
    );
    let status = Command::new(&bin)
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

    let (head, text) = get(addr, "text/plain");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let calls = sample(
        &text,
        "pinwatch_gup_calls_total{variant=\"pin_user_pages_remote\"}",
    );
    let pages = sample(
        &text,
        "pinwatch_gup_pages_total{variant=\"pin_user_pages_remote\",outcome=\"returned\"}",
    );
    let unpinned = sample(
        &text,
        "pinwatch_unpin_pages_total{function=\"unpin_user_pages_dirty_lock\"}",
    );
    eprintln!(
        "OBSERVED kernel={} attach={attach} workload=serve /metrics pin_user_pages_remote calls={calls:?}/30 pages={pages:?}/240 unpinned={unpinned:?}/240",
        h.release
    );
    assert_eq!(
        (calls, pages, unpinned),
        (Some(30), Some(240), Some(240)),
        "{text}"
    );
    assert!(
        text.contains("pinwatch_probe_info{function=\"pin_user_pages_remote\",attach="),
        "{text}"
    );

    let (head, om) = get(addr, "application/openmetrics-text; version=1.0.0");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert_eq!(
        sample(
            &om,
            "pinwatch_gup_calls_total{variant=\"pin_user_pages_remote\"}"
        ),
        Some(30)
    );

    // SIGTERM ends it cleanly.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}
