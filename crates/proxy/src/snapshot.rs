//! The proxy's configuration as one value: listeners, route tables and clusters, built from
//! a `proto::Bootstrap` once and swapped whole (ArcSwap). A request loads the snapshot once
//! and uses it to the end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use weft_xds::proto;

use crate::breaker::Breaker;
use crate::cluster::{Cluster, only_endpoints_differ};
use crate::config::{ConfigError, NodeInfo};
use crate::original_dst::OriginalDst;
use crate::ratelimit::{Buckets, TokenBucket};
use crate::route::RouteTable;
use crate::stats::{ClusterStats, Stats};
use crate::tls::SniTable;
use crate::upstream::Upstream;

pub struct Snapshot {
    pub node: NodeInfo,
    /// The configuration as received, for `/config_dump`.
    pub bootstrap: proto::Bootstrap,
    pub listeners: Vec<ListenerSpec>,
    pub routes: HashMap<String, Arc<RouteTable>>,
    pub clusters: HashMap<Arc<str>, Arc<ClusterState>>,
    /// The rate limit buckets of routes and listeners, for the next snapshot to take over.
    pub buckets: Buckets,
}

/// A cluster with what serves it: its connection pools and counters.
pub struct ClusterState {
    pub cluster: Cluster,
    pub upstream: Upstream,
    pub stats: Arc<ClusterStats>,
    /// Shared with the per-destination clusters of an ORIGINAL_DST cluster.
    pub breaker: Arc<Breaker>,
    /// Set for an ORIGINAL_DST cluster: its destinations so far.
    pub original_dst: Option<OriginalDst>,
    /// What requests to it report of their destination.
    pub report: crate::metrics::peer::ClusterReport,
}

#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
    /// None: no access log (Istio's default, `meshConfig.accessLogFile` unset). Compiled
    /// once here: requests only fill in the format.
    pub access_log: Option<Arc<crate::access_log::Sink>>,
    /// As received: a listener whose config is unchanged is left alone on reload.
    pub config: proto::Listener,
    /// The secrets its TLS names, as they were when it was built: a listener whose secrets
    /// changed (a rotated certificate) is updated in place like one whose config did.
    pub secrets: Vec<proto::Secret>,
    /// What its requests and connections report in Istio's standard metrics.
    pub reporting: Arc<crate::metrics::peer::Reporting>,
    /// False: served only through an `original_dst` listener's hand-off.
    pub bind_to_port: bool,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    Http {
        route_config: String,
        explicit_proxy: bool,
        max_header_bytes: usize,
        /// TLS termination; plaintext when None.
        tls: Option<Arc<crate::tls::Termination>>,
        /// Mesh mTLS (a sidecar's inbound listener, PeerAuthentication).
        mesh_tls: Option<Arc<crate::tls::MeshTermination>>,
        rate_limit: Option<Arc<TokenBucket>>,
        /// How request paths are normalized before routing.
        path_normalization: proto::PathNormalization,
        /// Envoy's xff_num_trusted_hops: how far back in x-forwarded-for the client is.
        xff_num_trusted_hops: u32,
        /// JWT authentication (RequestAuthentication), before authorization.
        jwt_authn: Option<Arc<crate::jwt::JwtAuthn>>,
        /// Authorization (AuthorizationPolicy), before routing.
        rbac: Option<Arc<crate::rbac::Rbac>>,
        /// Distributed tracing: a span per request, context written for the next hop.
        tracer: Option<Arc<crate::trace::Tracer>>,
        /// Transparent capture: connections routed by their original destination.
        capture: Option<Arc<crate::transparent::CaptureTable>>,
    },
    Tcp {
        cluster: String,
        /// Mesh mTLS (a sidecar's inbound listener, PeerAuthentication).
        mesh_tls: Option<Arc<crate::tls::MeshTermination>>,
        /// Authorization per connection.
        rbac: Option<Arc<crate::rbac::Rbac>>,
    },
    /// Routes connections by their ClientHello's SNI to a cluster, without terminating TLS.
    TlsPassthrough { routes: Arc<SniTable<String>> },
    /// Hands each connection to the listener its original destination names (a captured
    /// sidecar's inbound 15006); others go to the passthrough cluster, or are closed.
    OriginalDst { passthrough: Option<Arc<str>> },
    /// A DNS server (UDP and TCP on the listener's address): the mesh's names from its
    /// table, other names forwarded upstream.
    Dns { table: Arc<crate::dns::Table> },
}

/// Envoy's default limit on request headers.
const DEFAULT_MAX_HEADERS_KB: u32 = 60;
/// Envoy's upper bound on it.
const MAX_MAX_HEADERS_KB: u32 = 8192;

/// `rc` with the virtual hosts of every other route configuration named under its
/// `include_prefix` added, in their order.
fn compose(
    rc: &proto::RouteConfiguration,
    all: &[proto::RouteConfiguration],
) -> Result<proto::RouteConfiguration, ConfigError> {
    let mut composed = proto::RouteConfiguration {
        name: rc.name.clone(),
        virtual_hosts: rc.virtual_hosts.clone(),
        include_prefix: String::new(),
    };
    for other in all {
        if other.name == rc.name || !other.name.starts_with(&rc.include_prefix) {
            continue;
        }
        if !other.include_prefix.is_empty() {
            return Err(ConfigError::new(
                format!("route_config {:?}", other.name),
                "includePrefix",
                format!(
                    "it is included by route_config {:?} (prefix {:?}) and so cannot include others",
                    rc.name, rc.include_prefix
                ),
            ));
        }
        composed
            .virtual_hosts
            .extend(other.virtual_hosts.iter().cloned());
    }
    Ok(composed)
}

impl Snapshot {
    /// Builds a snapshot, collecting every error. Clusters whose config equals the one in
    /// `previous` keep their state (pools stay warm across a reload).
    pub fn build(
        bootstrap: proto::Bootstrap,
        previous: Option<&Snapshot>,
        stats: &Stats,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let node = NodeInfo::from(bootstrap.node.as_ref());
        let mut errors = Vec::new();
        let buckets = Buckets::after(previous.map(|p| &p.buckets));

        let secrets = match crate::tls::Secrets::new(&bootstrap.secrets) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                crate::tls::Secrets::default()
            }
        };
        let mut listeners = Vec::new();
        for (i, l) in bootstrap.listeners.iter().enumerate() {
            match listener(l, i, &buckets, &secrets, &node) {
                Ok(spec) => listeners.push(spec),
                Err(e) => errors.push(e),
            }
        }

        let mut routes = HashMap::new();
        for rc in &bootstrap.route_configs {
            match RouteTable::build_with(rc, &node, &buckets) {
                Ok(t) => {
                    if routes.insert(rc.name.clone(), Arc::new(t)).is_some() {
                        errors.push(ConfigError::new(
                            format!("route_config {:?}", rc.name),
                            "name",
                            "defined twice",
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }

        // Route configurations that include others: their table is their own virtual hosts
        // and those of every configuration under their prefix (each of which was also
        // built, and so checked, on its own above).
        for rc in &bootstrap.route_configs {
            if rc.include_prefix.is_empty() || !routes.contains_key(&rc.name) {
                continue;
            }
            let table = compose(rc, &bootstrap.route_configs)
                .and_then(|composed| RouteTable::build_with(&composed, &node, &buckets));
            match table {
                Ok(t) => {
                    routes.insert(rc.name.clone(), Arc::new(t));
                }
                Err(e) => {
                    routes.remove(&rc.name);
                    errors.push(e);
                }
            }
        }

        let mut clusters = HashMap::new();
        for c in &bootstrap.clusters {
            let was = previous.and_then(|p| p.clusters.get(c.name.as_str()));
            let reused = was.filter(|s| s.cluster.config() == c).cloned();
            // Only the endpoint list changed (a scale event): hosts that stay keep their pools
            // and outlier state, and the cluster its circuit breaker counts, as in Envoy.
            let scaled = was.filter(|s| only_endpoints_differ(s.cluster.config(), c));
            let state = match reused {
                Some(s) => s,
                None => {
                    match Cluster::build_after(c, scaled.map(|s| &s.cluster)).and_then(|cluster| {
                        let upstream = Upstream::new_after(&cluster, scaled.map(|s| &s.upstream))?;
                        Ok((cluster, upstream))
                    }) {
                        Ok((cluster, upstream)) => {
                            let stats = stats.cluster(cluster.name());
                            let breaker = match scaled {
                                Some(s) => s.breaker.clone(),
                                None => Arc::new(Breaker::new(c.circuit_breakers.as_ref())),
                            };
                            Arc::new(ClusterState {
                                report: crate::metrics::peer::ClusterReport::build(c),
                                breaker,
                                original_dst: (cluster.discovery()
                                    == proto::Discovery::OriginalDst)
                                    .then(OriginalDst::default),
                                cluster,
                                upstream,
                                stats,
                            })
                        }
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    }
                }
            };
            if clusters
                .insert(state.cluster.name().clone(), state)
                .is_some()
            {
                errors.push(ConfigError::new(
                    format!("cluster {:?}", c.name),
                    "name",
                    "defined twice",
                ));
            }
        }

        // References from listeners, checked against the names the config defines (a
        // definition that failed to build has its own error already).
        let route_names: HashSet<&str> = bootstrap
            .route_configs
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let cluster_names: HashSet<&str> =
            bootstrap.clusters.iter().map(|c| c.name.as_str()).collect();
        for l in &bootstrap.listeners {
            let resource = || format!("listener {:?}", l.name);
            let missing_cluster = |name: &str| !cluster_names.contains(name);
            match &l.protocol {
                Some(proto::listener::Protocol::Http(h))
                    if !route_names.contains(h.route_config.as_str()) =>
                {
                    errors.push(ConfigError::new(
                        resource(),
                        "http.routeConfig",
                        format!("route configuration {:?} is not defined", h.route_config),
                    ));
                }
                Some(proto::listener::Protocol::Tcp(t)) if missing_cluster(&t.cluster) => {
                    errors.push(ConfigError::new(
                        resource(),
                        "tcp.cluster",
                        format!("cluster {:?} is not defined", t.cluster),
                    ));
                }
                Some(proto::listener::Protocol::TlsPassthrough(p)) => {
                    for (i, r) in p.routes.iter().enumerate() {
                        if missing_cluster(&r.cluster) {
                            errors.push(ConfigError::new(
                                resource(),
                                format!("tlsPassthrough.routes[{i}].cluster"),
                                format!("cluster {:?} is not defined", r.cluster),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Snapshot {
            node,
            bootstrap,
            listeners,
            routes,
            clusters,
            buckets,
        })
    }
}

/// A passthrough listener's SNI routes; a name claimed twice is an error.
fn sni_routes(
    p: &proto::TlsPassthroughListener,
    resource: &str,
) -> Result<SniTable<String>, ConfigError> {
    let mut table = SniTable::default();
    for (i, r) in p.routes.iter().enumerate() {
        if r.server_names.is_empty() {
            return Err(ConfigError::new(
                resource,
                format!("tlsPassthrough.routes[{i}].serverNames"),
                "at least one name (or \"*\") is required",
            ));
        }
        for (j, name) in r.server_names.iter().enumerate() {
            let valid = name == "*"
                || name
                    .strip_prefix("*.")
                    .unwrap_or(name)
                    .split('.')
                    .all(|label| !label.is_empty() && !label.contains('*'));
            let field = || format!("tlsPassthrough.routes[{i}].serverNames[{j}]");
            if !valid {
                return Err(ConfigError::new(
                    resource,
                    field(),
                    format!("{name:?} is not a host name, `*.suffix` or `*`"),
                ));
            }
            if !table.insert(name, r.cluster.clone()) {
                return Err(ConfigError::new(
                    resource,
                    field(),
                    format!("{name:?} is routed by an earlier route"),
                ));
            }
        }
    }
    Ok(table)
}

fn listener(
    l: &proto::Listener,
    index: usize,
    buckets: &Buckets,
    secrets: &crate::tls::Secrets<'_>,
    node: &NodeInfo,
) -> Result<ListenerSpec, ConfigError> {
    let resource = if l.name.is_empty() {
        format!("listeners[{index}]")
    } else {
        format!("listener {:?}", l.name)
    };
    let address: SocketAddr = l.address.parse().map_err(|_| {
        ConfigError::new(
            &resource,
            "address",
            format!("{:?} is not ip:port", l.address),
        )
    })?;
    let mut used_secrets = Vec::new();
    let kind = match &l.protocol {
        Some(proto::listener::Protocol::Http(h)) => {
            let tls = match &h.tls {
                Some(t) => {
                    used_secrets = secrets.used_by(t);
                    Some(Arc::new(crate::tls::termination(
                        t, secrets, &resource, "http.tls",
                    )?))
                }
                None => None,
            };
            let mesh_tls = match &h.mesh_tls {
                Some(_) if tls.is_some() => {
                    return Err(ConfigError::new(
                        &resource,
                        "http.meshTls",
                        "a listener has `tls` or `meshTls`, not both",
                    ));
                }
                Some(m) => Some(Arc::new(crate::tls::mesh_termination(
                    m,
                    &resource,
                    "http.meshTls",
                )?)),
                None => None,
            };
            let kb = match h.max_request_headers_kb {
                0 => DEFAULT_MAX_HEADERS_KB,
                kb if kb > MAX_MAX_HEADERS_KB => {
                    return Err(ConfigError::new(
                        &resource,
                        "http.maxRequestHeadersKb",
                        format!("{kb} is more than the maximum {MAX_MAX_HEADERS_KB} (as Envoy)"),
                    ));
                }
                kb => kb,
            };
            let path_normalization = proto::PathNormalization::try_from(h.path_normalization)
                .map_err(|_| {
                    ConfigError::new(
                        &resource,
                        "http.pathNormalization",
                        format!("{} is not a path normalization", h.path_normalization),
                    )
                })?;
            ListenerKind::Http {
                path_normalization,
                xff_num_trusted_hops: h.xff_num_trusted_hops,
                jwt_authn: match &h.jwt_authn {
                    Some(j) => Some(Arc::new(crate::jwt::JwtAuthn::build(
                        j,
                        &resource,
                        "http.jwtAuthn",
                    )?)),
                    None => None,
                },
                rbac: rbac(h.rbac.as_ref(), &resource, "http.rbac")?,
                tracer: match &h.tracing {
                    Some(t) => Some(Arc::new(crate::trace::Tracer::build(
                        t,
                        l.workload.as_ref(),
                        &node.id,
                        &resource,
                        "http.tracing",
                    )?)),
                    None => None,
                },
                capture: match &h.capture {
                    Some(c) => Some(Arc::new(crate::transparent::CaptureTable::build(
                        c,
                        &resource,
                        "http.capture",
                    )?)),
                    None => None,
                },
                route_config: h.route_config.clone(),
                explicit_proxy: h.explicit_proxy,
                max_header_bytes: kb as usize * 1024,
                tls,
                mesh_tls,
                rate_limit: buckets.bucket(
                    resource.clone(),
                    h.rate_limit.as_ref(),
                    &resource,
                    "http.rateLimit",
                )?,
            }
        }
        Some(proto::listener::Protocol::Tcp(t)) => ListenerKind::Tcp {
            cluster: t.cluster.clone(),
            mesh_tls: match &t.mesh_tls {
                Some(m) => Some(Arc::new(crate::tls::mesh_termination(
                    m,
                    &resource,
                    "tcp.meshTls",
                )?)),
                None => None,
            },
            rbac: rbac(t.rbac.as_ref(), &resource, "tcp.rbac")?,
        },
        Some(proto::listener::Protocol::TlsPassthrough(p)) => ListenerKind::TlsPassthrough {
            routes: Arc::new(sni_routes(p, &resource)?),
        },
        Some(proto::listener::Protocol::OriginalDst(o)) => ListenerKind::OriginalDst {
            passthrough: (!o.passthrough_cluster.is_empty())
                .then(|| o.passthrough_cluster.as_str().into()),
        },
        Some(proto::listener::Protocol::Dns(d)) => ListenerKind::Dns {
            table: Arc::new(crate::dns::Table::build(
                d,
                &resource,
                crate::dns::resolv::ResolvConf::read,
            )?),
        },
        None => {
            return Err(ConfigError::new(
                &resource,
                "protocol",
                "one of http, tcp, tlsPassthrough, originalDst or dns is required",
            ));
        }
    };
    Ok(ListenerSpec {
        name: l.name.clone(),
        address,
        kind,
        access_log: match l.access_log.as_ref().filter(|a| !a.disabled) {
            Some(a) => Some(Arc::new(crate::access_log::Sink::build(a).map_err(
                |(field, reason)| ConfigError::new(&resource, format!("accessLog.{field}"), reason),
            )?)),
            None => None,
        },
        bind_to_port: l.bind_to_port.unwrap_or(true),
        config: l.clone(),
        secrets: used_secrets,
        reporting: Arc::new(crate::metrics::peer::Reporting::build(l, node, &resource)?),
    })
}

impl Snapshot {
    /// The JWT authentication and authorization of HTTP listener `name` in this snapshot.
    /// Read per request (not kept with the connection), so that a policy change applies to
    /// the requests of connections accepted before it too.
    pub fn http_policies(
        &self,
        name: &str,
    ) -> (Option<&crate::jwt::JwtAuthn>, Option<&crate::rbac::Rbac>) {
        let spec = self.listeners.iter().find(|l| l.name == name);
        match spec.map(|l| &l.kind) {
            Some(ListenerKind::Http {
                jwt_authn, rbac, ..
            }) => (jwt_authn.as_deref(), rbac.as_deref()),
            _ => (None, None),
        }
    }
}

impl Snapshot {
    /// The tracing of HTTP listener `name`, read per request like its policies.
    pub fn tracer(&self, name: &str) -> Option<&Arc<crate::trace::Tracer>> {
        match self
            .listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| &l.kind)
        {
            Some(ListenerKind::Http { tracer, .. }) => tracer.as_ref(),
            _ => None,
        }
    }
}

/// A listener's authorization, compiled (None: no policy applies, everything is allowed).
fn rbac(
    rbac: Option<&proto::Rbac>,
    resource: &str,
    field: &str,
) -> Result<Option<Arc<crate::rbac::Rbac>>, ConfigError> {
    rbac.map(|r| crate::rbac::Rbac::build(r, resource, field).map(Arc::new))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_builds() {
        let text = include_str!("../config/example.yaml");
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(text).expect("example parses");
        let snapshot = Snapshot::build(bootstrap, None, &Stats::default()).expect("example builds");
        assert_eq!(snapshot.listeners.len(), 2);
        assert_eq!(snapshot.clusters.len(), 5);
        assert_eq!(snapshot.node.namespace, "default");
    }

    #[test]
    fn upstream_tls_files_are_read_when_config_arrives() {
        let yaml = "clusters:\n- {name: c, tls: {caFile: /nonexistent/ca.pem}, endpoints: [{address: \"127.0.0.1:1\"}]}\n";
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(yaml).expect("parses");
        let Err(errors) = Snapshot::build(bootstrap, None, &Stats::default()) else {
            panic!("a CA file that cannot be read must be refused");
        };
        let text = errors[0].to_string();
        assert!(
            text.starts_with("cluster \"c\": tls.caFile: /nonexistent/ca.pem:"),
            "{text}"
        );
    }

    #[test]
    fn passthrough_routes_are_checked() {
        let yaml = r#"
listeners:
- name: tls
  address: "127.0.0.1:0"
  tlsPassthrough:
    routes:
    - {serverNames: ["a.example.com", "*.example.com"], cluster: a}
    - {serverNames: ["a.example.com"], cluster: a}
- name: tls2
  address: "127.0.0.1:0"
  tlsPassthrough: {routes: [{serverNames: ["*"], cluster: missing}]}
clusters:
- {name: a, endpoints: [{address: "127.0.0.1:1"}]}
"#;
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(yaml).expect("parses");
        let Err(errors) = Snapshot::build(bootstrap, None, &Stats::default()) else {
            panic!("bad passthrough routes accepted");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "listener \"tls\": tlsPassthrough.routes[1].serverNames[0]: \"a.example.com\" is routed by an earlier route",
                "listener \"tls2\": tlsPassthrough.routes[0].cluster: cluster \"missing\" is not defined",
            ]
        );
    }

    /// The virtual host `authority` selects in route config `name`, if any.
    fn host_of(snapshot: &Snapshot, name: &str, authority: &str) -> Option<String> {
        let table = snapshot.routes.get(name)?;
        let (method, headers, labels) = (
            http::Method::GET,
            http::HeaderMap::new(),
            std::collections::BTreeMap::new(),
        );
        let req = crate::route::RequestView {
            method: &method,
            scheme: "http",
            authority,
            path_and_query: "/",
            headers: &headers,
            port: 15001,
            source_labels: &labels,
        };
        Some(table.route(&req)?.virtual_host_name().to_owned())
    }

    #[test]
    fn route_configs_include_others_by_prefix() {
        let yaml = r#"
listeners:
- {name: outbound, address: "127.0.0.1:0", http: {routeConfig: outbound}}
routeConfigs:
- name: outbound
  includePrefix: outbound/
  virtualHosts: [{name: any, domains: ["*"], routes: [{directResponse: {status: 502}}]}]
- name: outbound/a
  virtualHosts: [{name: a, domains: ["a:80"], routes: [{route: {clusters: [{cluster: c}]}}]}]
- name: outbound/b
  virtualHosts: [{name: b, domains: ["b:80"], routes: [{route: {clusters: [{cluster: c}]}}]}]
- name: other
  virtualHosts: [{name: o, domains: ["o:80"], routes: [{route: {clusters: [{cluster: c}]}}]}]
clusters:
- {name: c, endpoints: [{address: "127.0.0.1:1"}]}
"#;
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(yaml).expect("parses");
        let snapshot = Snapshot::build(bootstrap.clone(), None, &Stats::default()).expect("builds");
        assert_eq!(host_of(&snapshot, "outbound", "a:80").as_deref(), Some("a"));
        assert_eq!(host_of(&snapshot, "outbound", "b:80").as_deref(), Some("b"));
        // Not under the prefix: the outbound table's own `*` answers it.
        assert_eq!(
            host_of(&snapshot, "outbound", "o:80").as_deref(),
            Some("any")
        );
        assert_eq!(host_of(&snapshot, "outbound/a", "b:80"), None);

        // A domain served by two included configurations, and an included one that
        // includes: both refused, naming where.
        let mut bad = bootstrap.clone();
        bad.route_configs[2].virtual_hosts[0].domains = vec!["a:80".into()];
        let Err(errors) = Snapshot::build(bad, None, &Stats::default()) else {
            panic!("a domain served twice across included configs was accepted");
        };
        let text = errors[0].to_string();
        assert!(
            text.starts_with("route_config \"outbound\": virtualHosts[2].domains[0]: domain \"a:80\" is already served"),
            "{text}"
        );
        let mut nested = bootstrap;
        nested.route_configs[1].include_prefix = "x/".into();
        let Err(errors) = Snapshot::build(nested, None, &Stats::default()) else {
            panic!("nested includes were accepted");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with("route_config \"outbound/a\": includePrefix: it is included by route_config \"outbound\"")),
            "{text:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_buckets_outlive_rebuilds_that_leave_their_limit_alone() {
        let yaml = |endpoint: &str, route_tokens: u32| {
            format!(
                r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: r, rateLimit: {{local: {{maxTokens: 2, fillInterval: 60s}}}}}}}}
routeConfigs:
- name: r
  virtualHosts:
  - name: v
    domains: ["*"]
    routes:
    - name: limited
      rateLimit: {{local: {{maxTokens: {route_tokens}, fillInterval: 60s}}}}
      route: {{clusters: [{{cluster: c}}]}}
clusters:
- {{name: c, endpoints: [{{address: "{endpoint}"}}]}}
"#
            )
        };
        let build = |text: String, previous: Option<&Snapshot>| {
            let bootstrap: proto::Bootstrap = yaml_serde::from_str(&text).expect("parses");
            Snapshot::build(bootstrap, previous, &Stats::default()).expect("builds")
        };
        let (method, headers, labels) = (
            http::Method::GET,
            http::HeaderMap::new(),
            std::collections::BTreeMap::new(),
        );
        let req = crate::route::RequestView {
            method: &method,
            scheme: "http",
            authority: "any",
            path_and_query: "/",
            headers: &headers,
            port: 80,
            source_labels: &labels,
        };
        let route_bucket = |s: &Snapshot| {
            s.routes["r"]
                .route(&req)
                .and_then(|m| m.rate_limit().map(|b| b as *const TokenBucket))
        };
        let listener_bucket = |s: &Snapshot| match &s.listeners[0].kind {
            ListenerKind::Http { rate_limit, .. } => rate_limit.clone().expect("a bucket"),
            _ => panic!("an HTTP listener"),
        };
        let first = build(yaml("127.0.0.1:1", 2), None);
        let take = |s: &Snapshot| {
            let m = s.routes["r"].route(&req).expect("route");
            m.rate_limit().expect("a bucket").try_acquire()
        };
        assert!(take(&first) && take(&first) && !take(&first), "two tokens");
        assert!(listener_bucket(&first).try_acquire());
        assert!(listener_bucket(&first).try_acquire());

        // A push that changes only a cluster: the buckets stay as empty as they were.
        let second = build(yaml("127.0.0.1:2", 2), Some(&first));
        assert_eq!(route_bucket(&first), route_bucket(&second));
        assert!(!take(&second), "the route's bucket started full again");
        assert!(
            !listener_bucket(&second).try_acquire(),
            "the listener's too"
        );

        // The route's own limit changes: a new, full bucket.
        let third = build(yaml("127.0.0.1:2", 3), Some(&second));
        assert!(take(&third) && take(&third) && take(&third) && !take(&third));
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_that_stay_keep_their_state_when_only_endpoints_change() {
        let yaml = |endpoints: &[&str], max_requests: u32| {
            let endpoints: Vec<String> = endpoints
                .iter()
                .map(|a| format!("{{address: \"{a}\"}}"))
                .collect();
            format!(
                "clusters:\n- {{name: c, endpoints: [{}], circuitBreakers: {{maxRequests: {max_requests}}}, \
                 outlierDetection: {{consecutive5xx: 1, maxEjectionPercent: 100}}}}\n",
                endpoints.join(", ")
            )
        };
        let build = |text: String, previous: Option<&Snapshot>| {
            let bootstrap: proto::Bootstrap = yaml_serde::from_str(&text).expect("parses");
            Snapshot::build(bootstrap, previous, &Stats::default()).expect("builds")
        };
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "10.0.0.3:80".parse().unwrap(),
        );
        let first = build(yaml(&["10.0.0.1:80", "10.0.0.2:80"], 5), None);
        let state = &first.clusters["c"];
        let endpoint = |s: &ClusterState, at: SocketAddr| {
            s.cluster
                .endpoints()
                .iter()
                .find(|e| e.address == at)
                .cloned()
                .expect("endpoint")
        };
        state
            .cluster
            .report(&endpoint(state, a), crate::cluster::Reported::Status(500));
        assert!(state.cluster.is_ejected(&endpoint(state, a)));

        // Scaled up, with the first endpoint moved: a stays ejected, keeps its pools, and the
        // breaker is the same one.
        let second = build(
            yaml(&["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"], 5),
            Some(&first),
        );
        let next = &second.clusters["c"];
        assert!(next.cluster.is_ejected(&endpoint(next, a)), "ejection lost");
        assert!(!next.cluster.is_ejected(&endpoint(next, c)));
        assert!(next.upstream.shares_pools(&state.upstream, a));
        assert!(next.upstream.shares_pools(&state.upstream, b));
        assert!(
            Arc::ptr_eq(&state.breaker, &next.breaker),
            "breaker counts lost"
        );
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        assert!(
            !next.cluster.is_ejected(&endpoint(next, a)),
            "back after 30 s"
        );

        // Any other change builds the cluster afresh.
        let third = build(yaml(&["10.0.0.2:80"], 6), Some(&second));
        assert!(!Arc::ptr_eq(&next.breaker, &third.clusters["c"].breaker));
        assert!(!third.clusters["c"].upstream.shares_pools(&next.upstream, b));
    }

    #[test]
    fn every_error_is_reported_with_its_resource() {
        let yaml = r#"
listeners:
- {name: a, address: "nope", http: {routeConfig: r}}
- {name: b, address: "127.0.0.1:1", http: {routeConfig: missing}}
routeConfigs:
- {name: r, virtualHosts: [{name: v, domains: ["*"], routes: [{matches: [{uri: {regex: "("}}], route: {clusters: [{cluster: c}]}}]}]}
clusters:
- {name: c, endpoints: [{address: "127.0.0.1:0"}]}
"#;
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(yaml).expect("parses");
        let Err(errors) = Snapshot::build(bootstrap, None, &Stats::default()) else {
            panic!("bad config accepted");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 4, "{text:#?}");
        assert!(text[0].starts_with("listener \"a\": address:"), "{text:#?}");
        assert!(text.iter().any(|e| e.contains("uri.regex")), "{text:#?}");
        assert!(
            text.iter()
                .any(|e| e.starts_with("cluster \"c\": endpoints[0].address")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("\"missing\" is not defined")),
            "{text:#?}"
        );
    }
}
