//! A fixed log2-bucket histogram of atomics: recording is two relaxed atomic adds and
//! takes no lock, so the data path never waits for a scrape.

use std::sync::atomic::{AtomicU64, Ordering};

/// The smallest bucket bound is 2^MIN_SHIFT µs (64 µs): shorter waits are all "no real
/// wait" for an operator, and fewer buckets keep scrapes small.
const MIN_SHIFT: u32 = 6;

/// Finite bounds 64 µs, 128 µs, ... 2^27 µs (134 s, past the default query_wait_timeout of
/// 120 s), plus the +Inf bucket.
pub const BUCKETS: usize = 23;

/// Wait times of one pool.
#[derive(Debug, Default)]
pub struct WaitHistogram {
    /// Per-bucket counts (not cumulative: one add per sample).
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

/// A copy for exposition: cumulative counts per finite bound, then the total.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, samples <= bound), ascending.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// The bucket a sample of `micros` falls in (bounds are inclusive, as Prometheus' `le`).
fn index(micros: u64) -> usize {
    if micros <= 1 << MIN_SHIFT {
        return 0;
    }
    // ceil(log2(micros)) for micros >= 2.
    let ceil_log2 = 64 - (micros - 1).leading_zeros();
    ((ceil_log2 - MIN_SHIFT) as usize).min(BUCKETS - 1)
}

/// Upper bound of finite bucket `i`, in seconds.
fn bound_seconds(i: usize) -> f64 {
    (1u64 << (MIN_SHIFT as usize + i)) as f64 / 1e6
}

impl WaitHistogram {
    pub fn record(&self, micros: u64) {
        self.counts[index(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS - 1);
        for (i, c) in self.counts.iter().enumerate() {
            cumulative = cumulative.wrapping_add(c.load(Ordering::Relaxed));
            if i < BUCKETS - 1 {
                buckets.push((bound_seconds(i), cumulative));
            }
        }
        // The count is derived from the buckets read, so `_count` always equals the +Inf
        // bucket even while samples are being added.
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_powers_of_two() {
        assert_eq!(index(0), 0);
        assert_eq!(index(64), 0);
        assert_eq!(index(65), 1);
        assert_eq!(index(128), 1);
        assert_eq!(index(129), 2);
        assert_eq!(index(1 << 27), BUCKETS - 2);
        assert_eq!(index((1 << 27) + 1), BUCKETS - 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(bound_seconds(0), 0.000064);
    }

    #[test]
    fn snapshot_is_cumulative() {
        let h = WaitHistogram::default();
        for us in [10, 100, 100, 5_000_000, u64::MAX / 4] {
            h.record(us);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets.len(), BUCKETS - 1);
        assert_eq!(s.buckets[0], (0.000064, 1));
        assert_eq!(s.buckets[1].1, 3);
        assert_eq!(
            s.buckets.last().map(|b| b.1),
            Some(4),
            "one sample past 134 s"
        );
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
