//! What an outermost get/pin call came to at its return: pages by path
//! (fast or slow), whether it fell back, its latency. Worked out once from
//! the thread's state, then folded into each set of counters that takes it
//! (the variant's in `account`, the call site's in `attribution`).

use pin_common::TaskState;

/// How a call that went through the fast path split its pages (all zero
/// for a call that did not).
#[derive(Clone, Copy)]
pub struct PathSplit {
    /// Pages taken by the lockless fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path after a fallback.
    pub slow_pages: u64,
    /// Whether the fast path fell back to the slow one.
    pub fell_back: bool,
}

impl PathSplit {
    /// No pages by either path, no fallback.
    const NONE: Self = Self {
        fast_pages: 0,
        slow_pages: 0,
        fell_back: false,
    };

    /// The split of the outermost call in `state`.
    #[inline(always)]
    pub fn of(state: &TaskState) -> Self {
        if state.fast_level == 0 {
            return Self::NONE;
        }
        if state.fallback_level != 0 {
            let fast = state.fast_nr - state.fallback_nr;
            let fast = if fast > 0 { fast as u64 } else { 0 };
            let slow = if state.slow_ret > 0 {
                state.slow_ret as u64
            } else {
                0
            };
            Self {
                fast_pages: fast,
                slow_pages: slow,
                fell_back: true,
            }
        } else if state.fast_ret > 0 {
            Self {
                fast_pages: state.fast_ret as u64,
                ..Self::NONE
            }
        } else {
            Self::NONE
        }
    }
}

/// An outermost call's figures at its return.
#[derive(Clone, Copy)]
pub struct Outcome {
    /// Return value: pages, or a negative errno.
    pub ret: i64,
    /// Entry to return, in nanoseconds.
    pub ns: u64,
    /// Its bucket in the log2 latency histograms.
    pub latency_slot: usize,
    /// Its pages by path.
    pub paths: PathSplit,
}
