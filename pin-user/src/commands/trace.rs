//! `pinwatch trace`: one line per outermost get/pin (and release) call as
//! it happens, like bcc's `trace`: time, process, variant, arguments and
//! decoded flags, result or errno, fast/slow split, latency and the
//! calling kernel function. Records come through the bounded `EVENTS`
//! ring; what it drops when full is counted and said.

use std::{process::ExitCode, str::FromStr, time::Duration};

use anyhow::Context as _;
use pin_common::{FUNCS, FuncId, Health};

use super::args::{AttachArgs, ScopeArgs, parse_duration};
use crate::{
    cgroups,
    error::UsageError,
    events::{CallRecord, EventFilter, EventStream},
    kernel::symbols,
    kernel::{KernelFacts, foll::FollFlags},
    probes::{self, AttachOptions},
};

/// Options of `pinwatch trace`: what to trace and how to print it.
#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// Attach options.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Which tasks count (`--cgroup`).
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Only this process (filtered in the kernel).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only threads whose comm contains this.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only this function (e.g. pin_user_pages_fast, unpin_user_pages).
    #[arg(long)]
    pub variant: Option<Function>,
    /// Stop after this long (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON object per call instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A function of the catalogue ([`FUNCS`]), a variant or a release
/// function, named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function(FuncId);

impl Function {
    /// The function's name, as per-call records carry it.
    pub fn name(self) -> &'static str {
        FUNCS[self.0 as usize].name
    }
}

impl FromStr for Function {
    type Err = UsageError;

    /// Finds the function named `name`; the error lists every name.
    fn from_str(name: &str) -> Result<Self, UsageError> {
        FUNCS
            .iter()
            .position(|f| f.name == name)
            .map(|id| Function(id as FuncId))
            .ok_or_else(|| {
                let names: Vec<&str> = FUNCS.iter().map(|f| f.name).collect();
                UsageError(format!(
                    "unknown variant {name:?}; one of: {}",
                    names.join(", ")
                ))
            })
    }
}

/// Whether `record` passes the userspace filters.
pub fn wanted(record: &CallRecord, opts: &TraceArgs) -> bool {
    opts.comm
        .as_ref()
        .is_none_or(|c| record.comm.contains(c.as_str()))
        && opts.variant.is_none_or(|v| record.function == v.name())
}

/// The text header matching [`render_line`].
pub const HEADER: &str = "TIME(s)       PID     TID COMM             FUNCTION                  START               NR FLAGS                     RET        FAST  SLOW   LAT(us) CALLER                         CGROUP";

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
        "{time:<10.6} {:>7} {:>7} {:<16} {:<25} {start:<18} {:>4} {flags:<25} {ret:<10} {:>5}{fallback:<1} {:>5} {latency:>9} {:<30} {}",
        r.pid,
        r.tid,
        r.comm,
        r.function,
        r.nr_pages,
        r.fast_pages,
        r.slow_pages,
        r.caller.as_deref().unwrap_or("-"),
        r.cgroup
            .as_ref()
            .map_or_else(|| r.cgroup_id.to_string(), |c| c.short()),
    )
}

fn events_lost(probes: &probes::Probes) -> u64 {
    probes
        .maps()
        .probe_counts()
        .map_or(0, |counts| counts.health[Health::EventsLost as usize])
}

/// Prints the records the ring holds that pass the filters, their callers
/// named when `callers` (attribution is on); returns how many.
fn print_records(
    stream: &mut EventStream,
    opts: &TraceArgs,
    callers: bool,
    t0: u64,
) -> anyhow::Result<u64> {
    let mut records: Vec<CallRecord> = stream
        .drain()
        .into_iter()
        .filter(|r| wanted(r, opts))
        .collect();
    if callers && !records.is_empty() {
        let sites = symbols::resolve(records.iter().map(|r| r.caller_addr));
        // Releases carry no caller: only get/pin calls read one.
        for r in records.iter_mut().filter(|r| !r.release) {
            r.caller = sites.get(&r.caller_addr).map(|s| s.to_string());
        }
    }
    if !records.is_empty() {
        let names = cgroups::resolve(records.iter().map(|r| r.cgroup_id));
        for r in &mut records {
            r.cgroup = names.get(&r.cgroup_id).cloned();
        }
    }
    for r in &records {
        if opts.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{}", render_line(r, t0));
        }
    }
    Ok(records.len() as u64)
}

/// Runs the command until Ctrl-C, SIGTERM or `--duration`.
pub fn run(opts: TraceArgs) -> anyhow::Result<ExitCode> {
    if let Some(pid) = opts.pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return Err(UsageError(format!("no process with pid {pid}")).into());
    }
    let attach = AttachOptions {
        events: true,
        ..opts.attach.options_in(&opts.scope)
    };
    let mut facts = KernelFacts::discover();
    let mut probes = probes::attach(&facts, attach.clone())?;
    let flags = FollFlags::for_kernel(facts.btf.as_ref().ok());
    facts.release_btf();
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
            traced += print_records(&mut stream, &opts, attach.callers, t0)?;
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
            cgroup_id: 7,
            cgroup: Some(cgroups::CgroupIdentity::of_path(
                "/system.slice/fio.service",
            )),
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
            "fio.service",
        ] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        let mut failed = record();
        failed.ret = -14;
        assert!(render_line(&failed, 0).contains("-EFAULT"));
    }

    #[test]
    fn variants_are_the_catalogue() {
        for f in &FUNCS {
            assert_eq!(f.name.parse::<Function>().unwrap().name(), f.name);
        }
        let err = "gup".parse::<Function>().unwrap_err().to_string();
        assert!(
            err.starts_with("unknown variant \"gup\"; one of: get_user_pages, "),
            "{err}"
        );
    }

    #[test]
    fn filters_by_comm_and_variant() {
        let mut opts = TraceArgs {
            attach: AttachArgs {
                attach: crate::probes::AttachMode::Auto,
                no_callers: false,
                lifetimes: false,
                capacities: Default::default(),
            },
            scope: ScopeArgs::default(),
            pid: None,
            comm: Some("fi".into()),
            variant: None,
            duration: None,
            json: false,
        };
        assert!(wanted(&record(), &opts));
        opts.variant = Some("get_user_pages_fast".parse().unwrap());
        assert!(!wanted(&record(), &opts));
        opts.variant = Some("pin_user_pages_fast".parse().unwrap());
        opts.comm = Some("postgres".into());
        assert!(!wanted(&record(), &opts));
    }
}
