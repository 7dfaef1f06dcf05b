//! Steps of the probes that the verifier checks once per program: in
//! the full object each is a global BPF function, which the verifier
//! checks on its own, with its arguments unknown, and then takes each call
//! of as returning an unknown number. A static (or inlined) function is
//! checked again for every path the verifier brings to its call, and
//! paths multiply along the accounting (each branch on a flag, a map
//! lookup or the return value doubles those after it where they differ
//! in a value a later test depends on). What the verifier walked on
//! Debian 6.12 (`verified_insns`), before and after:
//!
//! | programs | static | global |
//! |---|--:|--:|
//! | fentry entry, one get/pin function | 4 449 | 1 453 |
//! | fentry exit, one get/pin function | 3 845 | 1 873 |
//! | fentry entry, one release function | 1 951-2 237 | 1 412-1 660 |
//! | all 38 of `--attach fentry` | 115 528 | 51 873 |
//! | all of `--attach kprobe` | 103 461 | 48 751 |
//! | kprobe_multi entry and return | 8 126 + 3 798 | 3 523 + 1 978 |
//!
//! The price: a return makes three BPF-to-BPF calls it did not (the
//! accounting, the call site's row, the process and cgroup rows), 3-6 %
//! of the in-kernel cost of a one-page call under TCG in the overhead
//! benchmark (BENCHMARKS.md, "Start-up, fifth pass").
//!
//! The baseline object (5.10-5.16) calls the same steps inline: 5.10's
//! verifier takes only numbers and context pointers as a global function's
//! arguments.
//!
//! bpf-linker makes every function it is not told to export internal
//! (static), so `build.rs` exports each `extern "C" fn` of this file.

use pin_common::TaskState;

use crate::outcome::{Outcome, PathSplit};

/// The global functions themselves. Their pointer arguments may be null as
/// far as the verifier knows, so each checks.
#[cfg(not(feature = "baseline"))]
mod global {
    use pin_common::TaskState;

    use crate::{
        account, attribution, cgroup, failures, frame,
        outcome::{Outcome, PathSplit},
        settings,
    };

    /// See [`super::replaced_return_address`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_replaced_return_address(slot: u64, word: u64) -> u64 {
        frame::replaced_return_address(slot, word, settings::return_trampoline())
    }

    /// See [`super::account_call`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_account_call(state: *mut TaskState, ret: i64) -> u32 {
        // SAFETY: the caller's task state.
        if let Some(state) = unsafe { state.as_mut() } {
            account::account_call(state, ret);
        }
        0
    }

    /// See [`super::count_failure`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_count_failure(state: *const TaskState, ret: i64) -> u32 {
        // SAFETY: the caller's task state.
        if let Some(state) = unsafe { state.as_ref() } {
            failures::count(state, ret);
        }
        0
    }

    /// See [`super::account_caller`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_account_caller(
        state: *const TaskState,
        call: *const Outcome,
    ) -> u32 {
        // SAFETY: the caller's task state and outcome.
        if let (Some(state), Some(call)) = unsafe { (state.as_ref(), call.as_ref()) } {
            attribution::account_caller(state, call);
        }
        0
    }

    /// See [`super::remember_pins`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_remember_pins(state: *const TaskState, ret: i64, now: u64) -> u32 {
        // SAFETY: the caller's task state.
        if let Some(state) = unsafe { state.as_ref() } {
            attribution::remember_pins(state, ret, now);
        }
        0
    }

    /// See [`super::emit_call`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_emit_call(
        state: *const TaskState,
        ret: i64,
        ns: u64,
        pid_tgid: u64,
        paths: *const PathSplit,
    ) -> u32 {
        // SAFETY: the caller's task state and path split.
        if let (Some(state), Some(paths)) = unsafe { (state.as_ref(), paths.as_ref()) } {
            account::emit_call(state, ret, ns, pid_tgid, paths);
        }
        0
    }

    /// See [`super::count_rows`].
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn pinwatch_count_rows(ret: i64, is_pin: bool) -> u32 {
        account::count_process(ret, is_pin);
        cgroup::count_call(ret, is_pin);
        0
    }
}

/// [`crate::frame::replaced_return_address`].
#[inline(always)]
pub(crate) fn replaced_return_address(slot: u64, word: u64, trampoline: u64) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        // The global function reads the trampoline itself: it takes
        // nothing the verifier would have to check twice.
        let _ = trampoline;
        global::pinwatch_replaced_return_address(slot, word)
    }
    #[cfg(feature = "baseline")]
    crate::frame::replaced_return_address(slot, word, trampoline)
}

/// [`crate::account::account_call`].
#[inline(always)]
pub(crate) fn account_call(state: &mut TaskState, ret: i64) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_account_call(state, ret);
    #[cfg(feature = "baseline")]
    crate::account::account_call(state, ret);
}

/// [`crate::failures::count`].
#[inline(always)]
pub(crate) fn count_failure(state: &TaskState, ret: i64) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_count_failure(state, ret);
    #[cfg(feature = "baseline")]
    crate::failures::count(state, ret);
}

/// [`crate::attribution::account_caller`].
#[inline(always)]
pub(crate) fn account_caller(state: &TaskState, call: &Outcome) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_account_caller(state, call);
    #[cfg(feature = "baseline")]
    crate::attribution::account_caller(state, call);
}

/// [`crate::attribution::remember_pins`].
#[inline(always)]
pub(crate) fn remember_pins(state: &TaskState, ret: i64, now: u64) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_remember_pins(state, ret, now);
    #[cfg(feature = "baseline")]
    crate::attribution::remember_pins(state, ret, now);
}

/// [`crate::account::emit_call`].
#[inline(always)]
pub(crate) fn emit_call(state: &TaskState, ret: i64, ns: u64, pid_tgid: u64, paths: &PathSplit) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_emit_call(state, ret, ns, pid_tgid, paths);
    #[cfg(feature = "baseline")]
    crate::account::emit_call(state, ret, ns, pid_tgid, paths);
}

/// [`crate::account::count_process`] and [`crate::cgroup::count_call`]:
/// the call's process and cgroup rows, one call for both.
#[inline(always)]
pub(crate) fn count_rows(ret: i64, is_pin: bool) {
    #[cfg(not(feature = "baseline"))]
    global::pinwatch_count_rows(ret, is_pin);
    #[cfg(feature = "baseline")]
    {
        crate::account::count_process(ret, is_pin);
        crate::cgroup::count_call(ret, is_pin);
    }
}
