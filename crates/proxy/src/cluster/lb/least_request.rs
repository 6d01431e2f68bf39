//! LEAST_REQUEST: power of two choices. Draw two distinct endpoints at random and send to the
//! one with fewer requests in flight (Mitzenmacher, "The Power of Two Choices in Randomized Load
//! Balancing").
//!
//! With equal weights this is Envoy's algorithm (Envoy may draw the same host twice; weft draws
//! two distinct ones). With unequal weights Envoy runs an EDF schedule over the dynamic weights
//! `weight / (active + 1)`; weft keeps two choices, lock-free, and makes weights count twice
//! instead: candidates are drawn in proportion to weight, and compared by requests in flight per
//! unit of weight, ties going to the first drawn. Idle, each endpoint gets exactly its weight's
//! share of requests; loaded, requests in flight settle in proportion to weight, which is where
//! Envoy's dynamic weights settle too.

use std::sync::Arc;

use super::random::Random;
use crate::cluster::Endpoint;

/// Two random choices, the less loaded wins.
pub(crate) struct LeastRequest {
    sampler: Random,
}

impl LeastRequest {
    /// Over endpoints with these weights (at least one endpoint).
    pub(crate) fn new(weights: &[u32]) -> LeastRequest {
        LeastRequest {
            sampler: Random::new(weights),
        }
    }

    /// The chosen index into `endpoints`, the slice this was built from.
    pub(crate) fn pick(&self, endpoints: &[Arc<Endpoint>]) -> usize {
        let first = self.sampler.pick();
        if self.sampler.len() < 2 {
            return first;
        }
        let second = self.sampler.pick_other(first);
        match (endpoints.get(first), endpoints.get(second)) {
            (Some(a), Some(b)) if less_loaded(b, a) => second,
            _ => first,
        }
    }
}

/// Whether `a` has strictly fewer requests in flight per unit of weight than `b`.
fn less_loaded(a: &Endpoint, b: &Endpoint) -> bool {
    // a.active / a.weight < b.active / b.weight, without division.
    let lhs = a.active_requests() as u128 * u128::from(b.weight);
    let rhs = b.active_requests() as u128 * u128::from(a.weight);
    lhs < rhs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        Endpoint::for_test_weights("10.0.0", 80, weights)
    }

    fn counts(lb: &LeastRequest, eps: &[Arc<Endpoint>], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..picks {
            counts[lb.pick(eps)] += 1;
        }
        counts
    }

    #[test]
    fn idle_endpoints_share_evenly() {
        fastrand::seed(11);
        let eps = endpoints(&[1, 1, 1, 1]);
        let lb = LeastRequest::new(&[1, 1, 1, 1]);
        for c in counts(&lb, &eps, 10_000) {
            assert!((c as f64 / 10_000.0 - 0.25).abs() < 0.02, "{c}");
        }
    }

    #[test]
    fn idle_weighted_endpoints_share_by_weight() {
        fastrand::seed(12);
        let eps = endpoints(&[1, 3]);
        let lb = LeastRequest::new(&[1, 3]);
        let c = counts(&lb, &eps, 10_000);
        assert!((c[0] as f64 / 10_000.0 - 0.25).abs() < 0.02, "{c:?}");
    }

    #[test]
    fn busy_endpoint_is_avoided() {
        fastrand::seed(13);
        let eps = endpoints(&[1, 1, 1]);
        let lb = LeastRequest::new(&[1, 1, 1]);
        for _ in 0..3 {
            eps[0].request_started();
        }
        // Endpoint 0 is always compared against an idle one, and loses.
        let c = counts(&lb, &eps, 3_000);
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1_200 && c[2] > 1_200, "{c:?}");
    }

    #[test]
    fn load_is_compared_per_unit_of_weight() {
        fastrand::seed(14);
        let eps = endpoints(&[1, 3]);
        let lb = LeastRequest::new(&[1, 3]);
        // 2 in flight on weight 3 is less load than 1 on weight 1.
        eps[0].request_started();
        eps[1].request_started();
        eps[1].request_started();
        assert_eq!(counts(&lb, &eps, 1_000), [0, 1_000]);
        // 3 on weight 3 equals 1 on weight 1: ties go by the weighted draw.
        eps[1].request_started();
        let c = counts(&lb, &eps, 10_000);
        assert!((c[0] as f64 / 10_000.0 - 0.25).abs() < 0.02, "{c:?}");
    }

    #[test]
    fn single_endpoint() {
        let eps = endpoints(&[7]);
        let lb = LeastRequest::new(&[7]);
        assert_eq!(lb.pick(&eps), 0);
    }
}
