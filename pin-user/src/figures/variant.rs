//! Per-variant and per-release-function figures, and the figures summed
//! over variants (pages pinned, the fast path's fallback share).

use std::collections::BTreeMap;

use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats, ReleaseStats, catalog::is_fast};
use serde::Serialize;

use super::Latency;

/// One GUP variant over an interval (or since start), as `stat --json`
/// prints it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VariantFigures {
    /// Kernel function name.
    pub variant: &'static str,
    /// Whether the variant has a lockless fast path (fallbacks apply).
    pub fast_path: bool,
    /// Outermost calls.
    pub calls: u64,
    /// Pages requested.
    pub pages_requested: u64,
    /// Pages returned.
    pub pages: u64,
    /// Calls returning fewer pages than requested (but some).
    pub partial: u64,
    /// Calls returning 0.
    pub zero: u64,
    /// Calls returning an error.
    pub errors: u64,
    /// Errors by errno name.
    pub errno: BTreeMap<String, u64>,
    /// Fast-path calls that fell back to the slow path.
    pub fallbacks: u64,
    /// Pages taken by the fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path after a fallback.
    pub slow_pages: u64,
    /// Latency.
    pub latency: Latency,
}

impl VariantFigures {
    /// The figures of variant `id` from its counters.
    pub fn new(id: usize, d: &GupStats) -> Self {
        VariantFigures {
            variant: FUNCS[id].name,
            fast_path: is_fast(id as u32),
            calls: d.calls,
            pages_requested: d.pages_requested,
            pages: d.pages_returned,
            partial: d.partial,
            zero: d.zero,
            errors: d.errors,
            errno: errno_counts(d),
            fallbacks: d.fallbacks,
            fast_pages: d.fast_pages,
            slow_pages: d.slow_pages,
            latency: Latency::from_stats(d),
        }
    }

    /// Pages returned per call; `None` without calls.
    pub fn pages_per_call(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.pages as f64 / self.calls as f64)
    }

    /// `n` as a share of the calls (0..=1); `None` without calls.
    pub fn share_of_calls(&self, n: u64) -> Option<f64> {
        (self.calls > 0).then(|| n as f64 / self.calls as f64)
    }

    /// `n` in percent of the calls; `None` without calls.
    pub fn percent_of_calls(&self, n: u64) -> Option<f64> {
        (self.calls > 0).then(|| 100.0 * n as f64 / self.calls as f64)
    }

    /// Share of calls that fell back to the slow path; `None` for a variant
    /// without a fast path, or without calls.
    pub fn fallback_ratio(&self) -> Option<f64> {
        self.fast_path
            .then(|| self.share_of_calls(self.fallbacks))
            .flatten()
    }

    /// [`Self::fallback_ratio`] in percent.
    pub fn fallback_percent(&self) -> Option<f64> {
        self.fast_path
            .then(|| self.percent_of_calls(self.fallbacks))
            .flatten()
    }

    /// Share of calls that returned an error; `None` without calls.
    pub fn error_ratio(&self) -> Option<f64> {
        self.share_of_calls(self.errors)
    }
}

/// One release function over an interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReleaseFigures {
    /// Kernel function name.
    pub function: &'static str,
    /// Outermost calls by GUP's callers.
    pub calls: u64,
    /// Pages they released.
    pub pages: u64,
}

impl ReleaseFigures {
    /// The figures of release function `index` (its id minus
    /// `GUP_FUNC_COUNT`) from its counters.
    pub fn new(index: usize, r: &ReleaseStats) -> Self {
        ReleaseFigures {
            function: FUNCS[GUP_FUNC_COUNT + index].name,
            calls: r.calls,
            pages: r.pages,
        }
    }
}

/// Pages returned by the FOLL_PIN variants (per-variant counters, indexed
/// by function id).
pub fn pinned_pages(gup: &[GupStats]) -> u64 {
    gup.iter()
        .enumerate()
        .filter(|&(i, _)| FUNCS[i].is_pin)
        .map(|(_, g)| g.pages_returned)
        .sum()
}

/// Fallbacks in percent of the calls of every variant with a fast path;
/// `None` without such calls.
pub fn fallback_percent(gup: &[GupStats]) -> Option<f64> {
    let (fallbacks, calls) = gup
        .iter()
        .enumerate()
        .filter(|&(i, _)| is_fast(i as u32))
        .fold((0, 0), |(f, c), (_, g)| (f + g.fallbacks, c + g.calls));
    (calls > 0).then(|| 100.0 * fallbacks as f64 / calls as f64)
}

/// Symbolic name of an errno value GUP returns.
pub fn errno_name(errno: usize) -> String {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::EHWPOISON => "EHWPOISON",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// A variant's error returns by errno name (only those that occurred).
pub fn errno_counts(s: &GupStats) -> BTreeMap<String, u64> {
    s.errno
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(e, n)| (errno_name(e), *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(14), "EFAULT");
        assert_eq!(errno_name(133), "EHWPOISON");
        assert_eq!(errno_name(99), "E99");
    }

    #[test]
    fn ratios_need_calls_and_a_fast_path() {
        let id = FUNCS
            .iter()
            .position(|f| f.name == "pin_user_pages_fast")
            .unwrap();
        let mut s = GupStats::ZERO;
        assert_eq!(VariantFigures::new(id, &s).fallback_ratio(), None);
        s.calls = 10;
        s.fallbacks = 2;
        s.pages_returned = 40;
        let v = VariantFigures::new(id, &s);
        assert_eq!(v.fallback_ratio(), Some(0.2));
        assert_eq!(v.fallback_percent(), Some(20.0));
        assert_eq!(v.pages_per_call(), Some(4.0));
        let slow = FUNCS
            .iter()
            .position(|f| f.name == "get_user_pages")
            .unwrap();
        assert_eq!(VariantFigures::new(slow, &s).fallback_ratio(), None);
    }
}
