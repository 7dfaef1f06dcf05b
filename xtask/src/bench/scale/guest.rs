//! `xtask scale-guest`: the scale benchmark's driver inside the VM.
//!
//! Two phases on one boot. Starts: `pinwatch stat` with the default
//! settings is started and stopped `--starts` times; each time it records
//! when counting began (the "pinwatch: kernel" line, printed once the
//! probes are attached and the first snapshot taken), the first interval's
//! data, the kernel memory of its maps, its idle RSS and how long SIGINT
//! took to end it. Sample cost: one `pinwatch stat` sized for the largest
//! table asked; `fork-writev` children fill its per-process table step by
//! step (each short-lived child leaves one entry, which stays until
//! evicted), and after each step the agent's CPU time and RSS are read
//! over a window of idle samples, so what is measured is the cost of
//! reading and reducing that many entries once a second.

use std::{
    cell::Cell,
    fs,
    process::{Command, ExitCode, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{SampleCost, ScaleRun, StartStop};
use crate::bench::{
    bpf_objects,
    tools::{self, Tracer},
};

/// What the host asks of the guest.
#[derive(Clone, Debug, clap::Args)]
pub struct ScaleGuestArgs {
    /// Per-process table fill levels (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub entries: Vec<u32>,
    /// Seconds of samples (one a second) over which a fill level's cost
    /// is read.
    #[arg(long)]
    pub window_s: u64,
    /// Starts and stops of the default agent.
    #[arg(long)]
    pub starts: u32,
}

/// Printed before the JSON of the run.
pub const RESULT_MARKER: &str = "PINWATCH_SCALE_RESULT=";

const PINWATCH: &str = "/bin/pinwatch";
/// Printed by `pinwatch stat` on stderr once counting has begun.
const COUNTING_LINE: &str = "pinwatch: kernel ";
/// Attaching under single-threaded TCG with 64 vCPUs takes tens of seconds.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// `pinwatch stat`'s default per-process table size (`--max-procs`).
const DEFAULT_MAX_PROCS: u32 = 8192;
/// Linux's PID_MAX_LIMIT: pids are not reused while the table fills, so
/// every child leaves an entry of its own.
const PID_MAX: &str = "4194304";

/// Runs both phases and prints the result line.
pub fn run(args: &ScaleGuestArgs) -> anyhow::Result<ExitCode> {
    fs::write("/proc/sys/kernel/pid_max", PID_MAX).context("raising kernel.pid_max")?;
    let mut entries = args.entries.clone();
    entries.sort_unstable();
    entries.dedup();
    let mut starts = Vec::new();
    for _ in 0..args.starts {
        starts.push(start_stop()?);
    }
    let max_procs = table_size(entries.last().copied().unwrap_or(0));
    let samples = sample_costs(&entries, max_procs, Duration::from_secs(args.window_s))?;
    let run = ScaleRun {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string(),
        cpus: online_cpus(),
        starts,
        max_procs,
        samples,
    };
    println!("{RESULT_MARKER}{}", serde_json::to_string(&run)?);
    Ok(ExitCode::SUCCESS)
}

/// Online CPUs (the guest's vCPUs).
fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32
}

/// The per-process table size for `largest` entries: the default, or a
/// quarter more than asked (an LRU hash evicts before it is full: its
/// free entries sit on per-CPU lists), rounded up to a power of two.
fn table_size(largest: u32) -> u32 {
    DEFAULT_MAX_PROCS.max((largest + largest / 4).next_power_of_two())
}

/// `pinwatch stat` with `extra` flags, reporting each second as JSON.
fn stat_argv(extra: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [PINWATCH, "stat", "--json", "--interval", "1s"]
        .map(String::from)
        .to_vec();
    argv.extend_from_slice(extra);
    argv
}

/// Starts the agent; returns it with the time from spawn to its counting
/// line (the first data line is the tracer's own `first_data`).
fn start_agent(extra: &[String]) -> anyhow::Result<(Tracer, Duration)> {
    let counting = Rc::new(Cell::new(None));
    let seen = Rc::clone(&counting);
    let spawned = Instant::now();
    let tracer = Tracer::start(
        &stat_argv(extra),
        move |line| {
            if line.starts_with(COUNTING_LINE) && seen.get().is_none() {
                seen.set(Some(spawned.elapsed()));
            }
            line.starts_with('{')
        },
        START_TIMEOUT,
    )?;
    let Some(counting) = counting.get() else {
        bail!(
            "pinwatch stat printed data before its counting line:\n{}",
            tracer.seen.join("\n")
        );
    };
    Ok((tracer, counting))
}

/// One start and stop of the agent with the default settings.
fn start_stop() -> anyhow::Result<StartStop> {
    let (mut tracer, counting) = start_agent(&[])?;
    let map_memory_bytes = map_memory(tracer.pid())?;
    // Two more samples: what an idle agent keeps resident.
    std::thread::sleep(Duration::from_secs(2));
    tracer.check_alive()?;
    let idle_rss_kib = rss_kib(tracer.pid())?;
    let stopped = tracer.stop()?;
    Ok(StartStop {
        counting_ms: ms(counting),
        first_data_ms: ms(tracer.first_data),
        stop_ms: ms(stopped.exited),
        detached_ms: ms(stopped.freed),
        map_memory_bytes,
        idle_rss_kib,
    })
}

/// The agent's cost per fill level of its per-process table.
fn sample_costs(
    entries: &[u32],
    max_procs: u32,
    window: Duration,
) -> anyhow::Result<Vec<SampleCost>> {
    let (mut tracer, _) = start_agent(&["--max-procs".into(), max_procs.to_string()])?;
    let map_memory_bytes = map_memory(tracer.pid())?;
    let mut costs = Vec::new();
    let mut filled = 0;
    for &level in std::iter::once(&0).chain(entries) {
        let filling = Instant::now();
        if level > filled {
            fork_children(level - filled)?;
        }
        let fill = filling.elapsed();
        filled = filled.max(level);
        // The sample that read the fill's last calls is not the idle
        // cost being measured: let it pass.
        std::thread::sleep(Duration::from_secs(2));
        tracer.check_alive()?;
        let before = tools::cpu_time(tracer.pid())?;
        let started = Instant::now();
        std::thread::sleep(window);
        tracer.check_alive()?;
        let cpu = tools::cpu_time(tracer.pid())? - before;
        costs.push(SampleCost {
            spawned: level,
            entries: table_entries(tracer.pid(), PROCS)?,
            fill_s: fill.as_secs_f64(),
            window_s: started.elapsed().as_secs_f64(),
            cpu_percent: 100.0 * cpu.as_secs_f64() / started.elapsed().as_secs_f64(),
            rss_kib: rss_kib(tracer.pid())?,
            map_memory_bytes,
        });
        println!(
            "scale: {level} entries: {:.2} % of a CPU",
            costs.last().expect("pushed").cpu_percent
        );
    }
    tracer.stop()?;
    Ok(costs)
}

/// `n` short-lived children, each making one 1-page
/// `process_vm_writev` (one per-process table entry each).
fn fork_children(n: u32) -> anyhow::Result<()> {
    let status = Command::new(PINWATCH)
        .args(["workload", "fork-writev", "--pages", "1", "--calls"])
        .arg(n.to_string())
        .stdout(Stdio::null())
        .status()
        .context("running pinwatch workload fork-writev")?;
    if !status.success() {
        bail!("pinwatch workload fork-writev --calls {n} failed ({status})");
    }
    Ok(())
}

/// The per-process table's name (BPF object names are cut at 15 bytes).
const PROCS: &str = "PROCS";

/// How many entries `pid`'s map named `name` holds: the map opened by its
/// id, its keys walked. Once per fill level, so the walk's cost is not in
/// the agent's figures.
fn table_entries(pid: u32, name: &str) -> anyhow::Result<u64> {
    for id in map_ids(pid)? {
        let Ok(map) = bpf_objects::open(id) else {
            continue;
        };
        if map.name()? == name {
            return map.count_keys();
        }
    }
    bail!("process {pid} holds no map named {name}")
}

/// A process's resident set (VmRSS), in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    procfs::process::Process::new(pid as i32)?
        .status()?
        .vmrss
        .context("no VmRSS in /proc/PID/status")
}

/// The kernel memory of the BPF maps `pid` holds: `memlock` summed over
/// its map descriptors, each map once (procfs does not parse the BPF
/// fields of fdinfo).
fn map_memory(pid: u32) -> anyhow::Result<u64> {
    Ok(maps_held(pid)?.values().sum())
}

/// The ids of the BPF maps `pid` holds.
fn map_ids(pid: u32) -> anyhow::Result<Vec<u64>> {
    Ok(maps_held(pid)?.into_keys().collect())
}

/// map_id -> memlock of each BPF map `pid` holds a descriptor of.
fn maps_held(pid: u32) -> anyhow::Result<std::collections::BTreeMap<u64, u64>> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some((id, memlock)) = parse_map_fdinfo(&text) {
            seen.insert(id, memlock);
        }
    }
    if seen.is_empty() {
        bail!("process {pid} holds no BPF map");
    }
    Ok(seen)
}

/// A BPF map descriptor's (map_id, memlock), or None for other files.
fn parse_map_fdinfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((field("map_id:")?, field("memlock:")?))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_map_fdinfo_and_skips_other_files() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t9\n\
                   key_size:\t4\nvalue_size:\t64\nmax_entries:\t8192\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t1091968\nmap_id:\t12\nfrozen:\t0\n";
        assert_eq!(parse_map_fdinfo(map), Some((12, 1091968)));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\n\
                    memlock:\t4096\nprog_id:\t40\n";
        assert_eq!(parse_map_fdinfo(prog), None);
        assert_eq!(parse_map_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn table_sized_for_the_largest_level_with_room() {
        assert_eq!(table_size(0), DEFAULT_MAX_PROCS);
        assert_eq!(table_size(1_000), DEFAULT_MAX_PROCS);
        assert_eq!(table_size(10_000), 16_384);
        assert_eq!(table_size(100_000), 131_072);
    }
}
