//! The histograms every part agrees on: microseconds, 1 us .. 1 h, 3
//! significant digits (DESIGN.md), and how percentiles in milliseconds are
//! read off them.

use hdrhistogram::Histogram;

use crate::results::Percentiles;

/// Largest value, us (one hour).
pub const MAX_US: u64 = 3_600_000_000;
/// Significant digits.
pub const SIGFIG: u8 = 3;

/// An empty histogram with the standard bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("static bounds are valid")
}

impl Percentiles {
    /// Percentiles in ms of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}
