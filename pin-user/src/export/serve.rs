//! `pinwatch serve`: the metrics of [`super::metrics`] over HTTP at
//! `/metrics`, OpenMetrics when the scraper asks for it (Accept header),
//! the classic Prometheus text format otherwise. Loopback by default. In
//! reduced mode, the metrics of [`super::reduced_metrics`].

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, header, service::service_fn};
use hyper_util::rt::TokioIo;
use pin_common::{FUNCS, PROCS_CAPACITY};

use super::metrics::{MetricsInput, openmetrics, prometheus_text};
use crate::{
    kernel::KernelFacts,
    probes::{AttachOptions, Probes},
    reduced::{self, ReducedReason, ReducedSample, Source},
    snapshot::Snapshot,
};

/// What `pinwatch serve` was asked to do.
pub struct ServeOptions {
    /// Probe mechanism.
    pub attach: AttachOptions,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Ask the kernel to keep BPF run-time statistics while serving.
    pub bpf_stats: bool,
    /// Serve reduced-mode metrics even if probes could attach.
    pub reduced: bool,
}

/// What a scrape reads.
enum Scraped {
    /// The probes' maps.
    Probes(Box<Mutex<Probes>>),
    /// Reduced mode: /proc, no probes.
    Reduced(ReducedReason),
}

/// Reads everything one scrape exports.
pub fn collect(probes: &Probes, with_run_stats: bool) -> anyhow::Result<MetricsInput> {
    let snapshot = Snapshot::read(&probes.ebpf)?;
    // Per-thread state lives in task local storage, freed with each
    // thread: nothing to fill up, and the kernel cannot list it.
    let map_fill = vec![(
        "PROCS",
        snapshot.procs.len() as u64,
        u64::from(PROCS_CAPACITY),
    )];
    let mut run_stats: Vec<(&'static str, u64, u64)> = Vec::new();
    if with_run_stats {
        for (name, prog) in probes.ebpf.programs() {
            let Some(id) = name
                .rsplit('_')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(func) = FUNCS.get(id) else { continue };
            let Ok(info) = prog.info() else { continue }; // not loaded
            let (ns, runs) = (info.run_time().as_nanos() as u64, info.run_count());
            match run_stats.iter_mut().find(|(f, _, _)| *f == func.name) {
                Some(entry) => {
                    entry.1 += ns;
                    entry.2 += runs;
                }
                None => run_stats.push((func.name, ns, runs)),
            }
        }
    }
    Ok(MetricsInput {
        snapshot,
        probes: probes.status.clone(),
        map_fill,
        run_stats,
    })
}

/// Whether the Accept header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

fn respond(
    scraped: &Scraped,
    with_run_stats: bool,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let text = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    match req.uri().path() {
        "/metrics" => {}
        "/" => return text(200, "pinwatch: metrics at /metrics\n".into()),
        _ => return text(404, "not found; metrics are at /metrics\n".into()),
    }
    let exposition = match scraped {
        Scraped::Probes(probes) => {
            let probes = probes.lock().unwrap_or_else(|e| e.into_inner());
            collect(&probes, with_run_stats)
                .map(openmetrics)
                .map_err(|e| format!("reading pinwatch's maps failed: {e:#}"))
        }
        Scraped::Reduced(reason) => ReducedSample::read()
            .map(|sample| super::reduced_metrics::openmetrics(&sample, reason))
            .map_err(|e| format!("reading the kernel's counters failed: {e}")),
    };
    let exposition = match exposition {
        Ok(exposition) => exposition,
        Err(e) => return text(500, format!("{e}\n")),
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = if wants_openmetrics(accept) {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            exposition,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&exposition),
        )
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// Serves until SIGINT, SIGTERM or SIGHUP.
pub fn run(opts: ServeOptions) -> anyhow::Result<ExitCode> {
    let facts = KernelFacts::discover();
    let scraped = match reduced::attach_or_reduce(&facts, opts.attach, opts.reduced)? {
        Source::Probes(probes) => Scraped::Probes(Box::new(Mutex::new(*probes))),
        Source::Reduced(reason) => Scraped::Reduced(reason),
    };
    // Kept for as long as we serve: dropping the fd turns the stats off.
    let _stats = if opts.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling BPF run-time statistics (--bpf-stats)")?,
        )
    } else {
        None
    };
    let with_run_stats = opts.bpf_stats
        || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
    // Bound before privileges go, so a port below 1024 still works.
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    if let Scraped::Probes(probes) = &scraped {
        probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shed_privileges(&Default::default())?;
    }
    let scraped = Arc::new(scraped);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        eprintln!(
            "pinwatch: serving metrics at http://{}/metrics",
            listener.local_addr()?
        );
        let mut stop_signals = crate::signals::StopSignals::new()?;
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted.context("accepting a connection")?,
                _ = stop_signals.recv() => break,
            };
            let scraped = Arc::clone(&scraped);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = respond(&scraped, with_run_stats, &req);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    log::debug!("connection: {e}");
                }
            });
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
