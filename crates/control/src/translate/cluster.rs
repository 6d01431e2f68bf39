//! Outbound clusters: one per service port and one per DestinationRule subset and port, with
//! the rule's traffic policy (Istio's `cluster_builder.go`, `cluster_traffic_policy.go`).
//!
//! Policy precedence is Istio's `MergeSubsetTrafficPolicy`: the rule's policy, replaced whole by
//! its `portLevelSettings` for the port; then a subset's policy overrides field by field (and
//! its own port-level settings replace those fields wholesale).

use std::net::{IpAddr, SocketAddr};

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::networking::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, SimpleLb, TrafficPolicy,
};
use weft_api::networking::gateway::Protocol;
use weft_xds::proto;

use super::circuit_breaking::{circuit_breakers, outlier_detection};
use super::locality;
use super::names::outbound_cluster;
use super::scope::{Rule, Scope, destination_rule};
use super::{Notes, duration};
use crate::dns;
use crate::mesh_config::MeshConfig;
use crate::node::{ProxyKind, ProxyNode};
use crate::registry::{Resolution, Service, ServicePort};
use crate::view::ConfigView;

/// One policy component and where it was written.
struct Part<'a, T> {
    value: &'a T,
    resource: &'a Resource,
    field: String,
}

impl<T> Clone for Part<'_, T> {
    fn clone(&self) -> Self {
        Part {
            value: self.value,
            resource: self.resource,
            field: self.field.clone(),
        }
    }
}

fn part<'a, T>(value: &'a T, resource: &'a Resource, field: String) -> Part<'a, T> {
    Part {
        value,
        resource,
        field,
    }
}

/// The traffic policy in force for one cluster.
#[derive(Default, Clone)]
struct Policy<'a> {
    load_balancer: Option<Part<'a, LoadBalancerSettings>>,
    connection_pool: Option<Part<'a, ConnectionPoolSettings>>,
    outlier_detection: Option<Part<'a, OutlierDetection>>,
    tls: Option<Part<'a, ClientTlsSettings>>,
    /// Whole-policy fields weft has nothing for (tunnel, proxyProtocol, retryBudget).
    other: Vec<(&'a Resource, String, &'static str)>,
}

/// `policy` (at `field` of `resource`) for `port`: its port-level settings for the port
/// replace it whole; the bool says whether they did.
fn for_port<'a>(
    policy: &'a TrafficPolicy,
    resource: &'a Resource,
    field: &str,
    port: u32,
) -> (Policy<'a>, bool) {
    let port_level = policy
        .port_level_settings
        .iter()
        .enumerate()
        .find(|(_, p)| p.port.is_some_and(|s| s.number == port));
    if let Some((i, p)) = port_level {
        let at = format!("{field}.portLevelSettings[{i}]");
        return (
            Policy {
                load_balancer: p
                    .load_balancer
                    .as_ref()
                    .map(|v| part(v, resource, format!("{at}.loadBalancer"))),
                connection_pool: p
                    .connection_pool
                    .as_ref()
                    .map(|v| part(v, resource, format!("{at}.connectionPool"))),
                outlier_detection: p
                    .outlier_detection
                    .as_ref()
                    .map(|v| part(v, resource, format!("{at}.outlierDetection"))),
                tls: p
                    .tls
                    .as_ref()
                    .map(|v| part(v, resource, format!("{at}.tls"))),
                other: Vec::new(),
            },
            true,
        );
    }
    let mut other = Vec::new();
    if policy.tunnel.is_some() {
        other.push((
            resource,
            format!("{field}.tunnel"),
            "tunneling (HTTP CONNECT upstream) is not supported",
        ));
    }
    if policy.proxy_protocol.is_some() {
        other.push((
            resource,
            format!("{field}.proxyProtocol"),
            "PROXY protocol upstream is not supported",
        ));
    }
    if policy.retry_budget.is_some() {
        other.push((
            resource,
            format!("{field}.retryBudget"),
            "retry budgets are not in the proxy config yet",
        ));
    }
    (
        Policy {
            load_balancer: policy
                .load_balancer
                .as_ref()
                .map(|v| part(v, resource, format!("{field}.loadBalancer"))),
            connection_pool: policy
                .connection_pool
                .as_ref()
                .map(|v| part(v, resource, format!("{field}.connectionPool"))),
            outlier_detection: policy
                .outlier_detection
                .as_ref()
                .map(|v| part(v, resource, format!("{field}.outlierDetection"))),
            tls: policy
                .tls
                .as_ref()
                .map(|v| part(v, resource, format!("{field}.tls"))),
            other,
        },
        false,
    )
}

/// The rule-level policy for a port, then a subset's on top (Istio's `MergeTrafficPolicy`).
fn merged<'a>(base: Option<Policy<'a>>, subset: Option<(Policy<'a>, bool)>) -> Policy<'a> {
    let Some((sub, wholesale)) = subset else {
        return base.unwrap_or_default();
    };
    let Some(mut out) = base else {
        return sub;
    };
    if sub.load_balancer.is_some() || wholesale {
        out.load_balancer = sub.load_balancer;
    }
    if sub.connection_pool.is_some() || wholesale {
        out.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || wholesale {
        out.outlier_detection = sub.outlier_detection;
    }
    if sub.tls.is_some() || wholesale {
        out.tls = sub.tls;
    }
    out.other.extend(sub.other);
    out
}

/// Clusters for every service port in scope, and every subset of its DestinationRule.
pub(crate) fn outbound_clusters(
    scope: &Scope<'_>,
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    notes: &mut Notes,
) -> Vec<proto::Cluster> {
    let mut out = Vec::new();
    for svc in &scope.services {
        let rule = destination_rule(view, mesh, scope.namespace, &node.labels, svc);
        for port in &svc.ports {
            if port.protocol == Some(Protocol::Udp) {
                continue;
            }
            endpoint_notes(svc, view, notes);
            let base = rule.as_ref().and_then(|r| {
                r.rule
                    .traffic_policy
                    .as_ref()
                    .map(|p| for_port(p, r.resource, "spec.trafficPolicy", port.port).0)
            });
            out.push(cluster(
                outbound_cluster(port.port, "", &svc.hostname),
                svc,
                port,
                None,
                &merged(base.clone(), None),
                (node, mesh, view),
                notes,
            ));
            let Some(Rule { subsets, .. }) = &rule else {
                continue;
            };
            for (r, j, subset) in subsets {
                let sub = subset.traffic_policy.as_ref().map(|p| {
                    for_port(p, r, &format!("spec.subsets[{j}].trafficPolicy"), port.port)
                });
                out.push(cluster(
                    outbound_cluster(port.port, &subset.name, &svc.hostname),
                    svc,
                    port,
                    Some(&subset.labels),
                    &merged(base.clone(), sub),
                    (node, mesh, view),
                    notes,
                ));
            }
        }
    }
    out
}

/// The connection pool of an inbound cluster, as Istio's `buildInboundClusterForPortOrUDS`:
/// the DestinationRule's for the service the port serves (its port-level settings for
/// `service_port` replacing the rule's policy), replaced whole by the Sidecar's for the port
/// (`sidecar`: the settings and the field they are written at). Limits apply server-side too,
/// so the receiver admits what clients are allowed to send. Sets the limits and timeouts on
/// `c`; returns `useClientProtocol`.
pub(crate) fn inbound_connection_pool(
    c: &mut proto::Cluster,
    rule: Option<&Rule<'_>>,
    service_port: u32,
    sidecar: Option<(&Resource, &ConnectionPoolSettings, String)>,
    notes: &mut Notes,
) -> bool {
    let from_rule = rule.and_then(|r| {
        let policy = r.rule.traffic_policy.as_ref()?;
        for_port(policy, r.resource, "spec.trafficPolicy", service_port)
            .0
            .connection_pool
    });
    let pool = match sidecar {
        Some((resource, value, field)) => Some(part(value, resource, field)),
        None => from_rule,
    };
    match pool {
        Some(pool) => connection_pool(c, &pool, notes).1,
        None => false,
    }
}

/// Endpoints the proxy cannot use (notes are de-duplicated, so once per service).
fn endpoint_notes(svc: &Service, view: &ConfigView, notes: &mut Notes) {
    let note = |notes: &mut Notes, reason: String| {
        notes.0.push(crate::unsupported::Unsupported {
            resource: Some(svc.resource.clone()),
            field: "spec.resolution".into(),
            reason,
            location: None,
        });
    };
    if svc.resolution == Resolution::DynamicDns {
        note(notes, "resolution DYNAMIC_DNS is not supported".into());
    }
    let names = svc
        .endpoints
        .iter()
        .filter(|e| e.address.parse::<IpAddr>().is_err());
    for e in names {
        let name = &e.address;
        if !dns::resolves_by_dns(svc) {
            note(
                notes,
                format!(
                    "endpoint {name:?} is a name: only resolution DNS resolves names; left out"
                ),
            );
        } else if let Some(Err(why)) = view.dns().get(name) {
            note(
                notes,
                format!("{name:?} did not resolve ({why}); left out until it does"),
            );
        }
    }
}

fn cluster(
    name: String,
    svc: &Service,
    port: &ServicePort,
    subset: Option<&std::collections::BTreeMap<String, String>>,
    policy: &Policy<'_>,
    (node, mesh, view): (&ProxyNode, &MeshConfig, &ConfigView),
    notes: &mut Notes,
) -> proto::Cluster {
    let mut c = proto::Cluster {
        name,
        connect_timeout: mesh.connect_timeout.as_ref().and_then(duration),
        // A DNS name stands for the addresses it resolved to (`crate::dns`).
        endpoints: svc
            .endpoints
            .iter()
            .filter(|e| subset.is_none_or(|labels| selector_matches(labels, &e.labels)))
            .filter_map(|e| Some((e, u16::try_from(*e.ports.get(&port.port)?).ok()?)))
            .flat_map(|(e, target)| {
                dns::endpoint_addresses(svc, &e.address, view.dns())
                    .into_iter()
                    .map(move |ip| proto::Endpoint {
                        address: SocketAddr::new(ip, target).to_string(),
                        weight: e.weight,
                        labels: e
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        locality: locality::to_proto(&e.locality),
                        workload: super::workload_meta::of_endpoint(e, mesh),
                        ..Default::default()
                    })
            })
            .collect(),
        service: Some(super::workload_meta::of_service(svc)),
        ..Default::default()
    };
    c.set_lb_policy(proto::LbPolicy::LeastRequest);
    for (r, field, reason) in &policy.other {
        notes.add(Some(r), field.clone(), *reason);
    }
    if let Some(lb) = &policy.load_balancer {
        load_balancer(&mut c, lb, notes);
    }
    let mut upgrade = mesh.h2_upgrade_policy;
    let mut use_client_protocol = false;
    if let Some(pool) = &policy.connection_pool {
        let (u, client) = connection_pool(&mut c, pool, notes);
        if u != H2UpgradePolicy::Default {
            upgrade = u;
        }
        use_client_protocol = client;
    }
    c.set_protocol(upstream_protocol(
        port.protocol,
        upgrade,
        use_client_protocol,
    ));
    if let Some(od) = &policy.outlier_detection {
        c.outlier_detection = Some(outlier_detection(od.value, od.resource, &od.field, notes));
    }
    c.tls = match &policy.tls {
        Some(tls) if tls.value.mode == ClientTlsMode::IstioMutual => {
            mesh_tls(&mut c, svc, Some(tls), (node, mesh, view), notes)
        }
        Some(tls) => upstream_tls(tls, &svc.hostname, mesh, notes),
        None => mesh_tls(&mut c, svc, None, (node, mesh, view), notes),
    };
    // Original destination (Istio's `convertResolution` and `applyLoadBalancer`): a sidecar's
    // cluster for a `resolution: NONE` service (a gateway uses the endpoints), and any cluster
    // whose load balancer is `PASSTHROUGH`. Requests go where they were addressed.
    let passthrough_lb = policy
        .load_balancer
        .as_ref()
        .is_some_and(|lb| lb.value.simple == Some(SimpleLb::Passthrough));
    if passthrough_lb
        || (svc.resolution == Resolution::Passthrough && node.kind == ProxyKind::Sidecar)
    {
        c.endpoints.clear();
        c.set_discovery(proto::Discovery::OriginalDst);
        return c;
    }
    // Per proxy: priorities and weights relative to its locality. Failover needs outlier
    // detection (without it nothing is ever found unhealthy), as istiod's endpoint builder has it.
    locality::apply(
        &mut c.endpoints,
        locality::effective(policy.load_balancer.as_ref().map(|lb| lb.value), mesh),
        policy.outlier_detection.is_some(),
        node,
    );
    c
}

/// The upstream protocol: HTTP/2 for HTTP/2 and gRPC ports; for HTTP ports the client's with
/// `useClientProtocol`, else HTTP/2 when upgrading; TCP for everything else (undeclared
/// protocols included, as weft treats them).
pub(crate) fn upstream_protocol(
    protocol: Option<Protocol>,
    upgrade: H2UpgradePolicy,
    use_client_protocol: bool,
) -> proto::UpstreamProtocol {
    match protocol {
        Some(Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb) => {
            proto::UpstreamProtocol::Http2
        }
        Some(Protocol::Http | Protocol::HttpProxy) if use_client_protocol => {
            proto::UpstreamProtocol::UseDownstream
        }
        Some(Protocol::Http | Protocol::HttpProxy) if upgrade == H2UpgradePolicy::Upgrade => {
            proto::UpstreamProtocol::Http2
        }
        Some(Protocol::Http | Protocol::HttpProxy) => proto::UpstreamProtocol::Http1,
        _ => proto::UpstreamProtocol::Tcp,
    }
}

fn load_balancer(c: &mut proto::Cluster, lb: &Part<'_, LoadBalancerSettings>, notes: &mut Notes) {
    let (v, r, at) = (lb.value, lb.resource, lb.field.as_str());
    match v.simple {
        None | Some(SimpleLb::Unspecified) => {}
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => {
            c.set_lb_policy(proto::LbPolicy::LeastRequest)
        }
        Some(SimpleLb::Random) => c.set_lb_policy(proto::LbPolicy::Random),
        Some(SimpleLb::RoundRobin) => c.set_lb_policy(proto::LbPolicy::RoundRobin),
        // The cluster becomes ORIGINAL_DST (`cluster`).
        Some(SimpleLb::Passthrough) => {}
    }
    if let Some(ch) = &v.consistent_hash {
        let at = format!("{at}.consistentHash");
        use proto::consistent_hash::Key;
        let key = if let Some(h) = &ch.http_header_name {
            Some(Key::Header(h.clone()))
        } else if let Some(cookie) = &ch.http_cookie {
            if !cookie.attributes.is_empty() {
                notes.add(
                    Some(r),
                    format!("{at}.httpCookie.attributes"),
                    "cookie attributes are not supported",
                );
            }
            Some(Key::Cookie(proto::Cookie {
                name: cookie.name.clone(),
                path: cookie.path.clone(),
                ttl: cookie.ttl.as_ref().and_then(duration),
            }))
        } else if ch.use_source_ip == Some(true) {
            Some(Key::SourceIp(true))
        } else {
            ch.http_query_parameter_name
                .clone()
                .map(Key::QueryParameter)
        };
        match key {
            None => notes.add(
                Some(r),
                at,
                "consistent hashing without a hash key is left out",
            ),
            Some(key) => {
                let mut hash = proto::ConsistentHash {
                    key: Some(key),
                    ..Default::default()
                };
                if let Some(m) = &ch.maglev {
                    c.set_lb_policy(proto::LbPolicy::Maglev);
                    hash.table_size = m.table_size;
                } else {
                    c.set_lb_policy(proto::LbPolicy::RingHash);
                    hash.minimum_ring_size = ch
                        .ring_hash
                        .as_ref()
                        .map_or(ch.minimum_ring_size, |rh| rh.minimum_ring_size);
                }
                c.consistent_hash = Some(hash);
            }
        }
    }
    // `localityLbSetting` is applied per endpoint (`locality::apply`).
    let unsupported: [(bool, &str, &str); 4] = [
        (
            v.backend_utilization.is_some(),
            "backendUtilization",
            "backend-utilization load balancing is not supported",
        ),
        (
            v.zone_aware_lb_setting.is_some(),
            "zoneAwareLbSetting",
            "zone-aware load balancing is not supported yet",
        ),
        (
            v.warmup.is_some(),
            "warmup",
            "slow start of new endpoints is not supported",
        ),
        (
            v.warmup_duration_secs.is_some(),
            "warmupDurationSecs",
            "slow start of new endpoints is not supported",
        ),
    ];
    for (set, field, reason) in unsupported {
        if set {
            notes.add(Some(r), format!("{at}.{field}"), reason);
        }
    }
}

/// Applies the pool's limits (circuit breakers), connect and idle timeouts; returns the HTTP
/// upgrade policy and `useClientProtocol`.
fn connection_pool(
    c: &mut proto::Cluster,
    pool: &Part<'_, ConnectionPoolSettings>,
    notes: &mut Notes,
) -> (H2UpgradePolicy, bool) {
    let (v, r, at) = (pool.value, pool.resource, pool.field.as_str());
    c.circuit_breakers = circuit_breakers(v, r, at, notes);
    let mut idle = None;
    let mut upgrade = H2UpgradePolicy::Default;
    let mut client = false;
    if let Some(http) = &v.http {
        let checks: [(bool, &str, &str); 2] = [
            (
                http.max_concurrent_streams != 0,
                "maxConcurrentStreams",
                "a limit on concurrent streams per HTTP/2 connection is not in the proxy config \
                 yet",
            ),
            (
                http.http2_keep_alive.is_some(),
                "http2KeepAlive",
                "HTTP/2 keepalive pings are not supported",
            ),
        ];
        for (set, field, reason) in checks {
            if set {
                notes.add(Some(r), format!("{at}.http.{field}"), reason);
            }
        }
        idle = http.idle_timeout.as_ref().and_then(duration);
        upgrade = http.h2_upgrade_policy;
        client = http.use_client_protocol;
    }
    if let Some(tcp) = &v.tcp {
        let checks: [(bool, &str, &str); 2] = [
            (
                tcp.tcp_keepalive.is_some(),
                "tcpKeepalive",
                "TCP keepalive settings are not supported",
            ),
            (
                tcp.max_connection_duration.is_some(),
                "maxConnectionDuration",
                "a maximum connection duration is not supported",
            ),
        ];
        for (set, field, reason) in checks {
            if set {
                notes.add(Some(r), format!("{at}.tcp.{field}"), reason);
            }
        }
        if let Some(d) = tcp.connect_timeout.as_ref().and_then(duration) {
            c.connect_timeout = Some(d);
        }
        if idle.is_none() {
            idle = tcp.idle_timeout.as_ref().and_then(duration);
        }
        // The tunnels' own idle timeout (unset: the proxy's default 1h, Istio's).
        c.tcp_idle_timeout = tcp.idle_timeout.as_ref().and_then(duration);
    }
    c.idle_timeout = idle;
    (upgrade, client)
}

/// Mesh mTLS to a service's endpoints: asked for by a DestinationRule's ISTIO_MUTUAL
/// (`explicit`: every endpoint), or automatic without a DestinationRule `tls` (Istio's auto
/// mTLS: the endpoints whose workload runs a sidecar with a workload certificate, unless their
/// PeerAuthentication DISABLEs mTLS on that port; the others are marked plaintext). The peer
/// must present one of the endpoints' SPIFFE identities (a DestinationRule's
/// `subjectAltNames` replace them). Needs the proxy's own workload certificate.
fn mesh_tls(
    c: &mut proto::Cluster,
    svc: &Service,
    explicit: Option<&Part<'_, ClientTlsSettings>>,
    (node, mesh, view): (&ProxyNode, &MeshConfig, &ConfigView),
    notes: &mut Notes,
) -> Option<proto::UpstreamTls> {
    if !super::sidecar::has_mesh_identity(&node.labels) {
        if let Some(t) = explicit {
            notes.add(
                Some(t.resource),
                format!("{}.mode", t.field),
                "ISTIO_MUTUAL needs this proxy's workload certificate and it has none (its \
                 instance lacks the label security.istio.io/tlsMode: istio): traffic is sent \
                 in plaintext",
            );
        }
        return None;
    }
    let by_ip: std::collections::HashMap<&str, &crate::registry::Endpoint> = svc
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e))
        .collect();
    let mut identities = std::collections::BTreeSet::new();
    let mut any = false;
    for e in &mut c.endpoints {
        let address: Option<SocketAddr> = e.address.parse().ok();
        let registered = address.and_then(|a| by_ip.get(a.ip().to_string().as_str()).copied());
        let takes_mtls =
            super::sidecar::is_istio_tls_mode(e.labels.get(super::sidecar::TLS_MODE_LABEL))
                && address.is_some_and(|a| {
                    let labels = e
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    super::peer_auth::for_workload(view, mesh, &svc.namespace, &labels)
                        .mode(u32::from(a.port()))
                        != super::peer_auth::PeerMode::Disable
                });
        if explicit.is_none() && !takes_mtls {
            e.plaintext = true;
            continue;
        }
        any = true;
        if let Some(r) = registered.filter(|r| !r.service_account.is_empty()) {
            identities.insert(crate::ca::spiffe_id(
                &mesh.trust_domain,
                &svc.namespace,
                &r.service_account,
            ));
        }
    }
    if !any && explicit.is_none() {
        for e in &mut c.endpoints {
            e.plaintext = false;
        }
        return None;
    }
    let subject_alt_names = match explicit {
        Some(t) if !t.value.subject_alt_names.is_empty() => t.value.subject_alt_names.clone(),
        _ => identities.into_iter().collect(),
    };
    Some(proto::UpstreamTls {
        // Istio's SNI for mesh mTLS: the cluster name with `|` written `_.`.
        sni: c.name.replace('|', "_."),
        subject_alt_names,
        mesh: true,
        ..Default::default()
    })
}

/// Upstream TLS from a DestinationRule's `tls`. SIMPLE and MUTUAL originate TLS with the given
/// files (ISTIO_MUTUAL is [`mesh_tls`]).
fn upstream_tls(
    tls: &Part<'_, ClientTlsSettings>,
    host: &str,
    mesh: &MeshConfig,
    notes: &mut Notes,
) -> Option<proto::UpstreamTls> {
    let (v, r, at) = (tls.value, tls.resource, tls.field.as_str());
    match v.mode {
        // ISTIO_MUTUAL is handled by `mesh_tls` before this is called.
        ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    if !v.ca_crl.is_empty() {
        notes.add(
            Some(r),
            format!("{at}.caCrl"),
            "certificate revocation lists are not supported",
        );
    }
    let mut out = proto::UpstreamTls {
        sni: if v.sni.is_empty() && !host.starts_with('*') {
            host.to_owned()
        } else {
            v.sni.clone()
        },
        ca_file: v.ca_certificates.clone(),
        insecure_skip_verify: v.insecure_skip_verify == Some(true),
        subject_alt_names: v.subject_alt_names.clone(),
        ..Default::default()
    };
    if !v.credential_name.is_empty() {
        // As for gateways: a credential is a directory holding a Kubernetes TLS secret's files.
        let dir = format!("{}/{}", mesh.file_credential_dir(), v.credential_name);
        if out.ca_file.is_empty() {
            out.ca_file = format!("{dir}/ca.crt");
        }
        if v.mode == ClientTlsMode::Mutual {
            out.cert_file = format!("{dir}/tls.crt");
            out.key_file = format!("{dir}/tls.key");
        }
    }
    if v.mode == ClientTlsMode::Mutual && v.credential_name.is_empty() {
        out.cert_file = v.client_certificate.clone();
        out.key_file = v.private_key.clone();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_protocol_choice() {
        use proto::UpstreamProtocol as P;
        let d = H2UpgradePolicy::DoNotUpgrade;
        assert_eq!(upstream_protocol(Some(Protocol::Http), d, false), P::Http1);
        assert_eq!(
            upstream_protocol(Some(Protocol::Http), H2UpgradePolicy::Upgrade, false),
            P::Http2
        );
        assert_eq!(
            upstream_protocol(Some(Protocol::Http), d, true),
            P::UseDownstream
        );
        assert_eq!(upstream_protocol(Some(Protocol::Grpc), d, false), P::Http2);
        assert_eq!(upstream_protocol(Some(Protocol::Tcp), d, true), P::Tcp);
        assert_eq!(upstream_protocol(None, d, false), P::Tcp);
    }

    #[test]
    fn tcp_idle_timeout_bounds_tunnels() {
        let loaded = weft_api::load_str(
            "dr.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: r, namespace: default}\nspec: {host: r}\n",
        );
        let resource = &loaded.resources[0];
        let translate = |yaml: &str| {
            let pool: ConnectionPoolSettings = yaml_serde::from_str(yaml).expect("pool");
            let part = Part {
                value: &pool,
                resource,
                field: "spec.trafficPolicy.connectionPool".into(),
            };
            let mut c = proto::Cluster::default();
            connection_pool(&mut c, &part, &mut Notes::default());
            c
        };
        let c = translate("{tcp: {idleTimeout: 90s}}");
        assert_eq!(c.tcp_idle_timeout.map(|d| d.seconds), Some(90));
        // Unset: the proxy applies Istio's default (1h) itself.
        let c = translate("{tcp: {maxConnections: 5}, http: {idleTimeout: 30s}}");
        assert_eq!(c.tcp_idle_timeout, None);
        assert_eq!(c.idle_timeout.map(|d| d.seconds), Some(30));
    }
}
