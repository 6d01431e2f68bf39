//! Weighted interleaving: an endless sequence of endpoint turns in which each endpoint appears in
//! proportion to its weight, spread evenly rather than bunched. Round robin takes one cycle of it
//! as its schedule; Maglev hands out table slots in its order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Endpoint indices in weighted, evenly spread order.
///
/// Endpoint `i` with weight `w` takes its `k`-th turn (from 0) at time `(2k + 1) / 2w`: the
/// midpoints of `w` equal slices of a unit of time (Sainte-Laguë's divisors). Turns are taken in
/// order of time, ties by index, so over one unit each endpoint takes exactly `w` turns, and in
/// any window the counts stay within one of their proportional share.
pub(super) struct WeightedTurns {
    due: BinaryHeap<Turn>,
}

#[derive(Debug, Clone, Copy)]
struct Turn {
    k: u64,
    weight: u64,
    index: usize,
}

impl Turn {
    /// Compares due times `(2k+1)/2w` exactly, by cross-multiplying.
    fn cmp_due(&self, other: &Turn) -> Ordering {
        let mine = u128::from(2 * self.k + 1) * u128::from(other.weight);
        let theirs = u128::from(2 * other.k + 1) * u128::from(self.weight);
        mine.cmp(&theirs).then(self.index.cmp(&other.index))
    }
}

// BinaryHeap is a max-heap; the turn due first must compare greatest.
impl Ord for Turn {
    fn cmp(&self, other: &Turn) -> Ordering {
        other.cmp_due(self)
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Turn) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Turn) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

impl WeightedTurns {
    /// Weights of 0 are taken as 1.
    pub(super) fn new(weights: impl IntoIterator<Item = u64>) -> WeightedTurns {
        let due = weights
            .into_iter()
            .enumerate()
            .map(|(index, weight)| Turn {
                k: 0,
                weight: weight.max(1),
                index,
            })
            .collect();
        WeightedTurns { due }
    }
}

impl Iterator for WeightedTurns {
    type Item = usize;

    /// The next endpoint's index; `None` only when built from no weights.
    fn next(&mut self) -> Option<usize> {
        let mut first = self.due.peek_mut()?;
        let index = first.index;
        first.k += 1;
        // Dropping the PeekMut moves the turn back to its place in the heap.
        drop(first);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_take_turns_in_index_order() {
        let order: Vec<usize> = WeightedTurns::new([1, 1, 1]).take(6).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_interleaved_not_bunched() {
        let order: Vec<usize> = WeightedTurns::new([1, 3]).take(8).collect();
        assert_eq!(order, [1, 0, 1, 1, 1, 0, 1, 1]);
        let order: Vec<usize> = WeightedTurns::new([2, 1]).take(3).collect();
        assert_eq!(order, [0, 1, 0]);
        let order: Vec<usize> = WeightedTurns::new([5, 1, 1]).take(7).collect();
        assert_eq!(order, [0, 0, 0, 1, 2, 0, 0]);
    }

    #[test]
    fn every_window_stays_near_its_share() {
        let weights = [7u64, 3, 1, 12, 5];
        let total: u64 = weights.iter().sum();
        let order: Vec<usize> = WeightedTurns::new(weights)
            .take(total as usize * 3)
            .collect();
        for window in [5usize, 17, 28] {
            for start in 0..order.len() - window {
                let mut counts = [0u64; 5];
                for &i in &order[start..start + window] {
                    counts[i] += 1;
                }
                for (i, &w) in weights.iter().enumerate() {
                    let share = w as f64 * window as f64 / total as f64;
                    let diff = (counts[i] as f64 - share).abs();
                    assert!(
                        diff < 2.0,
                        "window {window} at {start}: endpoint {i} {counts:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_weights_no_turns() {
        assert_eq!(WeightedTurns::new([]).next(), None);
    }
}
