//! What the kernel itself dropped: each loaded program's
//! `recursion_misses`, the runs the kernel skipped because the same
//! program was already running on that CPU.
//!
//! On kernels whose BPF programs are preemptible (`preempt=full`,
//! PREEMPT_RT, PREEMPT_LAZY) a task preempted inside a pinwatch program
//! makes every other task on that CPU skip it until it resumes; kprobe
//! programs are also skipped while any other kprobe program runs on the CPU.
//! A skipped entry program loses a call; a skipped exit program leaves the
//! thread's state stale (the kernel side then counts a missed return). The
//! kernel counts both in `bpf_prog_info`; aya 0.14's `ProgramInfo` does not
//! expose that field, so it is read here with `BPF_OBJ_GET_INFO_BY_FD`.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::Ebpf;
use pin_common::FUNCS;

/// One program: the function it traces and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProgramKey {
    /// pinwatch's name for the traced function (`gup_put_folio` for the
    /// lifetime probe).
    pub function: &'static str,
    /// `fentry`, `fexit`, `kprobe` or `kretprobe`.
    pub program: &'static str,
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
}

/// Skipped runs per loaded program (programs never skipped included, so a
/// delta of two readings covers the same set).
pub type Misses = BTreeMap<ProgramKey, u64>;

/// The function and program kind an object program name stands for
/// (`gup_fexit_07`, `rel_kprobe_13`, `put_fentry`).
fn parse_name(name: &str) -> Option<ProgramKey> {
    const KINDS: [&str; 4] = ["fentry", "fexit", "kprobe", "kretprobe"];
    let kind_of = |k: &str| KINDS.iter().copied().find(|known| *known == k);
    if let Some(kind) = name.strip_prefix("put_") {
        return Some(ProgramKey {
            function: "gup_put_folio",
            program: kind_of(kind)?,
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
    })
}

/// `recursion_misses` of the program behind `fd` (Linux 5.12+; 0 before).
fn recursion_misses(fd: i32) -> std::io::Result<u64> {
    // The prefix of `struct bpf_prog_info` up to `recursion_misses`
    // (include/uapi/linux/bpf.h); the kernel fills min(info_len, its own
    // size) bytes, so a prefix is a valid request.
    let mut info = [0u64; 32];
    // Offset of `recursion_misses` in `struct bpf_prog_info` (uapi, stable:
    // the struct only grows at its end): 208 bytes.
    const RECURSION_MISSES_WORD: usize = 208 / 8;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: ((RECURSION_MISSES_WORD + 1) * 8) as u32,
        info: info.as_mut_ptr() as u64,
    };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: the kernel writes at most `info_len` bytes into `info`,
    // which is larger, and reads `attr` of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info[RECURSION_MISSES_WORD])
}

/// Skipped runs of every loaded pinwatch program. A program whose info
/// cannot be read is left out (its figure would be a guess).
pub fn read(ebpf: &Ebpf) -> Misses {
    let mut misses = Misses::new();
    for (name, program) in ebpf.programs() {
        let Some(key) = parse_name(name) else {
            continue;
        };
        let Ok(fd) = program.fd() else {
            continue; // not loaded
        };
        match recursion_misses(fd.as_fd().as_raw_fd()) {
            Ok(n) => {
                *misses.entry(key).or_default() += n;
            }
            Err(e) => log::debug!("bpf_prog_info of {name}: {e}"),
        }
    }
    misses
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
    Misses::from([
        (parse_name("gup_kretprobe_00").expect("known name"), 3),
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
}
