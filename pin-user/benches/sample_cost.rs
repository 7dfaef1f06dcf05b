//! What one sample costs the agent against the entries in its tables,
//! natively: the object's tables created as an attach creates them
//! (`TablesOnly`, no program, so it runs on hosts whose kernel cannot run
//! the probes), filled with N processes and up to 1 000 call sites the way
//! the probes fill them, then sampled as `pinwatch stat` samples: kernel
//! maps -> snapshot -> delta (call sites named) -> the interval's view,
//! its memlock reads, text and JSON. Before each sample every entry
//! changes (every process and call site pinned again), as with that many
//! live pinning processes.
//!
//! Run as root: `cargo bench -p pin-user --bench sample_cost [-- N...]`
//! (default 100 1000 10000 100000). Prints a Markdown table: process CPU
//! time per sample (user + system, so the map reads' system calls count),
//! its median and range over the samples, each stage's median (ms), and
//! the whole's median as a share of
//! one CPU at the default 1 s interval. The entry counts are those the
//! last sample read (an LRU table can evict before it is full).

use std::{hint::black_box, time::Duration};

use anyhow::{Context, bail};
use aya::maps::{HashMap, MapData};
use pin_common::{
    FUNCS, ProcStats,
    attribution::{CallerKey, CallerStats},
    maps::{CALLERS, PROCS},
};
use pinwatch::{
    kernel::KernelFacts,
    probes::{AttachMode, AttachOptions, TablesOnly},
    report::IntervalView,
    snapshot::Snapshot,
};

/// Call sites at most (issue 20's goal 5: 10 000 processes, 1 000 sites).
const CALL_SITES: usize = 1000;
/// Samples timed per table size (after one untimed warm-up).
const SAMPLES: usize = 15;

fn main() -> anyhow::Result<()> {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| a.parse().with_context(|| format!("table size {a:?}")))
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000, 100_000]
    } else {
        sizes
    };
    if !is_root() {
        bail!("sample_cost creates BPF maps: run it as root");
    }
    let facts = KernelFacts::discover();
    // Joins the thread that parses kallsyms at start, so that its CPU time
    // is not counted in the first samples.
    facts.kallsyms();
    let sites = kernel_text_addresses(CALL_SITES)?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "kernel {}, {cpus} CPUs, {SAMPLES} samples per row; PROCS sized as a user would \
         (--max-procs: the default, or the next power of two above 1.25 x the processes)\n",
        facts.release
    );
    println!(
        "| processes | --max-procs | call sites | CPU per sample, median (range) | read | delta, names | view | text, JSON | % of one CPU at 1 s |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for &n in &sizes {
        let mut options = AttachOptions::new(AttachMode::Auto);
        // Room for every process: an LRU table evicts before it is full
        // (its free lists are per CPU).
        options.capacities.procs = (n + n / 4)
            .next_power_of_two()
            .max(options.capacities.procs);
        let mut tables = TablesOnly::load(&facts, &options).context("creating pinwatch's maps")?;
        let call_sites = &sites[..sites.len().min(n as usize)];
        let mut round = 1;
        fill(&mut tables, n, call_sites, round)?;
        let mut previous = Snapshot::read(tables.maps())?;
        let mut whole = Vec::with_capacity(SAMPLES);
        let mut stages: [Vec<Duration>; 4] = Default::default();
        let mut seen = (0, 0);
        for sample in 0..=SAMPLES {
            round += 1;
            fill(&mut tables, n, call_sites, round)?;
            let mut clock = StageClock::start();
            let current = Snapshot::read(tables.maps())?;
            let read = clock.lap();
            let delta = current.since(&previous).named();
            let deltas = clock.lap();
            seen = (delta.procs.len(), delta.callers.len());
            let mut view = IntervalView::new(&delta);
            view.read_memlock();
            let viewed = clock.lap();
            black_box(view.render_text());
            black_box(serde_json::to_string(&view)?);
            let printed = clock.lap();
            previous = current;
            if sample > 0 {
                whole.push(clock.total());
                for (stage, spent) in stages.iter_mut().zip([read, deltas, viewed, printed]) {
                    stage.push(spent);
                }
            }
        }
        let median = median_of(&mut whole);
        let stages = stages.each_mut().map(|spent| ms(median_of(spent)));
        println!(
            "| {} | {} | {} | {:.2} ms ({:.2}-{:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} % |",
            seen.0,
            options.capacities.procs,
            seen.1,
            ms(median),
            ms(whole[0]),
            ms(whole[SAMPLES - 1]),
            stages[0],
            stages[1],
            stages[2],
            stages[3],
            median.as_secs_f64() * 100.0
        );
    }
    Ok(())
}

/// Writes `n` process entries and the call sites' entries, each with
/// counts that grow with `round` (so every entry changed since the last).
fn fill(tables: &mut TablesOnly, n: u32, sites: &[u64], round: u64) -> anyhow::Result<()> {
    let now = monotonic_ns();
    let mut procs: HashMap<&mut MapData, u32, ProcStats> =
        HashMap::try_from(tables.map_mut(PROCS).context(PROCS)?)?;
    for pid in 1..=n {
        let mut comm = [0u8; 16];
        let name = format!("worker-{}", pid % 100);
        comm[..name.len()].copy_from_slice(name.as_bytes());
        let stats = ProcStats {
            calls: round,
            pages: 4 * round,
            pinned: 4 * round,
            released: 4 * round,
            comm,
            first_ns: now,
        };
        procs.insert(pid, stats, 0)?;
    }
    let mut callers: HashMap<&mut MapData, CallerKey, CallerStats> =
        HashMap::try_from(tables.map_mut(CALLERS).context(CALLERS)?)?;
    for (i, &site) in sites.iter().enumerate() {
        let mut stats = CallerStats::ZERO;
        stats.calls = round;
        stats.pages = 4 * round;
        stats.fast_pages = 4 * round;
        stats.latency_sum_ns = 1_000 * round;
        stats.latency_log2[10] = round;
        stats.first_ns = now;
        let key = CallerKey::new(site, (i % FUNCS.len()) as u32);
        callers.insert(key, stats, 0)?;
    }
    Ok(())
}

/// `count` addresses inside kernel text functions (each symbol + 0x10),
/// so that naming the call sites does the work real return addresses
/// cost.
fn kernel_text_addresses(count: usize) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("/proc/kallsyms")?;
    let addresses: Vec<u64> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            (matches!(kind, "t" | "T") && address != 0).then_some(address + 0x10)
        })
        .step_by(16)
        .take(count)
        .collect();
    if addresses.len() < count {
        bail!(
            "/proc/kallsyms shows {} text symbols with addresses",
            addresses.len()
        );
    }
    Ok(addresses)
}

/// Process CPU time by stage.
struct StageClock {
    started: Duration,
    last: Duration,
}

impl StageClock {
    fn start() -> Self {
        let now = cpu_time();
        Self {
            started: now,
            last: now,
        }
    }

    /// CPU time since the previous lap.
    fn lap(&mut self) -> Duration {
        let now = cpu_time();
        let spent = now - self.last;
        self.last = now;
        spent
    }

    /// CPU time from the start to the last lap.
    fn total(&self) -> Duration {
        self.last - self.started
    }
}

/// Sorts `spent` and returns its middle value.
fn median_of(spent: &mut [Duration]) -> Duration {
    spent.sort();
    spent[spent.len() / 2]
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// This process's CPU time (user + system, every thread).
fn cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn monotonic_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC).as_nanos() as u64
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
