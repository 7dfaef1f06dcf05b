//! `pinwatch serve` against a real scrape: after a workload, the counters
//! at /metrics equal the workload's exact expectation, in both formats.

use crate::harness::{get_metrics, harness, pinning_workload, start_pinwatch};

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
    let attach = h.attach_arg();
    let addr = "127.0.0.1:9435";
    let mut serve = start_pinwatch(
        &["serve", "--listen", addr, "--attach", &attach],
        "serving metrics",
    );
    pinning_workload();

    let (head, text) = get_metrics(addr, "text/plain");
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

    let (head, om) = get_metrics(addr, "application/openmetrics-text; version=1.0.0");
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
