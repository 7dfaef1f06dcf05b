//! What the kernel itself dropped, per loaded program:
//! - its `recursion_misses`, the runs the kernel skipped because the same
//!   program was already running on that CPU;
//! - for kprobe programs, the kprobe's own `missed` count (Linux 6.7+,
//!   through the perf link's `bpf_link_info`): hits skipped while another
//!   kprobe ran on that CPU, and for a kretprobe the returns it could not
//!   follow for want of a free instance (max(10, 2 x CPUs) calls in flight).
//!
//! On kernels whose BPF programs are preemptible (`preempt=full`,
//! PREEMPT_RT, PREEMPT_LAZY) a task preempted inside a pinwatch program
//! makes every other task on that CPU skip it until it resumes; kprobe
//! programs are also skipped while any other kprobe program runs on the CPU.
//! A skipped entry program loses a call; a skipped exit program leaves the
//! thread's state stale (the kernel side then counts a missed return). The
//! kernel counts both in `bpf_prog_info`; aya 0.14's `ProgramInfo` does not
//! expose that field, nor its `LinkInfo` the kprobe's, so both are read
//! here with `BPF_OBJ_GET_INFO_BY_FD`.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Mutex, OnceLock},
};

use aya::{Ebpf, programs::links::LinkType};
use pin_common::FUNCS;

use super::multi::Multi;
use crate::kernel::bpf_sys::bpf;

/// Who skipped the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The program's recursion guard (`recursion_misses`).
    Recursion,
    /// The kprobe itself (`kprobe.missed` of the link): another kprobe was
    /// running, or, for a kretprobe, no instance was free.
    Kprobe,
}

/// One program: the function it traces and how, and who skipped its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProgramKey {
    /// pinwatch's name for the traced function (`gup_put_folio` for the
    /// release hook).
    pub function: &'static str,
    /// `fentry`, `fexit`, `kprobe` or `kretprobe`.
    pub program: &'static str,
    /// Whose count it is.
    pub cause: Cause,
}

impl ProgramKey {
    /// The attach mechanism: `fentry` or `kprobe`.
    pub fn mechanism(&self) -> &'static str {
        match self.program {
            "fentry" | "fexit" => "fentry",
            _ => "kprobe",
        }
    }

    /// Whether the program runs at the function's return.
    pub fn at_return(&self) -> bool {
        matches!(self.program, "fexit" | "kretprobe")
    }

    /// The `reason` label of `pinwatch_probe_missed_total`.
    pub fn reason(&self) -> &'static str {
        match (self.cause, self.at_return()) {
            (Cause::Recursion, false) => "entry_recursion",
            (Cause::Recursion, true) => "return_recursion",
            (Cause::Kprobe, false) => "kprobe_missed",
            (Cause::Kprobe, true) => "kretprobe_missed",
        }
    }
}

/// Skipped runs per loaded program (programs never skipped included, so a
/// delta of two readings covers the same set).
pub type Misses = BTreeMap<ProgramKey, u64>;

/// The function and program kind an object program name stands for
/// (`gup_fexit_07`, `rel_kprobe_13`, `put_fentry`).
pub(super) fn parse_name(name: &str) -> Option<ProgramKey> {
    const KINDS: [&str; 4] = ["fentry", "fexit", "kprobe", "kretprobe"];
    let kind_of = |k: &str| KINDS.iter().copied().find(|known| *known == k);
    if let Some(kind) = name.strip_prefix("put_") {
        return Some(ProgramKey {
            function: "gup_put_folio",
            program: kind_of(kind)?,
            cause: Cause::Recursion,
        });
    }
    let rest = name
        .strip_prefix("gup_")
        .or_else(|| name.strip_prefix("rel_"))?;
    let (kind, id) = rest.rsplit_once('_')?;
    let func = FUNCS.get(id.parse::<usize>().ok()?)?;
    Some(ProgramKey {
        function: func.name,
        program: kind_of(kind)?,
        cause: Cause::Recursion,
    })
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` (a prefix of the object's info
/// struct: the kernel fills min(its size, ours) bytes).
fn object_info(fd: i32, info: &mut [u64]) -> std::io::Result<()> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: the kernel writes at most `info_len` bytes into `info` and
    // reads `attr` of the size passed.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.map(drop)
}

/// `recursion_misses` and id of the program behind `fd` (misses: Linux
/// 5.12+; 0 before).
fn program_info(fd: i32) -> std::io::Result<(u64, u32)> {
    program_counters(fd).map(|c| (c.recursion_misses, c.id))
}

/// What the kernel counts for one program.
pub(super) struct ProgramCounters {
    /// The program's id.
    pub id: u32,
    /// Time spent in it, ns (BPF stats on; 0 otherwise).
    pub run_time_ns: u64,
    /// Runs (BPF stats on; 0 otherwise).
    pub run_cnt: u64,
    /// Runs skipped by its recursion guard (5.12+).
    pub recursion_misses: u64,
}

/// The counters of the program behind `fd`. Offsets in `struct
/// bpf_prog_info` (uapi, stable: the struct only grows at its end):
/// `id` is the second u32, `run_time_ns` at 192, `run_cnt` at 200,
/// `recursion_misses` at 208.
pub(super) fn program_counters(fd: i32) -> std::io::Result<ProgramCounters> {
    let mut info = [0u64; 27];
    object_info(fd, &mut info)?;
    Ok(ProgramCounters {
        id: (info[0] >> 32) as u32,
        run_time_ns: info[24],
        run_cnt: info[25],
        recursion_misses: info[26],
    })
}

/// `enum bpf_link_type` and `enum bpf_perf_event_type` values (uapi).
const BPF_LINK_TYPE_PERF_EVENT: u64 = 7;
const BPF_PERF_EVENT_KPROBE: u64 = 3;
const BPF_PERF_EVENT_KRETPROBE: u64 = 4;

/// The `kprobe.missed` of a perf link's `bpf_link_info`, if the link is a
/// kprobe's: type (u32) at 0, `perf_event.type` at 16, the kprobe's
/// `missed` at 48 (include/uapi/linux/bpf.h, Linux 6.7+).
fn link_kprobe_missed(link_id: u32) -> Option<u64> {
    #[repr(C)]
    struct IdAttr {
        link_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let mut attr = IdAttr {
        link_id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: reads `attr` of the size passed; returns a new fd or -1.
    let fd = unsafe { bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) }.ok()?;
    // SAFETY: a fresh fd the kernel just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u64; 8];
    object_info(fd.as_raw_fd(), &mut info).ok()?;
    let perf_type = info[2] & 0xffff_ffff;
    ((info[0] & 0xffff_ffff) == BPF_LINK_TYPE_PERF_EVENT
        && matches!(perf_type, BPF_PERF_EVENT_KPROBE | BPF_PERF_EVENT_KRETPROBE))
    .then_some(info[6])
}

/// Whether the kernel reports a kprobe link's `missed` count (Linux 6.7+;
/// before, the bytes read back are 0 whatever was missed): the
/// [`Feature::KprobeMissed`](crate::kernel::features::Feature::KprobeMissed)
/// probe, recorded by [`set_kprobe_missed_readable`] when probes attach
/// (no attach, no kprobes: false).
pub fn kprobe_missed_readable() -> bool {
    KPROBE_MISSED_READABLE.get().copied().unwrap_or(false)
}

static KPROBE_MISSED_READABLE: OnceLock<bool> = OnceLock::new();

/// Records what the kernel's BTF says about kprobe misses (first call wins:
/// one kernel per process).
pub fn set_kprobe_missed_readable(readable: bool) {
    let _ = KPROBE_MISSED_READABLE.set(readable);
}

/// The link of each kprobe program, by program id (`None`: it has none),
/// found once by walking the kernel's links.
fn kprobe_link(program_id: u32) -> Option<u32> {
    static LINKS: OnceLock<Mutex<BTreeMap<u32, Option<u32>>>> = OnceLock::new();
    let links = LINKS.get_or_init(Default::default);
    let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = links.get(&program_id) {
        return *known;
    }
    let found = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|link| {
            link.program_id() == program_id && matches!(link.link_type(), Ok(LinkType::PerfEvent))
        })
        .map(|link| link.id());
    links.insert(program_id, found);
    found
}

/// `BPF_LINK_TYPE_KPROBE_MULTI` (uapi).
const BPF_LINK_TYPE_KPROBE_MULTI: u64 = 8;

/// The `kprobe_multi.missed` of a kprobe_multi link's `bpf_link_info`:
/// type (u32) at 0, `missed` at 32 (Linux 6.7+).
fn multi_link_missed(fd: i32) -> Option<u64> {
    let mut info = [0u64; 6];
    object_info(fd, &mut info).ok()?;
    ((info[0] & 0xffff_ffff) == BPF_LINK_TYPE_KPROBE_MULTI).then_some(info[4])
}

/// Skipped runs of the multi programs and of kprobe_multi links.
fn read_multi(multi: &Multi, misses: &mut Misses) {
    let function = multi.kind().functions_row();
    for (program, fd) in multi.programs() {
        let key = ProgramKey {
            function,
            program,
            cause: Cause::Recursion,
        };
        match program_info(fd.as_raw_fd()) {
            Ok((recursion, _)) => *misses.entry(key).or_default() += recursion,
            Err(e) => log::debug!("bpf_prog_info of the {program} multi program: {e}"),
        }
    }
    if !kprobe_missed_readable() {
        return;
    }
    for (program, fd) in multi.links() {
        if let Some(missed) = multi_link_missed(fd.as_raw_fd()) {
            let key = ProgramKey {
                function,
                program,
                cause: Cause::Kprobe,
            };
            *misses.entry(key).or_default() += missed;
        }
    }
}

/// Skipped runs of every loaded pinwatch program: its recursion misses,
/// and for kprobe programs the kprobe's misses where the kernel reports
/// them (the kprobe_multi programs' and links' included). A program whose
/// info cannot be read is left out (its figure would be a guess).
pub fn read(ebpf: &Ebpf, multi: Option<&Multi>) -> Misses {
    let mut misses = Misses::new();
    if let Some(multi) = multi {
        read_multi(multi, &mut misses);
    }
    for (name, program) in ebpf.programs() {
        let Some(key) = parse_name(name) else {
            continue;
        };
        let Ok(fd) = program.fd() else {
            continue; // not loaded
        };
        let (recursion, id) = match program_info(fd.as_fd().as_raw_fd()) {
            Ok(info) => info,
            Err(e) => {
                log::debug!("bpf_prog_info of {name}: {e}");
                continue;
            }
        };
        *misses.entry(key).or_default() += recursion;
        if key.mechanism() == "kprobe"
            && kprobe_missed_readable()
            && let Some(missed) = kprobe_link(id).and_then(link_kprobe_missed)
        {
            let key = ProgramKey {
                cause: Cause::Kprobe,
                ..key
            };
            *misses.entry(key).or_default() += missed;
        }
    }
    misses
}

/// Runs that, skipped, lost an event pinwatch counts nowhere else: entry
/// programs' (a call, a release). A skipped return program's call is
/// counted as a missed return by the kernel side already.
pub fn lost_at_entry(misses: &Misses) -> u64 {
    misses
        .iter()
        .filter(|(key, _)| !key.at_return())
        .map(|(_, n)| n)
        .sum()
}

/// What changed between two readings.
pub fn since(now: &Misses, earlier: &Misses) -> Misses {
    now.iter()
        .map(|(k, n)| (*k, n.saturating_sub(earlier.get(k).copied().unwrap_or(0))))
        .collect()
}

/// A reading for the exporters' golden tests: one program that skipped
/// runs, one that did not.
#[cfg(test)]
pub fn sample() -> Misses {
    let kretprobe = parse_name("gup_kretprobe_00").expect("known name");
    Misses::from([
        (kretprobe, 3),
        (
            ProgramKey {
                cause: Cause::Kprobe,
                ..kretprobe
            },
            22,
        ),
        (parse_name("gup_fentry_01").expect("known name"), 0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_map_to_functions_and_kinds() {
        let key = parse_name("gup_kretprobe_00").unwrap();
        assert_eq!(key.function, FUNCS[0].name);
        assert_eq!(key.program, "kretprobe");
        assert_eq!(key.mechanism(), "kprobe");
        assert!(key.at_return());
        let key = parse_name("rel_fentry_13").unwrap();
        assert_eq!(key.function, FUNCS[13].name);
        assert_eq!(key.mechanism(), "fentry");
        assert!(!key.at_return());
        assert_eq!(parse_name("put_kprobe").unwrap().function, "gup_put_folio");
        assert_eq!(parse_name("track_fork"), None);
        assert_eq!(parse_name("gup_fentry_99"), None);
        assert_eq!(parse_name("gup_bogus_01"), None);
    }

    #[test]
    fn since_subtracts_per_program() {
        let key = parse_name("gup_fexit_03").unwrap();
        let earlier = Misses::from([(key, 5)]);
        let now = Misses::from([(key, 7)]);
        assert_eq!(since(&now, &earlier)[&key], 2);
    }

    #[test]
    fn only_entry_runs_count_as_lost_events() {
        // The kretprobe's 3 and 22 are returns the state check counts.
        let mut misses = sample();
        assert_eq!(lost_at_entry(&misses), 0);
        misses.insert(parse_name("rel_kprobe_13").unwrap(), 4);
        assert_eq!(lost_at_entry(&misses), 4);
        let reasons: Vec<&str> = misses.keys().map(ProgramKey::reason).collect();
        assert!(reasons.contains(&"kretprobe_missed"), "{reasons:?}");
    }

    /// The fields this reads of `struct bpf_prog_info` where this aya's
    /// bindings lay them out.
    #[test]
    fn prog_info_offsets_match_the_uapi_struct() {
        use aya_obj::generated::bpf_prog_info;
        assert_eq!(std::mem::offset_of!(bpf_prog_info, id), 4);
        assert_eq!(std::mem::offset_of!(bpf_prog_info, run_time_ns), 192);
        assert_eq!(std::mem::offset_of!(bpf_prog_info, run_cnt), 200);
        assert_eq!(std::mem::offset_of!(bpf_prog_info, recursion_misses), 208);
    }

    /// The prefix this reads of `struct bpf_link_info` as this aya's
    /// bindings lay it out.
    #[test]
    fn link_info_offsets_match_the_uapi_struct() {
        use aya_obj::generated::bpf_link_info;
        let info: bpf_link_info = unsafe { std::mem::zeroed() };
        let base = &info as *const _ as usize;
        // SAFETY: addresses of fields of a zeroed union; nothing is read.
        unsafe {
            let perf = &info.__bindgen_anon_1.perf_event;
            assert_eq!(&perf.type_ as *const _ as usize - base, 16);
            assert_eq!(
                &perf.__bindgen_anon_1.kprobe.missed as *const _ as usize - base,
                48
            );
        }
        assert!(std::mem::size_of::<bpf_link_info>() >= 64);
        use aya_obj::generated::{bpf_link_type, bpf_perf_event_type};
        assert_eq!(
            bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u64,
            BPF_LINK_TYPE_PERF_EVENT
        );
        assert_eq!(
            bpf_link_type::BPF_LINK_TYPE_KPROBE_MULTI as u64,
            BPF_LINK_TYPE_KPROBE_MULTI
        );
        // SAFETY: as above.
        unsafe {
            let multi = &info.__bindgen_anon_1.kprobe_multi;
            assert_eq!(&multi.missed as *const _ as usize - base, 32);
        }
        assert_eq!(
            bpf_perf_event_type::BPF_PERF_EVENT_KPROBE as u64,
            BPF_PERF_EVENT_KPROBE
        );
        assert_eq!(
            bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u64,
            BPF_PERF_EVENT_KRETPROBE
        );
    }
}
