//! Faults on a kernel that can trace: signals end every long-running
//! command cleanly (probes detached, recordings complete), SIGKILL leaves
//! no program, link or map of pinwatch in the kernel, a kernel that
//! refuses bpf() (seccomp) gives reduced mode with exact vmstat counts,
//! and an unmounted tracefs is mounted again. Each outcome is printed as a
//! `FAULT|...` line; `cargo xtask test` gathers them into
//! `docs/faults/vm.md`.
//!
//! The tests are declared here and their bodies live with their helpers in
//! one submodule per fault: libtest names a test by the module it is
//! declared in, and runs them in name order, so the matrix's filters
//! (`cargo xtask test --tests robustness::stop`) and the fault table's row
//! order stay what they were before the split.

use std::process::Child;

use crate::harness::Harness;

mod handover;
mod memlock;
pub(crate) mod objects;
mod privileges;
mod reduced;
mod signals;
mod tracefs;

/// One row of the VM fault table.
fn fault(h: &Harness, what: &str, outcome: &str) {
    eprintln!("FAULT|{}|{}|{what}|{outcome}", h.release, h.attach_arg());
}

/// Sends `sig` to a child pinwatch.
fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Each stop signal ends record, stat, trace and serve cleanly.
#[test]
fn signals_detach_and_finish_every_command() {
    signals::signals_detach_and_finish_every_command();
}

/// On stop the links go to the kernel's worker (6.5+) or to a child
/// that detaches them after pinwatch has gone; nothing is left either way.
#[test]
fn stop_hands_the_links_over() {
    handover::stop_hands_the_links_over();
}

/// SIGINT while stat starts up or attaches ends it cleanly, soon.
#[test]
fn stop_while_attaching_detaches_and_exits_cleanly() {
    signals::stop_while_attaching_detaches_and_exits_cleanly();
}

/// SIGKILL leaves no program, link or map of pinwatch in the kernel.
#[test]
fn sigkill_leaves_nothing_in_the_kernel() {
    signals::sigkill_leaves_nothing_in_the_kernel();
}

/// bpf() denied by seccomp: reduced mode, exact vmstat counts.
#[test]
fn refused_bpf_gives_reduced_mode_with_exact_vmstat() {
    reduced::refused_bpf_gives_reduced_mode_with_exact_vmstat();
}

/// Hidden kernel BTF: reduced mode, saying why.
#[test]
fn missing_btf_gives_reduced_mode_saying_why() {
    reduced::missing_btf_gives_reduced_mode_saying_why();
}

/// Reduced mode shows an io_uring fixed buffer's VmPin.
#[test]
fn reduced_mode_shows_vmpin() {
    reduced::reduced_mode_shows_vmpin();
}

/// An unmounted tracefs is mounted again.
#[test]
fn unmounted_tracefs_is_mounted_again() {
    tracefs::unmounted_tracefs_is_mounted_again();
}

/// A memlock limit pinwatch cannot raise is named where the kernel
/// charges BPF memory to it (before 5.11), and does not matter after.
#[test]
fn low_memlock_limit_is_named_where_it_counts() {
    memlock::low_memlock_limit_is_named_where_it_counts();
}

/// stat and record keep only the privileges they need once attached.
#[test]
fn privileges_are_shed_after_attaching() {
    privileges::privileges_are_shed_after_attaching();
}
