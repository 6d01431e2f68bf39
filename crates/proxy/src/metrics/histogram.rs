//! A histogram of fixed buckets on atomics: an observation is two or three relaxed adds, with
//! no lock (prometheus-client's own histogram takes a lock per observation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Istio's buckets for `istio_request_duration_milliseconds` (ms).
pub const DURATION_MS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`: powers of ten.
pub const BYTES: &[f64] = &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum, in thousandths of the unit (durations in µs): an integer add.
    sum_milli: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_milli: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_milli.fetch_add((v * 1000.0) as u64, Relaxed);
    }

    /// (sum, count, per-bucket counts with their upper bounds), as the encoder wants them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        (self.sum_milli.load(Relaxed) as f64 / 1000.0, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(DURATION_MS);
        h.observe(0.5); // le 0.5: bounds are inclusive, as Prometheus's
        h.observe(3.0);
        h.observe(7_200_000.0);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 7_200_003.5).abs() < 0.01);
        assert_eq!(buckets[0], (0.5, 1));
        assert_eq!(buckets[2], (5.0, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }
}
