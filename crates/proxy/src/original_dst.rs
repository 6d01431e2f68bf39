//! Original-destination clusters (Envoy's `ORIGINAL_DST`): Istio's `PassthroughCluster` under
//! `outboundTrafficPolicy: ALLOW_ANY`, ServiceEntries with `resolution: NONE`, and
//! DestinationRules with `loadBalancer.simple: PASSTHROUGH`. Such a cluster lists no endpoints;
//! each request goes to the destination it asked for.
//!
//! weft's sidecars take outbound traffic as an explicit HTTP proxy (no iptables capture yet),
//! so the destination a request asked for is its authority: the absolute-form URI or CONNECT
//! target, else `Host`, with the scheme's port when it names none. A name is resolved here
//! (the system resolver), as a forward proxy does.
//!
//! Each destination gets a cluster of its own with one endpoint, built from the original's
//! config (`Cluster::build`, `Upstream::new`), so pools, TLS origination, timeouts, retries and
//! outlier reporting work as for any cluster; it shares the original's circuit breaker and
//! stats (Envoy's thresholds and counters are per cluster). Destinations are kept while in use
//! and reused by later requests (warm pools), up to [`MAX_DESTINATIONS`]; a name's address is
//! looked up again after [`NAME_TTL`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use weft_xds::proto;

use crate::cluster::Cluster;
use crate::snapshot::ClusterState;
use crate::upstream::Upstream;

/// Destinations kept at most; past it, the ones no request uses are dropped, and a new
/// destination is refused while every one kept is in use.
const MAX_DESTINATIONS: usize = 1024;
/// How long a resolved name is used before it is looked up again (Envoy's dynamic forward
/// proxy refreshes its DNS cache every 60 s by default).
const NAME_TTL: Duration = Duration::from_secs(60);

/// The `local` to give [`OriginalDst::state_for`] for a captured connection: its original
/// destination is never the listener's own address (it was redirected from elsewhere), so
/// there is no loop to refuse.
pub const CAPTURED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The per-destination clusters of one ORIGINAL_DST cluster.
#[derive(Default)]
pub struct OriginalDst {
    destinations: Mutex<HashMap<String, Destination>>,
}

struct Destination {
    state: Arc<ClusterState>,
    /// None for an IP address (never looked up again).
    resolved: Option<Instant>,
}

impl OriginalDst {
    /// The cluster state for the destination `authority` asks for. `default_port` is the
    /// scheme's; `local` is the listener's own address, which a request must not loop back to.
    /// The error says why there is no destination.
    pub async fn state_for(
        &self,
        parent: &ClusterState,
        authority: &str,
        default_port: u16,
        local: SocketAddr,
    ) -> Result<Arc<ClusterState>, Unavailable> {
        let (host, port) =
            split_authority(authority, default_port).map_err(Unavailable::NoDestination)?;
        let key = format!("{host}:{port}");
        let now = Instant::now();
        if let Some(d) = lock(&self.destinations).get(&key)
            && d.resolved
                .is_none_or(|at| now.duration_since(at) < NAME_TTL)
        {
            return Ok(d.state.clone());
        }
        let (address, resolved) = match host.parse::<IpAddr>() {
            Ok(ip) => (SocketAddr::new(ip, port), None),
            Err(_) => {
                let within = parent.cluster.connect_timeout();
                let lookup = tokio::net::lookup_host((host.as_str(), port));
                let address = lookup_within(lookup, &host, within)
                    .await
                    .map_err(Unavailable::NoDestination)?;
                (address, Some(now))
            }
        };
        if address == local {
            return Err(Unavailable::NoDestination(format!(
                "the original destination {address} is this listener: the request would loop"
            )));
        }
        let state = Arc::new(destination(parent, address).map_err(Unavailable::NoDestination)?);
        let mut destinations = lock(&self.destinations);
        if destinations.len() >= MAX_DESTINATIONS && !destinations.contains_key(&key) {
            destinations.retain(|_, d| Arc::strong_count(&d.state) > 1);
            // Every destination kept is in use: a new one would grow the map past its bound.
            if destinations.len() >= MAX_DESTINATIONS {
                return Err(Unavailable::Full);
            }
        }
        // Another request may have built it meanwhile; either serves.
        destinations.insert(
            key,
            Destination {
                state: state.clone(),
                resolved,
            },
        );
        Ok(state)
    }

    /// Destinations held now, for `/clusters`.
    pub fn destinations(&self) -> Vec<Arc<ClusterState>> {
        let mut out: Vec<_> = lock(&self.destinations)
            .values()
            .map(|d| d.state.clone())
            .collect();
        out.sort_by_key(|s| s.cluster.endpoints().first().map(|e| e.address));
        out
    }
}

/// Why a request has no destination cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The authority names no destination that can be used (503 UH): why.
    NoDestination(String),
    /// [`MAX_DESTINATIONS`] destinations are in use, none can be dropped (503 UO).
    Full,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoDestination(why) => f.write_str(why),
            Unavailable::Full => write!(
                f,
                "{MAX_DESTINATIONS} original destinations are in use; no new one is taken \
                 until one is free"
            ),
        }
    }
}

/// `parent`'s config with one endpoint at `address`, sharing its breaker and stats.
fn destination(parent: &ClusterState, address: SocketAddr) -> Result<ClusterState, String> {
    let config = proto::Cluster {
        discovery: proto::Discovery::Static.into(),
        endpoints: vec![proto::Endpoint {
            address: address.to_string(),
            ..Default::default()
        }],
        ..parent.cluster.config().clone()
    };
    let cluster = Cluster::build(&config).map_err(|e| e.to_string())?;
    let upstream = Upstream::new(&cluster).map_err(|e| e.to_string())?;
    Ok(ClusterState {
        cluster,
        upstream,
        stats: parent.stats.clone(),
        breaker: parent.breaker.clone(),
        original_dst: None,
        report: parent.report.clone(),
    })
}

/// `host` (brackets removed from IPv6) and port of an authority.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let parsed: Authority = authority
        .parse()
        .map_err(|_| format!("{authority:?} is not a destination (host[:port])"))?;
    let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{authority:?} names no host"));
    }
    let port = parsed.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(format!("{authority:?}: port 0 is not a destination"));
    }
    Ok((host.to_owned(), port))
}

/// The first address `lookup` answers for `host`, if it answers within `within` (the cluster's
/// connect timeout: resolving is the first part of connecting, and the system resolver can
/// take far longer than any request should wait).
async fn lookup_within<I>(
    lookup: impl std::future::Future<Output = std::io::Result<I>>,
    host: &str,
    within: Duration,
) -> Result<SocketAddr, String>
where
    I: Iterator<Item = SocketAddr>,
{
    let mut addresses = tokio::time::timeout(within, lookup)
        .await
        .map_err(|_| format!("resolving {host:?}: no answer within {within:?}"))?
        .map_err(|e| format!("resolving {host:?}: {e}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("resolving {host:?}: no address"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn destinations_in_use_stay_bounded() {
        let config = proto::Cluster {
            name: "PassthroughCluster".into(),
            discovery: proto::Discovery::OriginalDst.into(),
            ..Default::default()
        };
        let cluster = Cluster::build(&config).expect("builds");
        let parent = ClusterState {
            upstream: Upstream::new(&cluster).expect("upstream"),
            stats: Default::default(),
            breaker: Arc::new(crate::breaker::Breaker::new(None)),
            original_dst: None,
            report: crate::metrics::peer::ClusterReport::build(&config),
            cluster,
        };
        let local = SocketAddr::from(([127, 0, 0, 1], 15001));
        let dst = OriginalDst::default();
        let authority = |i: usize| format!("10.0.{}.{}:80", i / 256, i % 256);
        // Held, as requests in flight hold them.
        let mut held = Vec::new();
        for i in 0..MAX_DESTINATIONS {
            held.push(
                dst.state_for(&parent, &authority(i), 80, local)
                    .await
                    .unwrap(),
            );
        }
        let refused = dst.state_for(&parent, "10.9.9.9:80", 80, local).await;
        assert_eq!(refused.err(), Some(Unavailable::Full));
        assert_eq!(lock(&dst.destinations).len(), MAX_DESTINATIONS);
        // A destination already kept is still served.
        assert!(
            dst.state_for(&parent, &authority(7), 80, local)
                .await
                .is_ok()
        );
        // Once one is free, it makes room for the new one.
        held.swap_remove(3);
        assert!(
            dst.state_for(&parent, "10.9.9.9:80", 80, local)
                .await
                .is_ok()
        );
        assert!(lock(&dst.destinations).len() <= MAX_DESTINATIONS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_does_not_answer_gives_up() {
        let never = std::future::pending::<std::io::Result<std::vec::IntoIter<SocketAddr>>>();
        let result = lookup_within(never, "slow.example", Duration::from_secs(2)).await;
        assert_eq!(
            result,
            Err("resolving \"slow.example\": no answer within 2s".to_owned())
        );
        let answer = async { Ok(vec![SocketAddr::from(([127, 0, 0, 9], 80))].into_iter()) };
        let result = lookup_within(answer, "fast.example", Duration::from_secs(2)).await;
        assert_eq!(result, Ok(SocketAddr::from(([127, 0, 0, 9], 80))));
    }

    #[test]
    fn authorities_split_with_default_ports() {
        let ok = |a: &str, d: u16| split_authority(a, d).map_err(|e| panic!("{a}: {e}")).ok();
        assert_eq!(ok("example.com", 80), Some(("example.com".into(), 80)));
        assert_eq!(
            ok("example.com:8080", 80),
            Some(("example.com".into(), 8080))
        );
        assert_eq!(ok("[::1]:9000", 80), Some(("::1".into(), 9000)));
        assert_eq!(ok("10.0.0.1", 443), Some(("10.0.0.1".into(), 443)));
        for bad in ["", "a b", "x:0", ":80"] {
            assert!(split_authority(bad, 80).is_err(), "{bad:?} accepted");
        }
    }
}
