//! `pinwatch serve`: the metrics of [`super::metrics`] over HTTP at
//! `/metrics`, OpenMetrics when the scraper asks for it (Accept header),
//! the classic Prometheus text format otherwise. Loopback by default. In
//! reduced mode, the metrics of [`super::reduced_metrics`].
//!
//! Clients cannot take it down: each connection must send its request head
//! within [`HEADER_READ_TIMEOUT`] and lives at most [`CONNECTION_LIFETIME`],
//! at most [`MAX_CONNECTIONS`] are served at once (a new one sheds the
//! oldest that is not being answered), and running out of file
//! descriptors while accepting only pauses accepting.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Request, Response,
    body::{Body, Bytes, Frame, SizeHint},
    header,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_common::maps;

use super::metrics::{MetricsInput, openmetrics, prometheus_text};
use crate::{
    kernel::KernelFacts,
    probes::{AttachOptions, Probes},
    reduced::{self, Mode, ReducedReason, ReducedSample},
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

impl Scraped {
    /// One scrape's OpenMetrics exposition, or why there is none.
    fn exposition(&self, with_run_stats: bool) -> Result<String, String> {
        match self {
            Self::Probes(probes) => {
                let probes = probes.lock().unwrap_or_else(|e| e.into_inner());
                collect(&probes, with_run_stats)
                    .map(openmetrics)
                    .map_err(|e| format!("reading pinwatch's maps failed: {e:#}"))
            }
            Self::Reduced(reason) => ReducedSample::read()
                .map(|sample| super::reduced_metrics::openmetrics(&sample, reason))
                .map_err(|e| format!("reading the kernel's counters failed: {e}")),
        }
    }
}

/// Reads everything one scrape exports.
pub fn collect(probes: &Probes, with_run_stats: bool) -> anyhow::Result<MetricsInput> {
    // Before this scrape allocates anything: what the agent keeps between
    // scrapes (it keeps no snapshot; caches and connections only).
    let agent_heap_bytes = crate::agent_memory::heap_in_use();
    let snapshot = Snapshot::read(probes.maps())?;
    // Per-thread state lives in task local storage, freed with each
    // thread: nothing to fill up, and the kernel cannot list it.
    let sizes = probes.capacities;
    let fill = |map, entries: usize, capacity: u32| (map, entries as u64, u64::from(capacity));
    let mut map_fill = vec![
        fill(maps::PROCS, snapshot.procs.len(), sizes.procs),
        fill(maps::CGROUPS, snapshot.cgroups.len(), sizes.cgroups),
    ];
    if probes.callers {
        map_fill.push(fill(
            maps::CALLERS,
            snapshot.callers.len(),
            sizes.call_sites,
        ));
    }
    let run_stats = if with_run_stats {
        probes.run_stats()
    } else {
        Vec::new()
    };
    Ok(MetricsInput {
        sites: crate::attribution::name_sites(&snapshot.callers),
        cgroup_names: crate::cgroups::resolve(snapshot.cgroups.keys().copied()),
        // /proc unreadable: no holders rather than no scrape.
        memlock: crate::limits::top_holders(super::memlock_metrics::MAX_HOLDER_SERIES)
            .unwrap_or_default(),
        snapshot,
        probes: probes.status.clone(),
        map_fill,
        // Read at attach, before privileges were dropped; fdinfo
        // unreadable then: no memory figures rather than no scrape.
        map_memory: probes.map_memory.clone().unwrap_or_default(),
        run_stats,
        agent_heap_bytes,
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
    let exposition = scraped.exposition(with_run_stats);
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

/// Connections served at once (fewer when file descriptors are short; see
/// [`connection_cap`]). Scrapers use one or two.
pub const MAX_CONNECTIONS: usize = 64;

/// How soon a client must send a whole request head, after connecting or
/// after its previous response: an idle connection is closed then.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection is served; a request in flight then gets
/// [`SHUTDOWN_GRACE`] more.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long a request in flight may still take when its connection is
/// shut down for age.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The pause after a failed accept (out of file descriptors, say) before
/// trying again: the pending connection keeps the listener readable, so an
/// immediate retry would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// File descriptors kept out of reach of connections: the async runtime
/// opens a few after they are counted, and a scrape opens files of its own
/// (/proc in reduced mode).
const FD_RESERVE: u64 = 32;

/// Raises the soft limit on open files to the hard limit (no privilege
/// needed): the probes hold many descriptors, and connections need some.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::debug!("raising RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// How many connections to serve at once: [`MAX_CONNECTIONS`], or fewer
/// when the open-file limit leaves less room beside what is open already
/// and [`FD_RESERVE`]. At least one.
fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return MAX_CONNECTIONS;
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let room = limit.rlim_cur.saturating_sub(open + FD_RESERVE);
    usize::try_from(room).map_or(MAX_CONNECTIONS, |room| room.clamp(1, MAX_CONNECTIONS))
}

/// Whether an accept error leaves the listener usable, so serving goes on:
/// out of file descriptors or memory, a connection reset before it was
/// accepted, a firewall's refusal. Only a broken listener is fatal.
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// One connection being served.
struct Live {
    /// Set while a response is being produced and written.
    busy: Arc<AtomicBool>,
    /// Ends the connection's task (closing its socket).
    task: tokio::task::AbortHandle,
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Connections {
    next_id: u64,
    live: BTreeMap<u64, Live>,
}

type Registry = Arc<Mutex<Connections>>;

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, Connections> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the oldest connection not being answered (a scraper sends its
/// request as it connects, so the idle ones are the stale or hostile);
/// returns whether there was one.
fn shed_oldest_idle(registry: &Registry) -> bool {
    let shed = {
        let mut conns = lock(registry);
        let id = conns
            .live
            .iter()
            .find(|(_, c)| !c.busy.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        id.and_then(|id| conns.live.remove(&id))
    };
    // Aborted outside the lock: the task's `Leave` takes it when dropped.
    match shed {
        Some(conn) => {
            conn.task.abort();
            true
        }
        None => false,
    }
}

/// Takes a connection out of the registry when its task ends, however.
struct Leave {
    registry: Registry,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        lock(&self.registry).live.remove(&self.id);
    }
}

/// Clears a connection's busy flag when dropped.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection marked busy until hyper is
/// done writing it (and drops it), so it is not shed mid-response.
struct Answer {
    body: Full<Bytes>,
    _busy: Busy,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves one connection until the client closes it, stays silent past
/// [`HEADER_READ_TIMEOUT`], or it reaches [`CONNECTION_LIFETIME`].
async fn serve_connection(
    stream: tokio::net::TcpStream,
    http: hyper::server::conn::http1::Builder,
    scraped: Arc<Scraped>,
    with_run_stats: bool,
    busy: Arc<AtomicBool>,
    _leave: Leave,
) {
    let service = service_fn(move |req| {
        busy.store(true, Ordering::Relaxed);
        let response = respond(&scraped, with_run_stats, &req).map(|body| Answer {
            body,
            _busy: Busy(Arc::clone(&busy)),
        });
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            // Finishes a response in flight, then closes.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    log::debug!("connection: closed at its time limit");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        log::debug!("connection: {e}");
    }
}

/// Serves until SIGINT, SIGTERM or SIGHUP.
pub fn run(opts: ServeOptions) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    let mut facts = KernelFacts::discover();
    let scraped = match reduced::attach_or_reduce(&facts, opts.attach, opts.reduced)? {
        Mode::Probes(probes) => Scraped::Probes(Box::new(Mutex::new(*probes))),
        Mode::Reduced(reason) => Scraped::Reduced(reason),
    };
    facts.release_btf();
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
    // Counted while /proc/self/fd is still readable: shedding privileges
    // makes it root's.
    let cap = connection_cap();
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
    runtime.block_on(accept_until_stopped(listener, scraped, with_run_stats, cap))?;
    Ok(ExitCode::SUCCESS)
}

/// Accepts connections, at most `cap` served at once, each in a task of
/// its own, until a stop signal.
async fn accept_until_stopped(
    listener: std::net::TcpListener,
    scraped: Arc<Scraped>,
    with_run_stats: bool,
    cap: usize,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    eprintln!(
        "pinwatch: serving metrics at http://{}/metrics",
        listener.local_addr()?
    );
    let mut stop_signals = crate::signals::StopSignals::new()?;
    log::debug!("serving at most {cap} connections at once");
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let registry = Registry::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_signals.recv() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if accept_error_is_transient(&e) => {
                log::debug!("accepting a connection: {e}; trying again");
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    shed_oldest_idle(&registry);
                }
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    _ = stop_signals.recv() => break,
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("accepting a connection")),
        };
        let full = lock(&registry).live.len() >= cap;
        if full && !shed_oldest_idle(&registry) {
            // Every one is being answered: this one waits for nothing.
            log::debug!("{cap} connections busy: closing a new one");
            continue;
        }
        // Spawned and registered under the lock, so the task's `Leave`
        // cannot run before its entry exists.
        let mut conns = lock(&registry);
        let id = conns.next_id;
        conns.next_id += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve_connection(
            stream,
            http.clone(),
            Arc::clone(&scraped),
            with_run_stats,
            Arc::clone(&busy),
            Leave {
                registry: Arc::clone(&registry),
                id,
            },
        ));
        conns.live.insert(
            id,
            Live {
                busy,
                task: task.abort_handle(),
            },
        );
    }
    Ok(())
}
