//! RANDOM: an endpoint drawn at random in proportion to its weight. Also the sampler behind
//! LEAST_REQUEST's two choices.
//!
//! Envoy's RANDOM draws uniformly over hosts and ignores endpoint weights; weft honours them.
//! With equal weights (Istio's default) the two are the same.

/// Draws endpoint indices at random, weighted.
pub(crate) enum Random {
    /// All weights equal: one uniform draw.
    Uniform(usize),
    /// `cumulative[i]` is the sum of the weights of endpoints `0..=i`; a draw below the total
    /// lands in exactly one endpoint's interval.
    Weighted(Box<[u64]>),
}

impl Random {
    /// A sampler over endpoints with these weights (at least one endpoint; 0 counts as 1).
    pub(crate) fn new(weights: &[u32]) -> Random {
        let first = weights.first().copied().unwrap_or(1).max(1);
        if weights.iter().all(|&w| w.max(1) == first) {
            return Random::Uniform(weights.len());
        }
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w.max(1));
                Some(*sum)
            })
            .collect();
        Random::Weighted(cumulative)
    }

    /// How many endpoints are sampled.
    pub(crate) fn len(&self) -> usize {
        match self {
            Random::Uniform(n) => *n,
            Random::Weighted(cumulative) => cumulative.len(),
        }
    }

    /// A random endpoint index.
    pub(crate) fn pick(&self) -> usize {
        match self {
            Random::Uniform(n) => fastrand::usize(..(*n).max(1)),
            Random::Weighted(cumulative) => {
                let total = cumulative.last().copied().unwrap_or(1);
                owner(cumulative, fastrand::u64(..total))
            }
        }
    }

    /// A random endpoint index other than `not`, weighted among the rest. Needs two endpoints.
    pub(crate) fn pick_other(&self, not: usize) -> usize {
        match self {
            Random::Uniform(n) => {
                // Draw among n-1 and step over `not`.
                let draw = fastrand::usize(..n.saturating_sub(1).max(1));
                if draw >= not { draw + 1 } else { draw }
            }
            Random::Weighted(cumulative) => {
                let end = cumulative.get(not).copied().unwrap_or(0);
                let start = match not.checked_sub(1) {
                    Some(prev) => cumulative.get(prev).copied().unwrap_or(0),
                    None => 0,
                };
                let total = cumulative.last().copied().unwrap_or(1);
                let excluded = end - start;
                // Draw over the total without `not`'s interval, then shift draws at or past
                // its start over it.
                let mut draw = fastrand::u64(..(total - excluded).max(1));
                if draw >= start {
                    draw += excluded;
                }
                owner(cumulative, draw)
            }
        }
    }
}

/// The endpoint whose interval holds `draw`: the first with a cumulative weight above it.
fn owner(cumulative: &[u64], draw: u64) -> usize {
    cumulative.partition_point(|&c| c <= draw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(draws: impl Fn() -> usize, n: usize, picks: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for _ in 0..picks {
            counts[draws()] += 1;
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn equal_weights_are_uniform() {
        fastrand::seed(1);
        let random = Random::new(&[2, 2, 2, 2]);
        assert!(matches!(random, Random::Uniform(4)));
        for share in shares(|| random.pick(), 4, 20_000) {
            assert!((share - 0.25).abs() < 0.02, "{share}");
        }
    }

    #[test]
    fn draws_follow_weights() {
        fastrand::seed(2);
        let random = Random::new(&[1, 3]);
        let got = shares(|| random.pick(), 2, 10_000);
        assert!((got[0] - 0.25).abs() < 0.02, "{got:?}");
        let random = Random::new(&[0, 1, 2]);
        let got = shares(|| random.pick(), 3, 10_000);
        assert!((got[0] - 0.25).abs() < 0.02, "{got:?}");
        assert!((got[2] - 0.50).abs() < 0.02, "{got:?}");
    }

    #[test]
    fn pick_other_never_returns_the_excluded_one() {
        fastrand::seed(3);
        for random in [Random::new(&[1, 1, 1]), Random::new(&[1, 2, 5])] {
            for not in 0..3 {
                let got = shares(|| random.pick_other(not), 3, 3_000);
                assert_eq!(got[not], 0.0);
            }
        }
        let random = Random::new(&[1, 2, 5]);
        // Without endpoint 1 the rest share 1:5.
        let got = shares(|| random.pick_other(1), 3, 12_000);
        assert!((got[0] - 1.0 / 6.0).abs() < 0.02, "{got:?}");
    }
}
