//! Clusters: the endpoints a route sends to, and how each request picks one.
//!
//! A [`Cluster`] is converted from its `proto::Cluster` once, when config arrives: addresses
//! parsed, defaults filled in, the load balancer (round robin schedule, hash ring, Maglev table)
//! built. After that it is immutable and shared in an `Arc`; the only state a request changes is
//! atomic (round robin's cursor, each endpoint's count of requests in flight).
//!
//! Load balancing follows Envoy as Istio configures it from a DestinationRule's
//! `trafficPolicy.loadBalancer`; each algorithm's module says where weft departs from Envoy.

mod endpoint;
mod hash_key;
mod lb;
mod outlier;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use weft_xds::proto;

pub use endpoint::{Endpoint, Locality};
use hash_key::{HashKey, Hashed};
use lb::maglev::{self, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE};
use lb::ring_hash::{DEFAULT_MINIMUM_RING_SIZE, MAX_RING_SIZE};
use lb::{Algorithm, Balancer};
use outlier::Detector;
pub use outlier::Reported;

use crate::config::{ConfigError, duration};

/// `connectTimeout` when unset, as Istio.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `idleTimeout` when unset, as Istio.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// An upstream cluster, ready to pick endpoints: immutable after [`Cluster::build`], `Send +
/// Sync`, shared in an `Arc` by the config snapshot and the requests using it.
pub struct Cluster {
    name: Arc<str>,
    config: proto::Cluster,
    endpoints: Box<[Arc<Endpoint>]>,
    lb_policy: proto::LbPolicy,
    protocol: proto::UpstreamProtocol,
    discovery: proto::Discovery,
    connect_timeout: Duration,
    idle_timeout: Duration,
    tcp_idle_timeout: Duration,
    /// The local address upstream connections are made from.
    bind_address: Option<IpAddr>,
    hash_key: Option<HashKey>,
    /// Endpoints by priority, most preferred first; empty when there are no endpoints.
    levels: Box<[Level]>,
    outlier: Option<Detector>,
}

/// What of a request a consistent hash key may be taken from.
pub struct HashInput<'a> {
    pub headers: &'a HeaderMap,
    /// The downstream peer's address.
    pub source_ip: IpAddr,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// An endpoint chosen for one request.
///
/// Counts as a request in flight on the endpoint (for LEAST_REQUEST and the admin `/clusters`
/// page) until dropped: keep it until the response (or the TCP connection) ends. Its fields can
/// be read and `set_cookie` taken, but not moved out, which would end the count early.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// Set when hashing by a cookie with a ttl and the request had no such cookie: the
    /// `Set-Cookie` the proxy adds to the response (`name=value; Path=/; Max-Age=N; HttpOnly`)
    /// so the client's next requests hash to the same endpoint.
    pub set_cookie: Option<HeaderValue>,
}

impl Pick {
    fn new(endpoint: &Arc<Endpoint>, set_cookie: Option<HeaderValue>) -> Pick {
        endpoint.request_started();
        Pick {
            endpoint: Arc::clone(endpoint),
            set_cookie,
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.endpoint.request_finished();
    }
}

impl Cluster {
    /// Converts and validates a cluster once: endpoint addresses parsed (`ip:port`, IPv6 as
    /// `[::1]:80`), weights (0 -> 1), defaults filled in, and the load balancer built (a hash
    /// ring or Maglev table here, never per request). Errors name the resource
    /// (`cluster "<name>"`) and the field path in proto JSON names (`endpoints[2].address`).
    pub fn build(cfg: &proto::Cluster) -> Result<Cluster, ConfigError> {
        Self::build_after(cfg, None)
    }

    /// As [`Cluster::build`]; when `previous` is this cluster before a change of its endpoint
    /// list alone ([`only_endpoints_differ`]), an endpoint that stays (same address) keeps its
    /// outlier detection state, as a host that stays keeps it in Envoy.
    pub fn build_after(
        cfg: &proto::Cluster,
        previous: Option<&Cluster>,
    ) -> Result<Cluster, ConfigError> {
        let previous = previous.filter(|p| only_endpoints_differ(p.config(), cfg));
        let resource = format!("cluster \"{}\"", cfg.name);
        let err = |field: &str, reason: String| ConfigError::new(resource.as_str(), field, reason);
        if cfg.name.is_empty() {
            return Err(err("name", "required".into()));
        }
        let lb_policy = proto::LbPolicy::try_from(cfg.lb_policy)
            .map_err(|_| err("lbPolicy", format!("unknown value {}", cfg.lb_policy)))?;
        let protocol = proto::UpstreamProtocol::try_from(cfg.protocol)
            .map_err(|_| err("protocol", format!("unknown value {}", cfg.protocol)))?;
        let discovery = proto::Discovery::try_from(cfg.discovery)
            .map_err(|_| err("discovery", format!("unknown value {}", cfg.discovery)))?;
        if discovery == proto::Discovery::OriginalDst && !cfg.endpoints.is_empty() {
            return Err(err(
                "endpoints",
                "an ORIGINAL_DST cluster sends each request to the destination it asked for; \
                 it lists no endpoints"
                    .into(),
            ));
        }
        let connect_timeout = match &cfg.connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(d) => {
                let d = duration(d, &resource, "connectTimeout")?;
                if d.is_zero() {
                    return Err(err("connectTimeout", "must be greater than 0".into()));
                }
                d
            }
        };
        let idle_timeout = match &cfg.idle_timeout {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(d) => duration(d, &resource, "idleTimeout")?,
        };
        let tcp_idle_timeout = match &cfg.tcp_idle_timeout {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(d) => duration(d, &resource, "tcpIdleTimeout")?,
        };
        if let Some(tls) = &cfg.tls {
            check_tls(tls, &resource)?;
        }
        let bind_address =
            match cfg.upstream_bind_address.as_str() {
                "" => None,
                a => Some(a.parse::<IpAddr>().map_err(|_| {
                    err("upstreamBindAddress", format!("{a:?} is not an IP address"))
                })?),
            };
        let endpoints = cfg
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let mut endpoint = Endpoint::from_proto(ep, &resource, i)?;
                if let Some(was) = previous
                    .and_then(|p| p.endpoints.iter().find(|e| e.address == endpoint.address))
                {
                    endpoint.health = was.health.clone();
                }
                Ok(Arc::new(endpoint))
            })
            .collect::<Result<Box<[_]>, ConfigError>>()?;
        let (algorithm, hash_key) = algorithm(lb_policy, cfg.consistent_hash.as_ref(), &resource)?;
        let levels = levels(algorithm, &endpoints);
        let outlier = match &cfg.outlier_detection {
            Some(o) => {
                let mut detector = Detector::build(o, &resource)?;
                if let Some(was) = previous.and_then(|p| p.outlier.as_ref()) {
                    // Ejection times kept are counted from the previous detector's epoch.
                    detector.continue_from(was);
                }
                Some(detector)
            }
            None => None,
        };
        Ok(Cluster {
            name: Arc::from(cfg.name.as_str()),
            config: cfg.clone(),
            endpoints,
            lb_policy,
            protocol,
            discovery,
            connect_timeout,
            idle_timeout,
            tcp_idle_timeout,
            bind_address,
            hash_key,
            levels,
            outlier,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The config this was built from, for `/config_dump` and to tell an unchanged cluster on
    /// reload.
    pub fn config(&self) -> &proto::Cluster {
        &self.config
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn lb_policy(&self) -> proto::LbPolicy {
        self.lb_policy
    }

    /// STATIC, or ORIGINAL_DST (no endpoints: see `crate::original_dst`).
    pub fn discovery(&self) -> proto::Discovery {
        self.discovery
    }

    /// The local address upstream connections are made from (None: the system's choice).
    pub fn bind_address(&self) -> Option<IpAddr> {
        self.bind_address
    }

    /// How long to wait for an upstream connection. Default 10s.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long a pooled upstream connection may sit idle before it is closed. Default 1h;
    /// zero (configured `0s`) means never, as Envoy.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How long a TCP proxy, TLS passthrough or CONNECT tunnel may carry no bytes before it is
    /// closed. Default 1h (Istio's); None when configured `0s` (never).
    pub fn tcp_idle_timeout(&self) -> Option<Duration> {
        (!self.tcp_idle_timeout.is_zero()).then_some(self.tcp_idle_timeout)
    }

    pub fn protocol(&self) -> proto::UpstreamProtocol {
        self.protocol
    }

    /// Chooses an endpoint for a request. `None` when the cluster has no endpoints (the caller
    /// answers 503 with response flag UH, as Envoy).
    pub fn pick(&self, input: &HashInput<'_>) -> Option<Pick> {
        let level = self.level()?;
        let Hashed { hash, set_cookie } = match &self.hash_key {
            Some(key) => key.hash(input),
            None => Hashed {
                hash: None,
                set_cookie: None,
            },
        };
        let endpoints = &level.endpoints;
        let mut index = level.balancer.pick(endpoints, hash);
        if let Some(outlier) = &self.outlier
            && outlier.enforcing(&self.endpoints)
        {
            // An ejected endpoint's requests go to the next one in service (a hash then stays
            // as stable as it can); none in service: no healthy upstream.
            let n = endpoints.len();
            index = (0..n)
                .map(|step| (index + step) % n)
                .find(|&i| !outlier.is_ejected(&endpoints[i]))?;
        }
        let endpoint = endpoints.get(index)?;
        Some(Pick::new(endpoint, set_cookie))
    }

    /// The priority level a request goes to. Without outlier detection every endpoint is
    /// healthy, so the best level takes everything. With it, each level takes its healthy share
    /// times 1.4 of what is left (Envoy's priority load with overprovisioning factor 1.4).
    fn level(&self) -> Option<&Level> {
        let first = self.levels.first()?;
        let outlier = match &self.outlier {
            Some(o) if self.levels.len() > 1 && o.enforcing(&self.endpoints) => o,
            _ => return Some(first),
        };
        let mut left = 100.0_f64;
        let mut loads = Vec::with_capacity(self.levels.len());
        for level in self.levels.iter() {
            let healthy = level
                .endpoints
                .iter()
                .filter(|e| !outlier.is_ejected(e))
                .count();
            let share = (healthy as f64 * 100.0 / level.endpoints.len() as f64 * 1.4).min(left);
            left -= share;
            loads.push(share);
        }
        let total: f64 = loads.iter().sum();
        if total <= 0.0 {
            // Nothing healthy anywhere: the best level, where the ejection skip finds nothing.
            return Some(first);
        }
        let mut point = fastrand::f64() * total;
        for (level, load) in self.levels.iter().zip(loads) {
            if point < load {
                return Some(level);
            }
            point -= load;
        }
        self.levels.last()
    }

    /// Counts an exchange with `endpoint` and tells outlier detection, if any, how it went.
    pub fn report(&self, endpoint: &Endpoint, result: Reported) {
        endpoint.health.count(result);
        if let Some(outlier) = &self.outlier {
            outlier.report(&self.endpoints, endpoint, result);
        }
    }

    /// Whether outlier detection has `endpoint` out of service now.
    pub fn is_ejected(&self, endpoint: &Endpoint) -> bool {
        self.outlier
            .as_ref()
            .is_some_and(|o| o.is_ejected(endpoint))
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: a hash ring or Maglev table would print millions of entries.
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("lb_policy", &self.lb_policy)
            .field("protocol", &self.protocol)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// Whether two configs of a cluster differ in their endpoint lists alone (a scale event):
/// then hosts that stay keep their state (outlier detection, pools) and the cluster keeps its
/// circuit breaker counts.
pub fn only_endpoints_differ(a: &proto::Cluster, b: &proto::Cluster) -> bool {
    let without = |c: &proto::Cluster| proto::Cluster {
        endpoints: Vec::new(),
        ..c.clone()
    };
    without(a) == without(b)
}

/// The load balancing algorithm and hash key for `lbPolicy` and `consistentHash`: a hash key
/// is required with RING_HASH and MAGLEV and refused with the others, as in Istio's
/// DestinationRule where `consistentHash` and `simple` are alternatives.
fn algorithm(
    policy: proto::LbPolicy,
    consistent_hash: Option<&proto::ConsistentHash>,
    resource: &str,
) -> Result<(Algorithm, Option<HashKey>), ConfigError> {
    use proto::LbPolicy;

    let err = |field: &str, reason: String| ConfigError::new(resource, field, reason);
    let hashing = matches!(policy, LbPolicy::RingHash | LbPolicy::Maglev);
    let ch = match (consistent_hash, hashing) {
        (None, false) => {
            let algorithm = match policy {
                LbPolicy::LeastRequest => Algorithm::LeastRequest,
                LbPolicy::Random => Algorithm::Random,
                _ => Algorithm::RoundRobin,
            };
            return Ok((algorithm, None));
        }
        (Some(_), false) => {
            return Err(err(
                "consistentHash",
                format!(
                    "applies only to lbPolicy RING_HASH or MAGLEV, not {}",
                    policy.as_str_name()
                ),
            ));
        }
        (None, true) => {
            return Err(err(
                "consistentHash",
                format!("required with lbPolicy {}", policy.as_str_name()),
            ));
        }
        (Some(ch), true) => ch,
    };
    let key = HashKey::from_proto(ch.key.as_ref(), resource)?;
    let algorithm = if policy == LbPolicy::RingHash {
        if ch.table_size != 0 {
            return Err(err(
                "consistentHash.tableSize",
                "applies only to lbPolicy MAGLEV".into(),
            ));
        }
        let minimum_ring_size = match ch.minimum_ring_size {
            0 => DEFAULT_MINIMUM_RING_SIZE,
            n if n > MAX_RING_SIZE => {
                return Err(err(
                    "consistentHash.minimumRingSize",
                    format!("{n} is more than the maximum {MAX_RING_SIZE}"),
                ));
            }
            n => n,
        };
        Algorithm::RingHash { minimum_ring_size }
    } else {
        if ch.minimum_ring_size != 0 {
            return Err(err(
                "consistentHash.minimumRingSize",
                "applies only to lbPolicy RING_HASH".into(),
            ));
        }
        let table_size = match ch.table_size {
            0 => DEFAULT_TABLE_SIZE,
            n if n > MAX_TABLE_SIZE => {
                return Err(err(
                    "consistentHash.tableSize",
                    format!("{n} is more than the maximum {MAX_TABLE_SIZE}"),
                ));
            }
            n if !maglev::is_prime(n) => {
                return Err(err("consistentHash.tableSize", format!("{n} is not prime")));
            }
            n => n,
        };
        Algorithm::Maglev { table_size }
    };
    Ok((algorithm, Some(key)))
}

/// Endpoints of one priority, with their own load balancer.
struct Level {
    endpoints: Box<[Arc<Endpoint>]>,
    balancer: Balancer,
}

/// Groups endpoints by priority, best first, each group with its balancer.
fn levels(algorithm: Algorithm, endpoints: &[Arc<Endpoint>]) -> Box<[Level]> {
    let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    priorities
        .into_iter()
        .filter_map(|p| {
            let members: Box<[Arc<Endpoint>]> = endpoints
                .iter()
                .filter(|e| e.priority == p)
                .cloned()
                .collect();
            let balancer = Balancer::new(algorithm, &members)?;
            Some(Level {
                endpoints: members,
                balancer,
            })
        })
        .collect()
}

/// Checks what can be checked of upstream TLS without reading files (`Upstream::new` loads
/// them; an empty `caFile` means the system's roots).
fn check_tls(tls: &proto::UpstreamTls, resource: &str) -> Result<(), ConfigError> {
    if tls.cert_file.is_empty() != tls.key_file.is_empty() {
        let missing = if tls.cert_file.is_empty() {
            "tls.certFile"
        } else {
            "tls.keyFile"
        };
        return Err(ConfigError::new(
            resource,
            missing,
            "certFile and keyFile go together",
        ));
    }
    Ok(())
}
