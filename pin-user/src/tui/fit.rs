//! Numbers fitted to their column: exact where they fit, else scaled by
//! powers of 1000 with k/M/G/T/P/E (as bpftop and htop do), never clipped.
//! A table cell cut at its width would show the leading digits of a larger
//! number as if they were the number. Exact values stay in the details
//! view, `stat`, JSON and the metrics.

const UNITS: [&str; 6] = ["k", "M", "G", "T", "P", "E"];

/// A count in at most `width` characters.
pub fn count(n: u64, width: usize) -> String {
    let exact = n.to_string();
    if exact.len() <= width {
        return exact;
    }
    scaled(n as f64, width)
}

/// A rate or ratio: one decimal where it fits, else whole, else scaled.
pub fn rate(x: f64, width: usize) -> String {
    let x = x.max(0.0);
    let one = format!("{x:.1}");
    if one.len() <= width {
        return one;
    }
    let whole = format!("{x:.0}");
    if whole.len() <= width {
        return whole;
    }
    scaled(x, width)
}

/// `x` (at least 1000) scaled: the first unit under which it shows as at
/// most three digits, with one decimal where that fits `width`. When
/// nothing fits, the shortest form (a column narrower than 3 characters).
fn scaled(x: f64, width: usize) -> String {
    let mut shortest = String::new();
    let mut value = x;
    for unit in UNITS {
        value /= 1000.0;
        // 999.96 would print as 1000.0: that belongs to the next unit.
        if value.round() >= 1000.0 {
            continue;
        }
        let one = format!("{value:.1}{unit}");
        if one.len() <= width {
            return one;
        }
        shortest = format!("{value:.0}{unit}");
        break;
    }
    if shortest.is_empty() {
        shortest = format!("{value:.0}{}", UNITS[UNITS.len() - 1]);
    }
    shortest
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_where_it_fits() {
        assert_eq!(count(703_936, 8), "703936");
        assert_eq!(count(12_345_678, 8), "12345678");
        assert_eq!(rate(12.25, 8), "12.2");
        assert_eq!(rate(1_234_567.8, 8), "1234568");
    }

    #[test]
    fn scaled_where_it_does_not() {
        assert_eq!(count(123_456_789, 8), "123.5M");
        assert_eq!(count(999_999_999, 5), "1.0G");
        assert_eq!(count(u64::MAX, 8), "18.4E");
        assert_eq!(count(u64::MAX, 4), "18E");
        assert_eq!(rate(98_765_432.1, 6), "98.8M");
        assert_eq!(count(123_456, 4), "123k");
    }

    proptest! {
        /// Every count fits a column of 4 or more characters, and scaling
        /// never changes its magnitude by more than rounding.
        #[test]
        fn always_fits(n in any::<u64>(), width in 4usize..=12) {
            let s = count(n, width);
            prop_assert!(s.len() <= width, "{s:?} in {width}");
            let (digits, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
            let scale = match unit {
                "" => 1.0,
                u => 1000f64.powi(UNITS.iter().position(|x| *x == u).unwrap() as i32 + 1),
            };
            let shown: f64 = digits.parse::<f64>().unwrap() * scale;
            prop_assert!((shown - n as f64).abs() <= 0.5 * scale + 1.0, "{s:?} for {n}");
        }
    }
}
