//! MAGLEV: consistent hashing by lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! Each endpoint has its own permutation of the table's slots, derived from its address. The
//! endpoints take turns, in proportion to weight, claiming the next free slot of their
//! permutation until the table is full. A request goes to `table[hash % size]`: one division
//! and one load. Removing an endpoint moves its slots and a few others.

use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use super::interleave::WeightedTurns;
use crate::cluster::Endpoint;

/// `tableSize` when unset, as Envoy.
pub(crate) const DEFAULT_TABLE_SIZE: u64 = 65537;
/// The largest `tableSize` accepted, as Envoy.
pub(crate) const MAX_TABLE_SIZE: u64 = 5_000_011;

const EMPTY: u32 = u32::MAX;

/// A full Maglev lookup table of endpoint indices.
pub(crate) struct Maglev {
    table: Box<[u32]>,
}

/// Where an endpoint's permutation is: slot `next`, advancing by `skip` (mod the table size).
struct Permutation {
    next: u64,
    skip: u64,
}

impl Maglev {
    /// Builds the table for `endpoints` (at least one). `size` must be prime, which makes every
    /// `skip` in `1..size` walk all slots.
    pub(crate) fn new(endpoints: &[Arc<Endpoint>], size: u64) -> Maglev {
        let size = size.max(2);
        let mut permutations: Vec<Permutation> = endpoints
            .iter()
            .map(|e| {
                let key = e.address.to_string();
                Permutation {
                    next: xxh64(key.as_bytes(), 0) % size,
                    skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                }
            })
            .collect();

        let mut table = vec![EMPTY; usize::try_from(size).unwrap_or(0)].into_boxed_slice();
        let mut free = table.len();
        let turns = WeightedTurns::new(endpoints.iter().map(|e| u64::from(e.weight)));
        for index in turns {
            if free == 0 {
                break;
            }
            let Some(p) = permutations.get_mut(index) else {
                break;
            };
            // Ends: the permutation visits every slot and at least one is free.
            while table[p.next as usize] != EMPTY {
                p.next = (p.next + p.skip) % size;
            }
            // Endpoint counts are far below u32::MAX.
            table[p.next as usize] = index as u32;
            p.next = (p.next + p.skip) % size;
            free -= 1;
        }
        Maglev { table }
    }

    /// The endpoint index for `hash`.
    pub(crate) fn pick(&self, hash: u64) -> usize {
        let slot = (hash % self.table.len().max(1) as u64) as usize;
        self.table.get(slot).map_or(0, |&i| i as usize)
    }
}

/// Whether `n` is prime, by trial division (table sizes are at most a few million).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        Endpoint::for_test_weights("10.1.0", 9080, weights)
    }

    fn slots(maglev: &Maglev, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &i in maglev.table.iter() {
            counts[i as usize] += 1;
        }
        counts
    }

    #[test]
    fn table_is_full_and_shared_evenly() {
        let maglev = Maglev::new(&endpoints(&[1, 1, 1, 1, 1]), 65537);
        let counts = slots(&maglev, 5);
        assert_eq!(counts.iter().sum::<usize>(), 65537);
        for c in counts {
            assert!(c.abs_diff(65537 / 5) <= 1, "{c}");
        }
    }

    #[test]
    fn slots_follow_weights() {
        let maglev = Maglev::new(&endpoints(&[1, 3]), 65537);
        let counts = slots(&maglev, 2);
        assert!(counts[0].abs_diff(65537 / 4) <= 1, "{counts:?}");
        let maglev = Maglev::new(&endpoints(&[2, 1, 1]), 7);
        assert_eq!(slots(&maglev, 3).iter().sum::<usize>(), 7);
    }

    #[test]
    fn smallest_tables() {
        let maglev = Maglev::new(&endpoints(&[1, 1, 1]), 2);
        assert_eq!(maglev.table.len(), 2);
        assert!(maglev.table.iter().all(|&i| i < 3));
        let maglev = Maglev::new(&endpoints(&[1]), 3);
        assert_eq!(slots(&maglev, 1), [3]);
    }

    #[test]
    fn primes() {
        let primes: Vec<u64> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65536));
        assert!(!is_prime(1_000_001));
    }
}
