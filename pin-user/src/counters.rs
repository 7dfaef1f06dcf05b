//! Counter arithmetic: summing per-CPU slots or intervals ([`Counters::merge`])
//! and differencing two reads ([`Counters::delta`]), generated for every
//! counter struct from one field list (the `counters!` macro), so a new field is one
//! edit and a field left out of the list does not compile.

use pin_common::{CallerStats, GupStats, PinBalance, ReleaseStats};

/// Counters that add up and difference field by field.
pub trait Counters {
    /// Adds `other` in: another CPU's slot, or a later interval.
    fn merge(&mut self, other: &Self);
    /// What `self` counted since `earlier`, saturating at 0 (a counter read
    /// from an entry created anew is smaller than the old one).
    fn delta(&self, earlier: &Self) -> Self;
}

/// Implements [`Counters`] for a struct from its field list, by kind:
/// - `sum`: added and differenced;
/// - `hist`: arrays (histograms, per-errno counts) added and differenced
///   slot by slot;
/// - `max`: maxima, merged by `max`; a delta's is 0, since a maximum
///   cannot be differenced (views derive the interval's from histograms);
/// - `stamp`: creation times, merged by `max` (set in the creating CPU's
///   slot only), kept from the later read in a delta;
/// - `latest`: labels (a comm), taken from the later value.
///
/// Every field of the struct must be listed exactly once: the generated
/// code destructures it without `..`.
macro_rules! counters {
    ($ty:ty {
        sum: [$($sum:ident),* $(,)?],
        hist: [$($hist:ident),* $(,)?],
        max: [$($max:ident),* $(,)?],
        stamp: [$($stamp:ident),* $(,)?],
        latest: [$($latest:ident),* $(,)?] $(,)?
    }) => {
        impl $crate::counters::Counters for $ty {
            fn merge(&mut self, other: &Self) {
                let Self { $($sum: _,)* $($hist: _,)* $($max: _,)* $($stamp: _,)* $($latest: _,)* } = other;
                $(self.$sum += other.$sum;)*
                $(for (a, b) in self.$hist.iter_mut().zip(other.$hist.iter()) {
                    *a += b;
                })*
                $(self.$max = self.$max.max(other.$max);)*
                $(self.$stamp = self.$stamp.max(other.$stamp);)*
                $(self.$latest.clone_from(&other.$latest);)*
            }

            fn delta(&self, earlier: &Self) -> Self {
                let mut d = self.clone();
                $(d.$sum = self.$sum.saturating_sub(earlier.$sum);)*
                $(for (slot, (cur, prev)) in d.$hist.iter_mut().zip(self.$hist.iter().zip(earlier.$hist.iter())) {
                    *slot = cur.saturating_sub(*prev);
                })*
                $(d.$max = 0;)*
                d
            }
        }
    };
}
pub(crate) use counters;

counters!(GupStats {
    sum: [
        calls,
        pages_requested,
        pages_returned,
        partial,
        zero,
        errors,
        fallbacks,
        fast_pages,
        slow_pages,
        latency_sum_ns,
        missed_returns,
    ],
    hist: [latency_log2, errno],
    max: [latency_max_ns],
    stamp: [],
    latest: [],
});

counters!(CallerStats {
    sum: [
        calls,
        pages,
        fallbacks,
        errors,
        fast_pages,
        slow_pages,
        latency_sum_ns,
        pins_tracked,
        pins_released,
        hold_sum_ns,
    ],
    hist: [latency_log2, hold_log2],
    max: [],
    stamp: [first_ns],
    latest: [],
});

counters!(ReleaseStats {
    sum: [calls, pages],
    hist: [],
    max: [],
    stamp: [],
    latest: [],
});

counters!(PinBalance {
    sum: [pinned, released, gup_released, irq_released],
    hist: [],
    max: [],
    stamp: [],
    latest: [],
});

/// Arrays of plain counters (the health counters).
impl<const N: usize> Counters for [u64; N] {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.iter_mut().zip(other) {
            *a += b;
        }
    }

    fn delta(&self, earlier: &Self) -> Self {
        std::array::from_fn(|i| self[i].saturating_sub(earlier[i]))
    }
}

/// Sums a sequence of counters (per-CPU slots) into `zero`.
pub fn sum<'a, T: Counters + 'a>(zero: T, slots: impl IntoIterator<Item = &'a T>) -> T {
    slots.into_iter().fold(zero, |mut total, slot| {
        total.merge(slot);
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ProcTotals;
    use pin_common::LATENCY_BUCKETS;
    use proptest::prelude::*;

    fn stats(calls: u64, pages: u64, bucket: usize) -> GupStats {
        let mut s = GupStats::ZERO;
        s.calls = calls;
        s.pages_returned = pages;
        s.latency_log2[bucket] = calls;
        s.errno[14] = calls / 2;
        s
    }

    proptest! {
        #[test]
        fn merge_then_delta_roundtrips(a in 0u64..1 << 40, b in 0u64..1 << 40, bucket in 0usize..LATENCY_BUCKETS) {
            let base = stats(a, a * 3, bucket);
            let mut total = base;
            total.merge(&stats(b, b * 3, bucket));
            let d = total.delta(&base);
            prop_assert_eq!(d.calls, b);
            prop_assert_eq!(d.pages_returned, b * 3);
            prop_assert_eq!(d.latency_log2[bucket], b);
            prop_assert_eq!(d.errno[14], b / 2);
        }
    }

    #[test]
    fn maxima_merge_and_do_not_difference() {
        let mut a = GupStats::ZERO;
        a.latency_max_ns = 5;
        let mut b = GupStats::ZERO;
        b.latency_max_ns = 9;
        a.merge(&b);
        assert_eq!(a.latency_max_ns, 9);
        assert_eq!(a.delta(&b).latency_max_ns, 0);
    }

    #[test]
    fn stamps_and_labels_come_from_the_later_read() {
        let earlier = ProcTotals {
            comm: "old".into(),
            calls: 3,
            first_ns: 10,
            ..Default::default()
        };
        let later = ProcTotals {
            comm: "new".into(),
            calls: 5,
            first_ns: 10,
            ..Default::default()
        };
        let d = later.delta(&earlier);
        assert_eq!(
            (d.comm.text().as_ref(), d.calls, d.first_ns),
            ("new", 2, 10)
        );
        let mut total = earlier;
        total.merge(&later);
        assert_eq!((total.comm.text().as_ref(), total.calls), ("new", 8));
    }
}
