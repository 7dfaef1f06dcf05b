//! A variant's own counters (`GUP_STATS`), which a get/pin call that is
//! not deferred (see `pending`) reaches on its return: calls and how they
//! ended, pages by path, latency. In the full object the return counters
//! and the latency are global BPF functions, so that the verifier checks
//! them once per program (see the crate's doc).

use pin_common::{GupStats, errno_slot, latency_bucket};

use crate::{counters::add_to, outcome::PathSplit};

/// [`count_return`], which the verifier checks once per program: a global
/// BPF function in the full object, inline in the baseline one. Inline,
/// its branches on the return value (in full, short, nothing, an errno)
/// each carried a path of their own through the rest of the return's
/// counting, which the verifier walked again for each: 3 978 instructions
/// verified per return program on 6.12, of which the latency's 923.
#[inline(always)]
pub(crate) fn count_return_once(stats: &mut GupStats, nr: i64, ret: i64) {
    #[cfg(not(feature = "baseline"))]
    pinwatch_count_return(stats, nr, ret);
    #[cfg(feature = "baseline")]
    count_return(stats, nr, ret);
}

/// [`count_return`] as a global BPF function; its pointer may be null as
/// far as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_count_return(stats: *mut GupStats, nr: i64, ret: i64) -> u32 {
    // SAFETY: the variant's row of this CPU's `GUP_STATS`.
    if let Some(stats) = unsafe { stats.as_mut() } {
        count_return(stats, nr, ret);
    }
    0
}

/// [`count_latency`], which the verifier checks once per program (see
/// [`count_return_once`]): its bucket is computed without a count-leading-
/// zeros instruction, which BPF lacks, in about 45 instructions.
#[inline(always)]
pub(crate) fn count_latency_once(stats: &mut GupStats, ns: u64) -> usize {
    #[cfg(not(feature = "baseline"))]
    return pinwatch_count_latency(stats, ns) as usize;
    #[cfg(feature = "baseline")]
    count_latency(stats, ns)
}

/// [`count_latency`] as a global BPF function, returning the bucket; its
/// pointer may be null as far as the verifier knows.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_count_latency(stats: *mut GupStats, ns: u64) -> u32 {
    // SAFETY: the variant's row of this CPU's `GUP_STATS`.
    match unsafe { stats.as_mut() } {
        Some(stats) => count_latency(stats, ns) as u32,
        None => 0,
    }
}

/// A variant's counters of calls, pages asked for (`nr`) and returned, and
/// of how the call ended (in full, partly, with nothing, with an errno).
#[inline(always)]
fn count_return(stats: &mut GupStats, nr: i64, ret: i64) {
    add_to(&mut stats.calls, 1);
    if nr > 0 {
        add_to(&mut stats.pages_requested, nr as u64);
    }
    if ret > 0 {
        add_to(&mut stats.pages_returned, ret as u64);
        if ret < nr {
            add_to(&mut stats.partial, 1);
        }
    } else if ret == 0 {
        add_to(&mut stats.zero, 1);
    } else {
        add_to(&mut stats.errors, 1);
        let slot = errno_slot(ret.unsigned_abs());
        if let Some(errors) = stats.errno.get_mut(slot) {
            add_to(errors, 1);
        }
    }
}

/// A variant's fallbacks and pages by path.
#[inline(always)]
pub(crate) fn count_paths(stats: &mut GupStats, paths: &PathSplit) {
    if paths.fell_back {
        add_to(&mut stats.fallbacks, 1);
    }
    add_to(&mut stats.fast_pages, paths.fast_pages);
    add_to(&mut stats.slow_pages, paths.slow_pages);
}

/// A variant's latency sum, maximum and histogram; returns the call's
/// histogram bucket.
#[inline(always)]
fn count_latency(stats: &mut GupStats, ns: u64) -> usize {
    add_to(&mut stats.latency_sum_ns, ns);
    // A plain store: a maximum lost to a concurrent update is replaced by
    // the other update's (also real) value, and views take the interval's
    // maximum from the histogram, whose counts are exact.
    if ns > stats.latency_max_ns {
        stats.latency_max_ns = ns;
    }
    let latency_slot = latency_bucket(ns);
    if let Some(calls) = stats.latency_log2.get_mut(latency_slot) {
        add_to(calls, 1);
    }
    latency_slot
}
