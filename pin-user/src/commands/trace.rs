//! `pinwatch trace`: one line per outermost get/pin (and release) call as
//! it happens, like bcc's `trace`: time, process, variant, arguments and
//! decoded flags, result or errno, fast/slow split, latency and the
//! calling kernel function. Records come through the bounded `EVENTS`
//! ring; what it drops when full is counted and said.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use pin_common::{FUNCS, Health};

use crate::{
    attribution::symbols,
    cli::UsageError,
    events::{CallRecord, EventFilter, EventStream},
    kernel::{KernelFacts, foll::FollFlags},
    probes::{self, AttachOptions},
};

/// What to trace and how to print it.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Probe options.
    pub attach: AttachOptions,
    /// Only this process (filtered in the kernel).
    pub pid: Option<u32>,
    /// Only threads whose comm contains this.
    pub comm: Option<String>,
    /// Only this function (a variant or a release function).
    pub variant: Option<String>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// JSON lines instead of text.
    pub json: bool,
}

/// Whether `record` passes the userspace filters.
pub fn wanted(record: &CallRecord, opts: &TraceOptions) -> bool {
    opts.comm
        .as_ref()
        .is_none_or(|c| record.comm.contains(c.as_str()))
        && opts.variant.as_ref().is_none_or(|v| record.function == v)
}

/// The text header matching [`render_line`].
pub const HEADER: &str = "TIME(s)       PID     TID COMM             FUNCTION                  START               NR FLAGS                     RET        FAST  SLOW   LAT(us) CALLER";

/// One record as a text line; `t0` is the trace's start (monotonic ns).
pub fn render_line(r: &CallRecord, t0: u64) -> String {
    let time = r.start_ns.saturating_sub(t0) as f64 / 1e9;
    let start = r
        .addr
        .map_or_else(|| "-".to_string(), |a| format!("{a:#x}"));
    let flags = if r.release {
        "-".to_string()
    } else if r.flags.is_none() {
        "?".to_string()
    } else if r.flag_names.is_empty() {
        "0".to_string()
    } else {
        r.flag_names.join("|")
    };
    let ret = if r.release {
        "-".to_string()
    } else {
        r.ret_text()
    };
    let fallback = if r.fell_back { "*" } else { "" };
    let latency = r
        .latency_ns
        .map_or_else(|| "-".to_string(), |ns| format!("{:.1}", ns as f64 / 1e3));
    format!(
        "{time:<10.6} {:>7} {:>7} {:<16} {:<25} {start:<18} {:>4} {flags:<25} {ret:<10} {:>5}{fallback:<1} {:>5} {latency:>9} {}",
        r.pid,
        r.tid,
        r.comm,
        r.function,
        r.nr_pages,
        r.fast_pages,
        r.slow_pages,
        r.caller.as_deref().unwrap_or("-"),
    )
}

fn events_lost(probes: &probes::Probes) -> u64 {
    probes
        .maps()
        .health_counter(Health::EventsLost)
        .map_or(0, |per_cpu| per_cpu.iter().sum())
}

/// Runs the command until Ctrl-C, SIGTERM or `--duration`.
pub fn run(opts: TraceOptions) -> anyhow::Result<ExitCode> {
    if let Some(pid) = opts.pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return Err(UsageError(format!("no process with pid {pid}")).into());
    }
    if let Some(v) = &opts.variant
        && !FUNCS.iter().any(|f| f.name == v)
    {
        let names: Vec<&str> = FUNCS.iter().map(|f| f.name).collect();
        return Err(UsageError(format!(
            "unknown variant {v:?}; one of: {}",
            names.join(", ")
        ))
        .into());
    }
    let facts = KernelFacts::discover();
    let mut probes = probes::attach(&facts, opts.attach)?;
    let flags = FollFlags::for_kernel(facts.btf.as_ref().ok());
    let filter = EventFilter {
        tid: 0,
        tgid: opts.pid.unwrap_or(0),
    };
    let mut stream =
        EventStream::start(probes.maps_mut(), filter, flags).context("starting per-call events")?;
    probes.shed_privileges(&Default::default())?;
    let lost_at_start = events_lost(&probes);
    let t0 = crate::attribution::lifetimes::monotonic_ns();
    eprintln!(
        "pinwatch: kernel {}: tracing GUP calls{} (Ctrl-C to stop)",
        facts.release,
        opts.pid.map(|p| format!(" of pid {p}")).unwrap_or_default()
    );
    if !opts.json {
        println!("{HEADER}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (traced, lost) = runtime.block_on(async {
        let mut stop_signals = crate::signals::StopSignals::new()?;
        let deadline = async {
            match opts.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut traced = 0u64;
        let mut lost_said = lost_at_start;
        loop {
            let stop = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop_signals.recv() => true,
                _ = &mut deadline => true,
            };
            let mut records: Vec<CallRecord> = stream
                .drain()
                .into_iter()
                .filter(|r| wanted(r, &opts))
                .collect();
            if opts.attach.callers && !records.is_empty() {
                let sites = symbols::resolve(records.iter().map(|r| r.caller_addr));
                // Releases carry no caller: only get/pin calls read one.
                for r in records.iter_mut().filter(|r| !r.release) {
                    r.caller = sites.get(&r.caller_addr).map(|s| s.to_string());
                }
            }
            for r in &records {
                if opts.json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!("{}", render_line(r, t0));
                }
            }
            traced += records.len() as u64;
            let lost = events_lost(&probes);
            if lost > lost_said {
                eprintln!(
                    "pinwatch: {} events dropped (ring buffer full)",
                    lost - lost_said
                );
                lost_said = lost;
            }
            if stop {
                break;
            }
        }
        anyhow::Ok((traced, lost_said - lost_at_start))
    })?;
    eprintln!("pinwatch: {traced} calls traced, {lost} dropped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CallRecord {
        CallRecord {
            start_ns: 2_500_000_000,
            tid: 43,
            pid: 42,
            comm: "fio".into(),
            function: "pin_user_pages_fast",
            release: false,
            addr: Some(0x7f00_0000_0000),
            nr_pages: 16,
            flags: Some(0x1),
            flag_names: vec!["WRITE".into(), "LONGTERM".into()],
            ret: 16,
            fast_pages: 16,
            slow_pages: 0,
            fell_back: false,
            latency_ns: Some(2500),
            caller_addr: 1,
            caller: Some("io_pin_pages+0x82".into()),
        }
    }

    #[test]
    fn lines_show_every_field() {
        let line = render_line(&record(), 500_000_000);
        for want in [
            "2.000000",
            "42",
            "fio",
            "pin_user_pages_fast",
            "0x7f0000000000",
            "WRITE|LONGTERM",
            "2.5",
            "io_pin_pages+0x82",
        ] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        let mut failed = record();
        failed.ret = -14;
        assert!(render_line(&failed, 0).contains("-EFAULT"));
    }

    #[test]
    fn filters_by_comm_and_variant() {
        let mut opts = TraceOptions {
            attach: AttachOptions::new(crate::probes::AttachMode::Auto),
            pid: None,
            comm: Some("fi".into()),
            variant: None,
            duration: None,
            json: false,
        };
        assert!(wanted(&record(), &opts));
        opts.variant = Some("get_user_pages_fast".into());
        assert!(!wanted(&record(), &opts));
        opts.variant = Some("pin_user_pages_fast".into());
        opts.comm = Some("postgres".into());
        assert!(!wanted(&record(), &opts));
    }
}
