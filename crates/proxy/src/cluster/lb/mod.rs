//! Load balancers: which of a cluster's endpoints a request goes to.
//!
//! Each is built once from the endpoints when config arrives and is immutable after; a pick is
//! lock-free (an atomic cursor, random draws, or a lookup in a precomputed ring or table) and
//! returns an index into the cluster's endpoints.

mod interleave;
mod least_request;
pub(crate) mod maglev;
mod random;
pub(crate) mod ring_hash;
mod round_robin;

use std::sync::Arc;

use least_request::LeastRequest;
use maglev::Maglev;
use random::Random;
use ring_hash::RingHash;
use round_robin::RoundRobin;

use super::Endpoint;

/// A cluster's load balancing algorithm with its parameters, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

/// A built load balancer over a non-empty list of endpoints.
// One per cluster, inside the cluster: unboxed, a pick saves a pointer chase, and the padded
// round robin cursor costs a few hundred bytes per cluster.
#[expect(clippy::large_enum_variant)]
pub(crate) enum Balancer {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Random(Random),
    RingHash(RingHash),
    Maglev(Maglev),
}

impl Balancer {
    /// Builds the balancer for `endpoints`; `None` when there are none (nothing to pick).
    pub(crate) fn new(algorithm: Algorithm, endpoints: &[Arc<Endpoint>]) -> Option<Balancer> {
        if endpoints.is_empty() {
            return None;
        }
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Some(match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            Algorithm::LeastRequest => Balancer::LeastRequest(LeastRequest::new(&weights)),
            Algorithm::Random => Balancer::Random(Random::new(&weights)),
            Algorithm::RingHash { minimum_ring_size } => {
                Balancer::RingHash(RingHash::new(endpoints, minimum_ring_size))
            }
            Algorithm::Maglev { table_size } => {
                Balancer::Maglev(Maglev::new(endpoints, table_size))
            }
        })
    }

    /// An index into `endpoints` (the slice this was built from). `hash` is the request's
    /// consistent hash key, if it has one; hashing balancers without one pick a random point,
    /// as Envoy does, which still follows the endpoints' weights.
    pub(crate) fn pick(&self, endpoints: &[Arc<Endpoint>], hash: Option<u64>) -> usize {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(),
            Balancer::LeastRequest(lr) => lr.pick(endpoints),
            Balancer::Random(random) => random.pick(),
            Balancer::RingHash(ring) => ring.pick(hash.unwrap_or_else(|| fastrand::u64(..))),
            Balancer::Maglev(table) => table.pick(hash.unwrap_or_else(|| fastrand::u64(..))),
        }
    }
}

/// Keeps a value written on every pick on its own cache line, so that picks on other cores do
/// not also invalidate the read-only data next to it. 128 bytes because x86's adjacent-line
/// prefetcher pulls lines in pairs.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);
