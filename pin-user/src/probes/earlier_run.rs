//! An earlier pinwatch whose probes the kernel is still detaching.
//!
//! A stop leaves the detach to the kernel ([`super::handoff`]), and up to
//! Linux 6.18 at least (7.3 no longer does) taking a BPF trampoline off a
//! function waits for an RCU-tasks grace period under ftrace's lock, the
//! lock every trampoline attach takes too. pinwatch's 18 trampolines kept
//! 6.12 busy for 3-4 s under TCG after a stop (22 `synchronize_rcu_tasks`
//! calls, 3.0 s in all, by bpftrace), and a start in that time waited for
//! all of them in its `attach functions`: 3.9-4.7 s instead of 0.6-0.8.
//! A start cannot shorten that, but it can say why it is slow.
//!
//! The kernel frees a link's id first and its program last, after the
//! detach; so pinwatch's fentry and fexit programs that it still holds
//! without a link are an earlier run's being detached (or, rarely, another
//! pinwatch's between its load and its attach). Before 6.5 a
//! `pinwatch-detach` child holds the earlier run's links and drops them
//! as it exits ([`super::detacher`]): the links not yet dropped still
//! exist, so there the count is of the programs unlinked so far, and can
//! be 0 while the child runs (finding the child would take a walk over
//! /proc before the load). The tracing multi programs (`multi_fentry`,
//! `multi_fexit`) are not counted: the kernels that have those links
//! (7.3) detach trampolines without the wait.

use std::collections::HashSet;

use super::misses::parse_name;

/// How many of pinwatch's trampoline programs (fentry and fexit) the
/// kernel holds that no link refers to; 0 also where the kernel's objects
/// cannot be listed (that needs CAP_SYS_ADMIN), since this only explains a
/// slow start. Call it before loading this run's programs, which are
/// without links until attached.
pub fn programs_being_detached() -> usize {
    let unlinked: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(|program| {
            program
                .inspect_err(|e| log::debug!("listing the kernel's BPF programs: {e}"))
                .ok()
        })
        .filter(|program| program.name_as_str().is_some_and(is_trampoline_program))
        .map(|program| program.id())
        .collect();
    if unlinked.is_empty() {
        return 0;
    }
    // Listed after the programs: a link made in between only hides a
    // program that is attached anyway.
    let linked: HashSet<u32> = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|link| link.program_id())
        .collect();
    unlinked.iter().filter(|id| !linked.contains(id)).count()
}

/// [`programs_being_detached`] on a thread of its own, beside the
/// kernel's discovery.
pub struct Listing(Option<std::thread::JoinHandle<usize>>);

impl Listing {
    /// Starts the listing (where no thread can be made, nothing is said).
    pub fn start() -> Self {
        let thread = std::thread::Builder::new()
            .name("earlier-run".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let programs = programs_being_detached();
                log::info!(
                    "{programs} programs of an earlier run being detached (listed in {} ms)",
                    started.elapsed().as_millis()
                );
                programs
            });
        Self(thread.ok())
    }

    /// Waits for the count and, where it is not 0, says [`notice`] on
    /// stderr: call it before this run loads its programs.
    pub fn say(self) -> usize {
        let programs = self.0.and_then(|t| t.join().ok()).unwrap_or(0);
        if programs > 0 {
            eprintln!("{}", notice(programs));
        }
        programs
    }
}

/// Whether `name`, as the kernel keeps it (15 bytes at most), is one of
/// pinwatch's fentry or fexit programs (`gup_fexit_07`, `rel_fentry_15`,
/// `put_fentry`).
pub fn is_trampoline_program(name: &str) -> bool {
    parse_name(name).is_some_and(|key| matches!(key.program, "fentry" | "fexit"))
}

/// The line said on stderr before attaching when `programs` of an
/// earlier run are still being detached.
pub fn notice(programs: usize) -> String {
    format!(
        "pinwatch: the kernel is still detaching an earlier pinwatch's probes ({programs} \
         of its programs unlinked, not yet freed); up to Linux 6.18 attaching waits for that, \
         a few seconds"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_programs_are_told_by_name_even_cut_to_fifteen_bytes() {
        assert!(is_trampoline_program("gup_fentry_00"));
        assert!(is_trampoline_program("gup_fexit_13"));
        assert!(is_trampoline_program("rel_fentry_16"));
        assert!(is_trampoline_program("put_fexit"));
        // Kprobes detach without a trampoline; other tools' programs are
        // not pinwatch's.
        assert!(!is_trampoline_program("gup_kretprobe_0"));
        assert!(!is_trampoline_program("rel_kprobe_14"));
        assert!(!is_trampoline_program("multi_kprobe"));
        assert!(!is_trampoline_program("fentry_tcp_v4"));
        assert!(!is_trampoline_program("gup_fentry_99"));
    }
}
