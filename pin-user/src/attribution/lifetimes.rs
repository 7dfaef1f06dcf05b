//! Pin lifetimes (`--lifetimes`): reading the outstanding pins back as
//! per-process and per-caller totals and the oldest outstanding pins (leak
//! suspects), cross-checked against `/proc/vmstat` and each process's
//! `VmPin`. (The probes are told to record them by `probes::settings`.)

use std::collections::BTreeMap;

use pin_common::{FUNCS, PinRecord};
use serde::{Deserialize, Serialize};

use crate::kernel::symbols::{self, CallSite};
use crate::{
    probes::{KernelMapError, KernelMaps},
    vmstat::PinCounters,
};

/// Outstanding pinned pages of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessPins {
    /// Process id.
    pub pid: u32,
    /// Its comm (`?` once it exited).
    pub comm: String,
    /// Tracked pinned pages it still holds.
    pub pages: u64,
    /// Its `VmPin` in pages (what the pinning subsystems accounted to it:
    /// io_uring, RDMA, VFIO...), when the process still exists.
    pub vm_pin_pages: Option<u64>,
}

/// Outstanding pinned pages of one calling function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallerPins {
    /// Calling kernel function.
    pub caller: String,
    /// Variant it called.
    pub variant: String,
    /// Tracked pinned pages still held.
    pub pages: u64,
}

/// One of the oldest outstanding pins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinSuspect {
    /// Process that pinned it.
    pub pid: u32,
    /// Its comm.
    pub comm: String,
    /// Calling function and offset.
    pub caller: String,
    /// Variant.
    pub variant: String,
    /// Pins of the folio still held.
    pub pages: u64,
    /// How long they have been held, ns: their mean age, so a folio pinned
    /// again and again by short pins does not age like a leak (exact when
    /// one pin is held).
    pub held_ns: u64,
}

/// What is pinned right now, as far as pinwatch has seen it pinned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outstanding {
    /// Tracked pinned pages not yet released.
    pub pages: u64,
    /// Folios they belong to.
    pub folios: u64,
    /// By process, most pages first.
    pub by_process: Vec<ProcessPins>,
    /// By caller, most pages first.
    pub by_caller: Vec<CallerPins>,
    /// The oldest outstanding pins (leak suspects), oldest first.
    pub oldest: Vec<PinSuspect>,
    /// System-wide `nr_foll_pin_acquired - nr_foll_pin_released` (every
    /// FOLL_PIN page held, including pins taken before pinwatch started).
    pub vmstat_outstanding: Option<i64>,
}

/// How many leak suspects [`read_outstanding`] lists.
pub const OLDEST_SHOWN: usize = 10;

/// Monotonic clock in ns (the clock `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn comm_of(pid: u32) -> (String, Option<u64>) {
    let page_kb = procfs::page_size() / 1024;
    match procfs::process::Process::new(pid as i32).and_then(|p| p.status()) {
        Ok(status) => (status.name, status.vmpin.map(|kb| kb / page_kb.max(1))),
        Err(_) => ("?".to_string(), None),
    }
}

/// Reads `PIN_LIFETIMES` and summarises what is still pinned.
pub fn read_outstanding(maps: KernelMaps<'_>) -> Result<Outstanding, KernelMapError> {
    let map = maps.pin_lifetimes()?;
    let records: Vec<PinRecord> = map.iter().flatten().map(|(_, rec)| rec).collect();
    // vmstat counters are batched per CPU (a CPU may sit on dozens of
    // pins); flush them so the cross-check compares like with like.
    if let Err(err) = crate::vmstat::refresh() {
        log::debug!("stat_refresh: {err}");
    }
    let vmstat = PinCounters::read().ok().flatten();
    Ok(summarise(&records, monotonic_ns(), vmstat, comm_of))
}

/// The summary of a set of records at time `now` (separate from the map
/// read so it can be tested).
pub fn summarise(
    records: &[PinRecord],
    now: u64,
    vmstat: Option<PinCounters>,
    process: impl Fn(u32) -> (String, Option<u64>),
) -> Outstanding {
    let sites = symbols::resolve(records.iter().map(|r| r.caller));
    let site_of = |addr: u64| {
        sites
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| CallSite::bare(addr))
    };
    let variant = |func: u32| {
        FUNCS
            .get(func as usize)
            .map_or_else(|| format!("func#{func}"), |f| f.name.to_string())
    };
    let mut by_pid: BTreeMap<u32, u64> = BTreeMap::new();
    let mut by_caller: BTreeMap<(String, String), u64> = BTreeMap::new();
    for rec in records {
        *by_pid.entry(rec.tgid).or_default() += rec.refs;
        *by_caller
            .entry((site_of(rec.caller).function, variant(rec.func)))
            .or_default() += rec.refs;
    }
    let mut names: BTreeMap<u32, (String, Option<u64>)> = BTreeMap::new();
    let mut name_of = |pid: u32| names.entry(pid).or_insert_with(|| process(pid)).clone();
    let mut by_process: Vec<ProcessPins> = by_pid
        .iter()
        .map(|(&pid, &pages)| {
            let (comm, vm_pin_pages) = name_of(pid);
            ProcessPins {
                pid,
                comm,
                pages,
                vm_pin_pages,
            }
        })
        .collect();
    by_process.sort_by(|a, b| (b.pages, a.pid).cmp(&(a.pages, b.pid)));
    let mut by_caller: Vec<CallerPins> = by_caller
        .into_iter()
        .map(|((caller, variant), pages)| CallerPins {
            caller,
            variant,
            pages,
        })
        .collect();
    by_caller.sort_by(|a, b| (b.pages, &a.caller).cmp(&(a.pages, &b.caller)));
    let mut oldest: Vec<&PinRecord> = records.iter().collect();
    oldest.sort_by_key(|r| r.mean_start_ns());
    let oldest = oldest
        .into_iter()
        .take(OLDEST_SHOWN)
        .map(|rec| PinSuspect {
            pid: rec.tgid,
            comm: name_of(rec.tgid).0,
            caller: site_of(rec.caller).to_string(),
            variant: variant(rec.func),
            pages: rec.refs,
            held_ns: now.saturating_sub(rec.mean_start_ns()),
        })
        .collect();
    Outstanding {
        pages: records.iter().map(|r| r.refs).sum(),
        folios: records.len() as u64,
        by_process,
        by_caller,
        oldest,
        vmstat_outstanding: vmstat
            .map(|v| v.nr_foll_pin_acquired as i64 - v.nr_foll_pin_released as i64),
    }
}

/// The text block `stat --lifetimes` prints.
pub fn render_text(out: &Outstanding) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = write!(
        text,
        "outstanding pins: {} pages in {} folios tracked",
        out.pages, out.folios
    );
    if let Some(v) = out.vmstat_outstanding {
        let _ = write!(text, " (vmstat: {v} held system-wide)");
    }
    text.push('\n');
    for p in out.by_process.iter().take(OLDEST_SHOWN) {
        let vm_pin = p
            .vm_pin_pages
            .map_or_else(|| "-".to_string(), |v| v.to_string());
        let _ = writeln!(
            text,
            "  pid {:>7} {:<16} {:>8} pages held   VmPin {vm_pin} pages",
            p.pid, p.comm, p.pages
        );
    }
    for c in out.by_caller.iter().take(OLDEST_SHOWN) {
        let _ = writeln!(
            text,
            "  caller {:<30} {:<22} {:>8} pages held",
            c.caller, c.variant, c.pages
        );
    }
    for s in &out.oldest {
        let _ = writeln!(
            text,
            "  oldest: held {:>9} pid {} {} {} via {} ({} pages)",
            crate::units::fmt_ns(Some(s.held_ns)),
            s.pid,
            s.comm,
            s.caller,
            s.variant,
            s.pages
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_groups_and_orders() {
        let rec = |start_ns: u64, tgid, refs| PinRecord {
            start_sum_ns: start_ns * refs,
            caller: 0,
            refs,
            tgid,
            func: 6,
        };
        let records = [rec(300, 10, 1), rec(100, 20, 2), rec(200, 10, 4)];
        let vmstat = PinCounters {
            nr_foll_pin_acquired: 100,
            nr_foll_pin_released: 90,
        };
        let out = summarise(&records, 1000, Some(vmstat), |pid| {
            (format!("p{pid}"), Some(pid as u64))
        });
        assert_eq!(out.pages, 7);
        assert_eq!(out.folios, 3);
        assert_eq!(out.by_process[0].pid, 10);
        assert_eq!(out.by_process[0].pages, 5);
        assert_eq!(out.by_process[0].vm_pin_pages, Some(10));
        assert_eq!(out.by_caller.len(), 1);
        assert_eq!(out.by_caller[0].caller, "[unknown]");
        assert_eq!(out.by_caller[0].variant, "pin_user_pages_fast");
        assert_eq!(out.oldest[0].held_ns, 900);
        assert_eq!(out.oldest[0].comm, "p20");
        assert_eq!(out.vmstat_outstanding, Some(10));
        assert!(render_text(&out).contains("7 pages in 3 folios"));
    }

    #[test]
    fn a_repinned_folio_ages_by_its_pins_mean_start() {
        // Pinned at 100, then again at 900 and 950: held 1000 - 650 on
        // average, not 900 since the first pin.
        let record = PinRecord {
            start_sum_ns: 100 + 900 + 950,
            caller: 0,
            refs: 3,
            tgid: 1,
            func: 6,
        };
        let out = summarise(&[record], 1000, None, |_| (String::new(), None));
        assert_eq!(out.oldest[0].held_ns, 350);
    }
}
