//! ROUND_ROBIN: weighted round robin over a schedule computed when config arrives.
//!
//! Envoy walks an EDF scheduler per worker; weft precomputes one cycle of the same kind of
//! interleaved order and shares a cursor, so a pick is one atomic increment and an index.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::CachePadded;
use super::interleave::WeightedTurns;

/// Longest schedule kept. Weights whose reduced sum is larger are scaled down to fit, which
/// shifts each endpoint's share by less than 1/65536 of the traffic.
const MAX_SCHEDULE: u64 = 1 << 16;

/// Weighted round robin over a fixed schedule and a shared cursor.
pub(crate) struct RoundRobin {
    schedule: Schedule,
    cursor: CachePadded<AtomicUsize>,
}

enum Schedule {
    /// Equal weights: endpoint `i` at step `i`, nothing to store.
    Rotation(usize),
    /// Endpoint indices of one weighted cycle.
    Table(Box<[u32]>),
}

impl Schedule {
    fn new(weights: &[u32]) -> Schedule {
        let weights = reduce(weights);
        if weights.iter().all(|&w| w == 1) {
            return Schedule::Rotation(weights.len());
        }
        let len: u64 = weights.iter().sum();
        let table = WeightedTurns::new(weights)
            .take(usize::try_from(len).unwrap_or(usize::MAX))
            // Endpoint counts are far below u32::MAX; halving the table's size is worth the cast.
            .map(|i| i as u32)
            .collect();
        Schedule::Table(table)
    }

    fn len(&self) -> usize {
        match self {
            Schedule::Rotation(n) => *n,
            Schedule::Table(t) => t.len(),
        }
    }
}

impl RoundRobin {
    /// A round robin over endpoints with these weights (at least one endpoint).
    ///
    /// The cursor starts at a random step, as Envoy's does, so that proxies started together
    /// do not all send their first request to the same endpoint.
    pub(crate) fn new(weights: &[u32]) -> RoundRobin {
        let schedule = Schedule::new(weights);
        let start = fastrand::usize(..schedule.len().max(1));
        RoundRobin::starting_at(schedule, start)
    }

    fn starting_at(schedule: Schedule, start: usize) -> RoundRobin {
        RoundRobin {
            schedule,
            cursor: CachePadded(AtomicUsize::new(start)),
        }
    }

    /// The next endpoint's index.
    pub(crate) fn pick(&self) -> usize {
        // Relaxed: picks need distinct steps, not ordering with other memory.
        let step = self.cursor.0.fetch_add(1, Ordering::Relaxed);
        match &self.schedule {
            Schedule::Rotation(n) => step % n,
            Schedule::Table(table) => table[step % table.len()] as usize,
        }
    }
}

/// Weights divided by their gcd (the same shares in a shorter cycle), then scaled down if the
/// cycle would still be longer than [`MAX_SCHEDULE`]. Every result is at least 1.
fn reduce(weights: &[u32]) -> Vec<u64> {
    let divisor = weights
        .iter()
        .fold(0, |g, &w| gcd(g, u64::from(w.max(1))))
        .max(1);
    let mut reduced: Vec<u64> = weights
        .iter()
        .map(|&w| u64::from(w.max(1)) / divisor)
        .collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SCHEDULE {
        for w in &mut reduced {
            let scaled = u128::from(*w) * u128::from(MAX_SCHEDULE) / u128::from(total);
            // scaled <= MAX_SCHEDULE, so it fits.
            *w = (scaled as u64).max(1);
        }
    }
    reduced
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(weights: &[u32]) -> Vec<usize> {
        let rr = RoundRobin::starting_at(Schedule::new(weights), 0);
        (0..rr.schedule.len()).map(|_| rr.pick()).collect()
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(cycle(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(cycle(&[5, 5]), [0, 1]);
        let rr = RoundRobin::starting_at(Schedule::new(&[1, 1, 1]), 0);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn weighted_cycle_is_interleaved_and_exact() {
        assert_eq!(cycle(&[1, 3]), [1, 0, 1, 1]);
        // Reduced by the gcd: the same cycle.
        assert_eq!(cycle(&[20, 60]), [1, 0, 1, 1]);
        assert_eq!(cycle(&[2, 1, 1]), [0, 1, 2, 0]);
    }

    #[test]
    fn cycle_counts_match_weights() {
        let weights = [3u32, 1, 4, 1, 5];
        let order = cycle(&weights);
        assert_eq!(order.len(), 14);
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(
                order.iter().filter(|&&p| p == i).count(),
                w as usize,
                "{order:?}"
            );
        }
    }

    #[test]
    fn huge_weights_are_scaled_into_a_bounded_schedule() {
        let weights = [1, 1_000_000, 999_999_937];
        let schedule = Schedule::new(&weights);
        assert!(schedule.len() as u64 <= MAX_SCHEDULE + 3);
        let order = cycle(&weights);
        let counts: Vec<usize> = (0..3)
            .map(|i| order.iter().filter(|&&p| p == i).count())
            .collect();
        assert!(counts[0] >= 1, "{counts:?}");
        let share = counts[1] as f64 / order.len() as f64;
        assert!((share - 0.001).abs() < 0.0005, "{counts:?}");
    }

    #[test]
    fn zero_weights_count_as_one() {
        assert_eq!(cycle(&[0, 0]), [0, 1]);
    }

    #[test]
    fn random_start_still_cycles_exactly() {
        let rr = RoundRobin::new(&[1, 2, 3]);
        let mut counts = [0; 3];
        for _ in 0..6 * 100 {
            counts[rr.pick()] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
    }
}
