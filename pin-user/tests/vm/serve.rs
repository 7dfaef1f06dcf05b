//! `pinwatch serve` against a real scrape: after a workload, the counters
//! at /metrics equal the workload's exact expectation, in both formats;
//! thousands of idle connections neither take it down nor keep a scrape
//! out.

use std::time::{Duration, Instant};

use crate::harness::{get_metrics, harness, pinning_workload, raise_fd_limit, sample};
use crate::processes::{start_pinwatch, wait_within};

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
    // Its own maps' kernel memory (the server's maps, not the harness's):
    // PROCS is charged on every kernel, estimated or not.
    let procs_memory = sample(&text, "pinwatch_map_memory_bytes{map=\"PROCS\"}");
    eprintln!("OBSERVED serve PROCS map memory {procs_memory:?}");
    assert!(procs_memory.is_some_and(|b| b > 0), "{text}");

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
    let status = wait_within(&mut serve, STOP_WITHIN, "serve after SIGTERM");
    assert!(status.success(), "serve exited with {status}");
}

/// How soon serve must exit after SIGTERM: detaching waits for RCU-tasks
/// grace periods, seconds under TCG.
const STOP_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn serve_outlasts_a_flood_of_idle_connections() {
    let h = harness();
    let attach = h.attach_arg();
    let addr = "127.0.0.1:9436";
    let mut serve = start_pinwatch(
        &["serve", "--listen", addr, "--attach", &attach],
        "serving metrics",
    );
    // Twice the ~1000 that used to end it (EMFILE), detaching the probes.
    let wanted = 2000;
    raise_fd_limit(wanted);
    let socket: std::net::SocketAddr = addr.parse().unwrap();
    let flood = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..wanted {
        if let Ok(conn) = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5)) {
            idle.push(conn);
        }
    }
    let flood_took = flood.elapsed();
    assert!(
        serve.try_wait().unwrap().is_none(),
        "serve died under the flood"
    );
    pinning_workload();
    // Answered while the flood's connections are still open: serve sheds
    // the oldest idle one for the scrape.
    let asked = Instant::now();
    let (_, text) = get_metrics(addr, "text/plain");
    let answered = asked.elapsed();
    let calls = sample(
        &text,
        "pinwatch_gup_calls_total{variant=\"pin_user_pages_remote\"}",
    );
    let probe_info =
        text.contains("pinwatch_probe_info{function=\"pin_user_pages_remote\",attach=");
    eprintln!(
        "OBSERVED kernel={} attach={attach} serve under {} idle connections (opened in {:.1}s): \
         scrape answered in {:.2}s, pin_user_pages_remote calls={calls:?}/30, probe info: {probe_info}",
        h.release,
        idle.len(),
        flood_took.as_secs_f64(),
        answered.as_secs_f64()
    );
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    assert_eq!(calls, Some(30), "{text}");
    assert!(probe_info, "{text}");
    assert!(
        serve.try_wait().unwrap().is_none(),
        "serve died under the flood"
    );
    drop(idle);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut serve, STOP_WITHIN, "serve after SIGTERM");
    assert!(status.success(), "serve exited with {status}");
}
