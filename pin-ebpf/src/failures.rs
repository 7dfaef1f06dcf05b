//! Failed and short get/pin calls (`FAILURES`): each outermost call that
//! returned an errno, nothing, or fewer pages than asked for, counted by
//! (call site, variant, outcome, WRITE/LONGTERM) with its sizes and the
//! latest process, for the error view. Only such calls come here, so a
//! shared hash with atomic adds costs the common, successful call nothing.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use pin_common::{
    INSERTS_FAILURES, TaskState,
    failures::{
        FAILED_LONGTERM, FAILED_WRITE, FailureKey, FailureStats, OUTCOME_SHORT, OUTCOME_ZERO,
    },
};

use crate::{
    comm::current_comm,
    counters::{add_to, count_insert},
    maps::FAILURES,
    settings::foll_longterm,
};

/// The kernel's FOLL_WRITE (the same bit on every kernel).
const FOLL_WRITE: u64 = 1;

/// The `FAILURES` key of the outermost call in `state` that returned `ret`.
#[inline(always)]
fn key_of(state: &TaskState, ret: i64) -> FailureKey {
    let outcome = if ret < 0 {
        ret as i32
    } else if ret == 0 {
        OUTCOME_ZERO
    } else {
        OUTCOME_SHORT
    };
    let longterm = foll_longterm();
    let mut flags = 0;
    if state.flags & FOLL_WRITE != 0 {
        flags |= FAILED_WRITE;
    }
    if longterm != 0 && state.flags & longterm != 0 {
        flags |= FAILED_LONGTERM;
    }
    FailureKey {
        caller: state.caller,
        func: state.outer,
        outcome,
        flags,
        _pad: 0,
    }
}

/// [`count`], which the verifier checks once per program: a global BPF
/// function in the full object (see the crate's doc), a static one in the
/// baseline object.
#[inline(always)]
pub(crate) fn count_once(state: &TaskState, ret: i64) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_count_failure(state, ret);
    #[cfg(feature = "baseline")]
    count(state, ret);
}

/// [`count`] as a global BPF function; its pointer may be null as far as
/// the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_count_failure(state: *const TaskState, ret: i64) -> u32 {
    // SAFETY: the caller's task state.
    if let Some(state) = unsafe { state.as_ref() } {
        count(state, ret);
    }
    0
}

/// Counts the outermost call in `state`, which returned `ret` (an errno,
/// or fewer pages than `state.nr`). A BPF function of its own, not
/// inlined: the verifier then checks its body apart from the caller's
/// branches (once per path reaching it in the baseline object).
#[inline(never)]
fn count(state: &TaskState, ret: i64) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = key_of(state, ret);
    if FAILURES.get_ptr_mut(&key).is_none() {
        let fresh = FailureStats {
            first_ns: now,
            ..FailureStats::default()
        };
        // NOEXIST: another CPU may have created it first. An LRU map
        // makes room rather than failing, so the insert fails only then.
        if FAILURES
            .insert(&key, &fresh, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            count_insert(INSERTS_FAILURES);
        }
    }
    let Some(row) = FAILURES.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a live entry; counts are added atomically, the rest
    // describes the latest call.
    let row = unsafe { &mut *row };
    add_to(&mut row.calls, 1);
    let nr = if state.nr > 0 { state.nr as u64 } else { 0 };
    add_to(&mut row.pages_requested, nr);
    if ret > 0 {
        add_to(&mut row.pages_returned, ret as u64);
    }
    if nr > row.max_requested {
        row.max_requested = nr;
    }
    row.last_ns = now;
    row.last_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    row.comm = current_comm();
}
