//! RING_HASH: Ketama-style consistent hashing. Each endpoint owns points on a 64-bit ring in
//! proportion to its weight; a request goes to the owner of the first point at or after its
//! key's hash. Points are named and hashed as Envoy names and hashes them (`<address>_<n>`,
//! xxHash64).
//!
//! Sized as Envoy sizes its ring: at least `minimumRingSize` points, more if that is needed for
//! the lightest endpoint to own a whole point in proportion, never more than 8M. Removing an
//! endpoint moves the keys on its points, and also some of the survivors' keys: the minimum is
//! then spread over fewer endpoints, each owning more points than before.

use std::fmt::Write as _;
use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use crate::cluster::Endpoint;

/// `minimumRingSize` when unset, as Envoy.
pub(crate) const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// The most points a ring holds, and the largest `minimumRingSize` accepted (Envoy's
/// `maximum_ring_size` default).
pub(crate) const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// A sorted ring of hash points and the endpoint owning each.
pub(crate) struct RingHash {
    // Two arrays rather than one of pairs: the binary search touches only hashes.
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
}

impl RingHash {
    /// Builds the ring for `endpoints` (at least one).
    pub(crate) fn new(endpoints: &[Arc<Endpoint>], minimum_ring_size: u64) -> RingHash {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let counts = point_counts(&weights, minimum_ring_size);
        let size: u64 = counts.iter().sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut key = String::new();
        for (index, (endpoint, &count)) in endpoints.iter().zip(&counts).enumerate() {
            // Points are named `<address>_<replica>`, as Envoy names them.
            key.clear();
            // Writing to a String cannot fail.
            let _ = write!(key, "{}_", endpoint.address);
            let prefix = key.len();
            for replica in 0..count {
                key.truncate(prefix);
                let _ = write!(key, "{replica}");
                // Endpoint counts are far below u32::MAX.
                points.push((xxh64(key.as_bytes(), 0), index as u32));
            }
        }
        // Sorting pairs orders equal hashes by index, so the ring does not depend on sort order.
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        RingHash {
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
        }
    }

    /// The endpoint index owning `hash`: the first point at or after it, wrapping around.
    pub(crate) fn pick(&self, hash: u64) -> usize {
        let at = self.hashes.partition_point(|&h| h < hash);
        let at = if at == self.hashes.len() { 0 } else { at };
        self.owners.get(at).map_or(0, |&i| i as usize)
    }

    /// Points on the ring.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }
}

/// How many ring points each endpoint owns: in proportion to weight, with enough points per
/// unit of weight for the lightest endpoint to own its share of `minimum_ring_size` rounded up
/// to a whole point, unless that makes the ring larger than [`MAX_RING_SIZE`].
fn point_counts(weights: &[u32], minimum_ring_size: u64) -> Vec<u64> {
    let weight = |w: u32| u128::from(w.max(1));
    let total: u128 = weights.iter().map(|&w| weight(w)).sum::<u128>().max(1);
    let lightest = weights.iter().map(|&w| weight(w)).min().unwrap_or(1);
    // Points per unit of weight as the fraction `per / unit`; integer arithmetic keeps the ring
    // identical on every machine.
    let lightest_points = (u128::from(minimum_ring_size.max(1)) * lightest).div_ceil(total);
    let (per, unit) = if lightest_points * total <= u128::from(MAX_RING_SIZE) * lightest {
        (lightest_points, lightest)
    } else {
        (u128::from(MAX_RING_SIZE), total)
    };
    // Counted against a running target so rounding never accumulates: endpoints 0..=i own
    // round-up(per * (w_0 + .. + w_i) / unit) points between them.
    let mut cumulative = 0u128;
    let mut placed = 0u128;
    weights
        .iter()
        .map(|&w| {
            cumulative += weight(w);
            let target = (per * cumulative).div_ceil(unit);
            let count = target.saturating_sub(placed);
            placed = placed.max(target);
            // At most MAX_RING_SIZE + 1.
            count as u64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        Endpoint::for_test_weights("10.0.0", 8080, weights)
    }

    fn owned_points(ring: &RingHash, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &o in ring.owners.iter() {
            counts[o as usize] += 1;
        }
        counts
    }

    #[test]
    fn ring_is_sized_by_minimum_and_weights() {
        let ring = RingHash::new(&endpoints(&[1, 1, 1, 1]), 1024);
        assert_eq!(ring.len(), 1024);
        assert_eq!(owned_points(&ring, 4), [256; 4]);
        assert_eq!(point_counts(&[1, 1, 1], 1024), [342; 3]);
        // 1:1000 needs more than 1024 points for endpoint 0 to own 1 in proportion.
        assert_eq!(point_counts(&[1, 1000], 1024), [2, 2000]);
        assert_eq!(point_counts(&[1, 3], 4096), [1024, 3072]);
        assert_eq!(point_counts(&[0, 2], 4), [2, 4]);
        let ring = RingHash::new(&endpoints(&[1, 3]), 4096);
        assert_eq!(owned_points(&ring, 2), [1024, 3072]);
    }

    #[test]
    fn ring_size_is_capped() {
        let counts = point_counts(&[1, 1], u64::MAX);
        assert_eq!(counts.iter().sum::<u64>(), MAX_RING_SIZE);
        let counts = point_counts(&[1, u32::MAX, 7], MAX_RING_SIZE);
        assert!(
            counts.iter().sum::<u64>() <= MAX_RING_SIZE + 1,
            "{counts:?}"
        );
        assert!(counts[1] > MAX_RING_SIZE - 10, "{counts:?}");
    }

    #[test]
    fn lookup_takes_the_next_point_and_wraps() {
        let ring = RingHash::new(&endpoints(&[1, 1, 1]), 16);
        for (i, &h) in ring.hashes.iter().enumerate() {
            assert_eq!(ring.pick(h), ring.owners[i] as usize);
            if h > 0 && (i == 0 || ring.hashes[i - 1] < h - 1) {
                assert_eq!(ring.pick(h - 1), ring.owners[i] as usize);
            }
        }
        let last = *ring.hashes.last().unwrap_or(&0);
        if last < u64::MAX {
            assert_eq!(ring.pick(last + 1), ring.owners[0] as usize);
        }
    }
}
