//! One upstream endpoint of a cluster, and its count of requests in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_xds::proto;

use crate::config::ConfigError;

/// An upstream address requests can be sent to, with what the control plane said about it.
///
/// Shared in `Arc` between the cluster that lists it and every [`super::Pick`] of it; the only
/// mutable part is the active request count.
// `repr(C)` with the counter first puts it on the same cache line as the `Arc`'s reference
// counts, which every pick also writes: one contended line per pick instead of two.
#[repr(C)]
#[derive(Debug)]
pub struct Endpoint {
    active: AtomicUsize,
    pub address: SocketAddr,
    /// Load balancing weight, at least 1 (0 in config means 1).
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub locality: Locality,
    /// 0 is most preferred (locality failover).
    pub priority: u32,
    /// No sidecar there: auto mTLS sends it plaintext.
    pub plaintext: bool,
    /// Position in the cluster's endpoint list (per-endpoint state elsewhere is indexed by it).
    pub index: usize,
    /// Outlier detection's counters and ejection state; shared with this address's endpoint
    /// in the cluster's next build when only the endpoint list changed.
    pub(crate) health: std::sync::Arc<super::outlier::Health>,
    /// The workload behind the address, as the metrics of requests to it label it.
    pub workload: Option<crate::metrics::peer::Known>,
}

/// Where an endpoint runs, as Istio's `region/zone/subzone`. Empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Endpoint {
    /// Converts `endpoints[index]` of a cluster, naming that path in errors.
    pub(super) fn from_proto(
        ep: &proto::Endpoint,
        resource: &str,
        index: usize,
    ) -> Result<Endpoint, ConfigError> {
        let field = format!("endpoints[{index}].address");
        if ep.address.is_empty() {
            return Err(ConfigError::new(resource, field, "required"));
        }
        let address: SocketAddr = ep.address.parse().map_err(|_| {
            ConfigError::new(
                resource,
                field.as_str(),
                format!(
                    "{:?} is not an ip:port address (IPv6 as [::1]:80)",
                    ep.address
                ),
            )
        })?;
        if address.port() == 0 {
            return Err(ConfigError::new(resource, field, "port must not be 0"));
        }
        let locality = ep
            .locality
            .as_ref()
            .map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            })
            .unwrap_or_default();
        Ok(Endpoint {
            active: AtomicUsize::new(0),
            address,
            weight: ep.weight.max(1),
            labels: ep
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            locality,
            priority: ep.priority,
            plaintext: ep.plaintext,
            index,
            health: Default::default(),
            workload: ep.workload.as_ref().map(crate::metrics::peer::Known::of),
        })
    }

    /// Requests currently sent to this endpoint and not yet finished (picks not yet dropped).
    pub fn active_requests(&self) -> usize {
        // Relaxed: a load balancing hint and a stat, not a synchronisation point.
        self.active.load(Ordering::Relaxed)
    }

    pub(super) fn request_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn request_finished(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// An endpoint with just an address and weight, for load balancer tests.
    #[cfg(test)]
    pub(crate) fn for_test(address: &str, weight: u32) -> std::sync::Arc<Endpoint> {
        let ep = proto::Endpoint {
            address: address.into(),
            weight,
            ..Default::default()
        };
        match Endpoint::from_proto(&ep, "test", 0) {
            Ok(e) => std::sync::Arc::new(e),
            Err(e) => panic!("test endpoint {address}: {e}"),
        }
    }

    /// One endpoint per weight, at `{subnet}.{1..}:{port}`, for load balancer tests.
    #[cfg(test)]
    pub(crate) fn for_test_weights(
        subnet: &str,
        port: u16,
        weights: &[u32],
    ) -> Vec<std::sync::Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Endpoint::for_test(&format!("{subnet}.{}:{port}", i + 1), w))
            .collect()
    }
}
