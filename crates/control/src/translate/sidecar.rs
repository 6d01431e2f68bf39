//! A sidecar's resources.
//!
//! Outbound: one explicit-proxy HTTP listener (`outbound`, on the proxy's address, port
//! 15001): in local mode applications reach other services through `HTTP_PROXY`. Its route
//! configuration has a virtual host per (service host, port), named `host:port` with domain
//! `host:port` (and the bare host for port 80; the proxy resolves Kubernetes short names
//! itself). HTTP ports get the VirtualService's `http` routes; other ports (TCP, TLS) are
//! reachable with `CONNECT host:port` and get the first matching `tcp` (or `tls`) route, or a
//! default route; those routes are CONNECT routes (Envoy's `connect_matcher`), and CONNECT
//! matches nothing else. Ports that declare no protocol are sniffed, as Istio's: they get
//! both (`sniffed_routes`). A `*` virtual host applies the outbound traffic policy to every
//! other host, for CONNECT and for other requests. Under transparent capture the same
//! listener routes redirected connections (`capture.rs`).
//!
//! Inbound: a listener per workload port (`inbound|PORT` on the proxy's address) forwarding to
//! the application (`inbound|PORT||`, at the app host).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use weft_api::Resource;
use weft_api::networking::gateway::Protocol;
use weft_api::networking::{Sidecar, VirtualService};
use weft_xds::proto;

use super::cluster::{inbound_connection_pool, outbound_clusters, upstream_protocol};
use super::http::{RouteCx, hashed_clusters, http_routes, l4_destinations};
use super::key::{OutboundKey, selector_label_keys};
use super::names::{
    BLACKHOLE_CLUSTER, OUTBOUND, OUTBOUND_PORT, PASSTHROUGH_CLUSTER, inbound_cluster,
    inbound_listener, outbound_cluster, virtual_host,
};
use super::peer_auth;
use super::route_policy::default_route_retries;
use super::scope::{Scope, destination_rule, select_sidecar};
use super::{Notes, ProxyResources};
use crate::host::{matches, more_specific_first, resolve_host};
use crate::mesh_config::{MeshConfig, Mode};
use crate::node::ProxyNode;
use crate::registry::{Service, ServicePort};
use crate::view::ConfigView;

/// The resources of the sidecar `node`: its outbound half ([`sidecar_outbound`]) for its
/// [`OutboundKey`], and its own ([`sidecar_own`]).
pub fn sidecar(node: &ProxyNode, mesh: &MeshConfig, view: &ConfigView) -> ProxyResources {
    let key = OutboundKey::of(node, &selector_label_keys(view, mesh));
    let mut out = sidecar_outbound(&key, mesh, view);
    let own = sidecar_own(node, mesh, view);
    out.listeners.extend(own.listeners);
    out.route_configs.extend(own.route_configs);
    out.clusters.extend(own.clusters);
    out.unsupported.extend(own.unsupported);
    out.unsupported.sort();
    out.unsupported.dedup();
    out
}

/// The outbound half of every sidecar with `key`: the route configuration `outbound` and the
/// clusters of every visible service (and the passthrough cluster). Shared by all of them.
pub fn sidecar_outbound(key: &OutboundKey, mesh: &MeshConfig, view: &ConfigView) -> ProxyResources {
    let node = key.node();
    let mut notes = Notes::default();
    let scope = Scope::for_sidecar(&node, mesh, view, &mut notes);
    // Clusters first: a route's retries depend on whether its cluster hashes.
    let mut out = ProxyResources {
        clusters: outbound_clusters(&scope, &node, mesh, view, &mut notes),
        ..Default::default()
    };
    let hashed = hashed_clusters(&out.clusters);
    out.route_configs.push(outbound_routes(
        &node, &scope, mesh, view, &hashed, &mut notes,
    ));
    if scope.mode == Mode::AllowAny {
        // Hosts outside the registry go where they were addressed (Istio's
        // `buildDefaultPassthroughCluster`), with the mesh's connect timeout.
        let mut passthrough = proto::Cluster {
            name: PASSTHROUGH_CLUSTER.to_owned(),
            connect_timeout: mesh.connect_timeout.as_ref().and_then(super::duration),
            ..Default::default()
        };
        passthrough.set_discovery(proto::Discovery::OriginalDst);
        out.clusters.push(passthrough);
    }
    out.unsupported = notes.finish();
    out
}

/// The outbound route configuration as the transport carries it: `outbound` keeps its `*`
/// virtual host and includes (`includePrefix`) one configuration per other virtual host,
/// named `outbound/<virtual host>`. With a thousand services, a change to one service's
/// routes then sends that service's virtual host, not the whole table. The proxy joins them
/// back into one table; `weft proxy-config routes` shows them under `outbound`.
pub fn split_outbound(rc: proto::RouteConfiguration) -> Vec<proto::RouteConfiguration> {
    if rc.name != OUTBOUND {
        return vec![rc];
    }
    let prefix = format!("{OUTBOUND}/");
    let mut main = proto::RouteConfiguration {
        name: rc.name,
        virtual_hosts: Vec::new(),
        include_prefix: prefix.clone(),
    };
    let mut parts = Vec::new();
    let mut names = HashSet::new();
    for vh in rc.virtual_hosts {
        let own = vh.domains.iter().any(|d| d == "*") || !names.insert(vh.name.clone());
        if own {
            main.virtual_hosts.push(vh);
        } else {
            parts.push(proto::RouteConfiguration {
                name: format!("{prefix}{}", vh.name),
                virtual_hosts: vec![vh],
                ..Default::default()
            });
        }
    }
    let mut out = vec![main];
    out.extend(parts);
    out
}

/// What is the sidecar `node`'s alone: the outbound listener on its address, the inbound
/// listeners and clusters of its workload's ports, and with DNS capture its `dns` listener
/// (its table has short names for the node's own namespace).
pub fn sidecar_own(node: &ProxyNode, mesh: &MeshConfig, view: &ConfigView) -> ProxyResources {
    let mut notes = Notes::default();
    let mut out = ProxyResources::default();
    out.listeners.push(proto::Listener {
        name: OUTBOUND.to_owned(),
        address: SocketAddr::new(node.ip, OUTBOUND_PORT).to_string(),
        protocol: Some(proto::listener::Protocol::Http(proto::HttpListener {
            route_config: OUTBOUND.to_owned(),
            explicit_proxy: true,
            path_normalization: mesh.path_normalization() as i32,
            ..Default::default()
        })),
        ..Default::default()
    });
    let sidecar = select_sidecar(node, mesh, view);
    inbound(node, sidecar, mesh, view, &mut out, &mut notes);
    // Access logs (meshConfig.accessLogFile, Telemetry): the outbound listener is the
    // client side, the inbound ones the server side.
    let telemetry = super::telemetry::for_workload(view, mesh, &node.namespace, &node.labels);
    use super::telemetry::ListenerClass as Class;
    let class = |l: &proto::Listener| {
        if l.name == OUTBOUND {
            Class::SidecarOutbound
        } else {
            Class::SidecarInbound
        }
    };
    super::telemetry::apply_access_logs(&mut out.listeners, &telemetry, mesh, class, &mut notes);
    // Policies apply to what the workload receives: its inbound listeners.
    let security = super::security::for_workload(node, mesh, view, &mut notes);
    super::security::apply(&mut out.listeners[1..], &security);
    super::workload_meta::label_listeners(node, mesh, view, &mut out.listeners);
    super::telemetry::apply_metrics(&mut out.listeners, &telemetry, mesh, class);
    // Tracing: the mesh config's, with what Telemetry says for each side.
    let (outbound, inbound) = out.listeners.split_at_mut(1);
    for (side, listeners) in [
        (Class::SidecarOutbound, outbound),
        (Class::SidecarInbound, inbound),
    ] {
        let over = super::telemetry::tracing_override(&telemetry, mesh, side);
        super::trace_config::attach(node, mesh, view, over.as_ref(), listeners);
    }
    if node.capture {
        super::capture::capture(node, mesh, view, &mut out);
    }
    // DNS proxying (ISTIO_META_DNS_CAPTURE): last, as it is neither side of the workload's
    // traffic (the listener slices above are by position).
    out.listeners
        .extend(super::dns::dns_listener(node, mesh, view));
    out.unsupported = notes.finish();
    out
}

/// Virtual hosts with unique domains (the proxy rejects a domain served twice; the first
/// claim wins, as Istio's domain de-duplication).
#[derive(Default)]
struct VirtualHosts {
    hosts: Vec<proto::VirtualHost>,
    domains: HashSet<String>,
}

impl VirtualHosts {
    fn push(&mut self, name: String, domains: Vec<String>, routes: Vec<proto::Route>) {
        let domains: Vec<String> = domains
            .into_iter()
            .filter(|d| self.domains.insert(d.to_ascii_lowercase()))
            .collect();
        if !domains.is_empty() {
            self.hosts.push(proto::VirtualHost {
                name,
                domains,
                routes,
            });
        }
    }
}

fn outbound_routes(
    node: &ProxyNode,
    scope: &Scope<'_>,
    mesh: &MeshConfig,
    view: &ConfigView,
    hashed: &HashSet<String>,
    notes: &mut Notes,
) -> proto::RouteConfiguration {
    let cx = |port| RouteCx {
        node,
        port,
        gateway: "mesh",
        tls: false,
        scope,
        view,
        mesh,
        hashed,
    };
    let mut vhosts = VirtualHosts::default();
    // (host, port) pairs a VirtualService has routed.
    let mut claimed: HashSet<(String, u32)> = HashSet::new();

    // Exact VirtualService hosts first, in precedence order: the first to claim a host wins.
    for (r, vs) in &scope.virtual_services {
        for h in &vs.hosts {
            let host = resolve_host(h, r.namespace()).to_ascii_lowercase();
            if host.starts_with('*') {
                continue;
            }
            match scope.service(&host) {
                Some(svc) => {
                    for port in &svc.ports {
                        if claimed.contains(&(host.clone(), port.port)) {
                            continue;
                        }
                        if let Some(routes) =
                            service_routes(&cx(port.port), svc, port, Some((r, vs)), notes)
                        {
                            claimed.insert((host.clone(), port.port));
                            vhosts.push(
                                virtual_host(&host, port.port),
                                domains(svc, port.port),
                                routes,
                            );
                        }
                    }
                }
                // A host outside the registry: routed on port 80 only, as Istio does.
                None => {
                    if claimed.contains(&(host.clone(), 80)) {
                        continue;
                    }
                    let routes = http_routes(&cx(80), r, vs, notes);
                    if !routes.is_empty() {
                        claimed.insert((host.clone(), 80));
                        vhosts.push(virtual_host(&host, 80), vec![host.clone()], routes);
                    }
                }
            }
        }
    }

    // Wildcard hosts: each service goes to the most specific wildcard covering it, the
    // earliest VirtualService on a tie.
    let wildcards: Vec<(&Resource, &VirtualService, String)> = scope
        .virtual_services
        .iter()
        .flat_map(|(r, vs)| {
            vs.hosts
                .iter()
                .map(|h| resolve_host(h, r.namespace()).to_ascii_lowercase())
                .filter(|h| h.starts_with('*'))
                .map(move |h| (*r, *vs, h))
        })
        .collect();
    let mut wildcard_used = vec![false; wildcards.len()];
    for svc in &scope.services {
        let best = wildcards
            .iter()
            .enumerate()
            .filter(|(_, (_, _, h))| matches(&svc.hostname, h))
            .min_by(|(i, (_, _, a)), (j, (_, _, b))| more_specific_first(a, b).then(i.cmp(j)));
        let Some((i, (r, vs, _))) = best else {
            continue;
        };
        wildcard_used[i] = true;
        for port in &svc.ports {
            let key = (svc.hostname.clone(), port.port);
            if claimed.contains(&key) {
                continue;
            }
            if let Some(routes) = service_routes(&cx(port.port), svc, port, Some((r, vs)), notes) {
                claimed.insert(key);
                vhosts.push(
                    virtual_host(&svc.hostname, port.port),
                    domains(svc, port.port),
                    routes,
                );
            }
        }
    }
    for ((r, vs, h), used) in wildcards.iter().zip(wildcard_used) {
        if used || claimed.contains(&(h.clone(), 80)) {
            continue;
        }
        let routes = http_routes(&cx(80), r, vs, notes);
        if !routes.is_empty() {
            claimed.insert((h.clone(), 80));
            vhosts.push(virtual_host(h, 80), vec![h.clone()], routes);
        }
    }

    // Every other service port: straight to its cluster.
    for svc in &scope.services {
        for port in &svc.ports {
            if claimed.contains(&(svc.hostname.clone(), port.port)) {
                continue;
            }
            if let Some(routes) = service_routes(&cx(port.port), svc, port, None, notes) {
                vhosts.push(
                    virtual_host(&svc.hostname, port.port),
                    domains(svc, port.port),
                    routes,
                );
            }
        }
    }

    let mut virtual_hosts = vhosts.hosts;
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rest = VirtualHosts {
        hosts: Vec::new(),
        domains: vhosts.domains,
    };
    match scope.mode {
        Mode::RegistryOnly => {
            let block = proto::Route {
                name: "block_all".into(),
                action: Some(proto::route::Action::DirectResponse(
                    proto::DirectResponse {
                        status: 502,
                        body: format!(
                            "{BLACKHOLE_CLUSTER}: the host is not in the mesh's service registry and \
                         the outbound traffic policy is REGISTRY_ONLY\n"
                        ),
                    },
                )),
                ..Default::default()
            };
            rest.push("block_all".into(), vec!["*".into()], with_connect(block));
        }
        Mode::AllowAny => rest.push(
            "allow_any".into(),
            vec!["*".into()],
            with_connect(default_route(PASSTHROUGH_CLUSTER.to_owned())),
        ),
    }
    virtual_hosts.extend(rest.hosts);
    proto::RouteConfiguration {
        name: OUTBOUND.to_owned(),
        virtual_hosts,
        ..Default::default()
    }
}

/// `route` for CONNECT (an HTTPS_PROXY client's tunnel to a host outside the registry), then
/// for every other request.
fn with_connect(route: proto::Route) -> Vec<proto::Route> {
    let connect = proto::Route {
        connect: true,
        ..route.clone()
    };
    vec![connect, route]
}

/// `host:port`, and the bare host on port 80 (the authority a client sends for it).
/// A service port's domains: `host:port` (and the bare host on port 80), and its virtual
/// IPs the same way, so that a request addressed to a VIP (captured, or through the explicit
/// proxy) finds the service.
fn domains(svc: &Service, port: u32) -> Vec<String> {
    let host = svc.hostname.as_str();
    let mut out = vec![virtual_host(host, port)];
    if port == 80 {
        out.push(host.to_owned());
    }
    for vip in svc.addresses.iter().filter(|a| !a.contains('/')) {
        let vip = match vip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => vip.clone(),
        };
        out.push(format!("{vip}:{port}"));
        if port == 80 {
            out.push(vip);
        }
    }
    out
}

fn default_route(cluster: String) -> proto::Route {
    proto::Route {
        name: "default".into(),
        action: Some(proto::route::Action::Route(proto::RouteAction {
            clusters: vec![proto::WeightedCluster {
                cluster,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The routes of one service port (see [`port_routes`]). A port that is not HTTP is reached
/// with `CONNECT host:port` through the explicit proxy: its routes match CONNECT only
/// (Envoy's `connect_matcher`), and a CONNECT to an HTTP port matches nothing (404 NR).
fn service_routes(
    cx: &RouteCx<'_>,
    svc: &Service,
    port: &ServicePort,
    vs: Option<(&Resource, &VirtualService)>,
    notes: &mut Notes,
) -> Option<Vec<proto::Route>> {
    if port.protocol.is_none() {
        return sniffed_routes(cx, svc, port, vs, notes);
    }
    let mut routes = port_routes(cx, svc, port, vs, notes)?;
    if !port.is_http() {
        for route in &mut routes {
            route.connect = true;
        }
    }
    Some(routes)
}

/// The routes of a port that declares no protocol, which is sniffed as Istio's
/// auto-detected ports are (a captured connection's first bytes, or a plain request through
/// the explicit proxy): HTTP requests take the VirtualService's `http` routes for the port,
/// else go to the service; everything else (CONNECT, a captured connection that is not HTTP)
/// its `tcp` routes, else the service. `None` when `vs` routes neither way (the port then
/// falls back to its defaults).
fn sniffed_routes(
    cx: &RouteCx<'_>,
    svc: &Service,
    port: &ServicePort,
    vs: Option<(&Resource, &VirtualService)>,
    notes: &mut Notes,
) -> Option<Vec<proto::Route>> {
    let as_http = ServicePort {
        protocol: Some(Protocol::Http),
        ..port.clone()
    };
    let http = port_routes(cx, svc, &as_http, vs, notes);
    // Its `http routes do not apply` note is for ports that are TCP, not sniffed.
    let tcp = port_routes(cx, svc, port, vs, &mut Notes::default());
    if http.is_none() && tcp.is_none() {
        return None;
    }
    let default = || default_route(outbound_cluster(port.port, "", &svc.hostname));
    let mut routes = http.unwrap_or_else(|| vec![default()]);
    for mut route in tcp.unwrap_or_else(|| vec![default()]) {
        route.connect = true;
        routes.push(route);
    }
    Some(routes)
}

/// The routes of one service port: from `vs` when it has routes for the port (`None`
/// otherwise, so the port falls back to its default), else the default route.
fn port_routes(
    cx: &RouteCx<'_>,
    svc: &Service,
    port: &ServicePort,
    vs: Option<(&Resource, &VirtualService)>,
    notes: &mut Notes,
) -> Option<Vec<proto::Route>> {
    if port.protocol == Some(Protocol::Udp) {
        return None;
    }
    let Some((r, vs)) = vs else {
        let mut route = default_route(outbound_cluster(port.port, "", &svc.hostname));
        // Istio's default route to an HTTP service carries the mesh's default retry policy
        // (`BuildDefaultHTTPOutboundRoute`); CONNECT tunnels to other ports are not retried.
        if port.is_http()
            && let Some(proto::route::Action::Route(action)) = &mut route.action
        {
            let cluster = outbound_cluster(port.port, "", &svc.hostname);
            let hashed = cx.hashed.contains(&cluster);
            action.retry_policy = default_route_retries(cx.mesh, hashed, notes);
        }
        return Some(vec![route]);
    };
    if port.is_http() {
        let routes = http_routes(cx, r, vs, notes);
        return (!routes.is_empty()).then_some(routes);
    }
    if !vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        notes.add(
            Some(r),
            "spec.http",
            format!(
                "port {} of {} is not declared HTTP (name it http-*, or set appProtocol), so \
                 weft treats it as TCP and these http routes do not apply to it",
                port.port, svc.hostname
            ),
        );
        return None;
    }
    let tls = matches!(port.protocol, Some(Protocol::Https | Protocol::Tls));
    let sni = tls.then_some(svc.hostname.as_str());
    let clusters = l4_destinations(cx, r, vs, sni, notes)?;
    if clusters.is_empty() {
        return None;
    }
    Some(vec![proto::Route {
        name: "default".into(),
        action: Some(proto::route::Action::Route(proto::RouteAction {
            clusters,
            ..Default::default()
        })),
        ..Default::default()
    }])
}

/// The mesh mTLS of the inbound listener on workload port `port`, by PeerAuthentication.
/// A sidecar without a workload identity (its instance lacks Istio's
/// `security.istio.io/tlsMode: istio` label) can only take plaintext: a STRICT mode it cannot
/// enforce is reported.
fn inbound_mtls(
    node: &ProxyNode,
    policies: &peer_auth::WorkloadPolicies<'_>,
    port: u32,
    notes: &mut Notes,
) -> Option<proto::MeshTls> {
    let mode = match policies.mode(port) {
        peer_auth::PeerMode::Disable => return None,
        peer_auth::PeerMode::Permissive => proto::mesh_tls::Mode::Permissive,
        peer_auth::PeerMode::Strict => proto::mesh_tls::Mode::Strict,
    };
    if !has_mesh_identity(&node.labels) {
        if mode == proto::mesh_tls::Mode::Strict {
            notes.add(
                None,
                format!("workload {}/{} port {port}", node.namespace, node.name),
                "PeerAuthentication STRICT is not enforced: this sidecar has no workload \
                 certificate (its instance lacks the label security.istio.io/tlsMode: istio); \
                 plaintext is accepted",
            );
        }
        return None;
    }
    let mut m = proto::MeshTls::default();
    m.set_mode(mode);
    Some(m)
}

/// Whether a workload (by its labels) runs a sidecar with a workload certificate: Istio's
/// injected `security.istio.io/tlsMode: istio` label, which `weft up` sets on every replica.
pub(crate) fn has_mesh_identity(labels: &std::collections::BTreeMap<String, String>) -> bool {
    is_istio_tls_mode(labels.get(TLS_MODE_LABEL))
}

/// The value of [`TLS_MODE_LABEL`] that means mTLS.
pub(crate) fn is_istio_tls_mode(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "istio")
}

/// Istio's label for workloads whose sidecar takes mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// A port the sidecar accepts inbound traffic on.
struct InboundPort {
    port: u32,
    /// Where the application listens.
    target: SocketAddr,
    protocol: Option<Protocol>,
}

fn inbound(
    node: &ProxyNode,
    sidecar: Option<(&Resource, &Sidecar)>,
    mesh: &MeshConfig,
    view: &ConfigView,
    out: &mut ProxyResources,
    notes: &mut Notes,
) {
    let ports = match sidecar {
        Some((r, sc)) if !sc.ingress.is_empty() => ingress_ports(node, r, sc, notes),
        _ => workload_ports(node, view),
    };
    let policies = peer_auth::for_workload(view, mesh, &node.namespace, &node.labels);
    for p in ports.into_values() {
        if p.port == u32::from(OUTBOUND_PORT) {
            notes.add(
                None,
                format!("workload {}/{} port {}", node.namespace, node.name, p.port),
                "the port is the sidecar's outbound port; no inbound listener for it",
            );
            continue;
        }
        let Ok(listen) = u16::try_from(p.port) else {
            continue;
        };
        let name = inbound_listener(p.port);
        let cluster = inbound_cluster(p.port);
        let mesh_tls = inbound_mtls(node, &policies, p.port, notes);
        let http = p.protocol.is_some_and(Protocol::is_http);
        let protocol = if http {
            out.route_configs.push(proto::RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vec![proto::VirtualHost {
                    name: format!("inbound|http|{}", p.port),
                    domains: vec!["*".into()],
                    // Istio now also retries inbound requests reset before they reached the
                    // application (`reset-before-request`), a condition the proxy lacks.
                    routes: vec![default_route(cluster.clone())],
                }],
                ..Default::default()
            });
            proto::listener::Protocol::Http(proto::HttpListener {
                route_config: name.clone(),
                path_normalization: mesh.path_normalization() as i32,
                mesh_tls,
                ..Default::default()
            })
        } else {
            proto::listener::Protocol::Tcp(proto::TcpListener {
                cluster: cluster.clone(),
                mesh_tls,
                ..Default::default()
            })
        };
        out.listeners.push(proto::Listener {
            name,
            address: SocketAddr::new(node.ip, listen).to_string(),
            protocol: Some(protocol),
            ..Default::default()
        });
        let mut c = proto::Cluster {
            name: cluster,
            connect_timeout: mesh.connect_timeout.as_ref().and_then(super::duration),
            endpoints: vec![proto::Endpoint {
                address: p.target.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let use_client_protocol = inbound_pool(&mut c, node, sidecar, mesh, view, p.port, notes);
        c.set_protocol(upstream_protocol(
            p.protocol,
            weft_api::networking::destination_rule::H2UpgradePolicy::DoNotUpgrade,
            use_client_protocol,
        ));
        out.clusters.push(c);
    }
}

/// Applies the connection pool of the inbound cluster for `port` (where the application
/// listens); returns `useClientProtocol`. The DestinationRule is that of the service whose
/// endpoint on this workload has the port (the first, when several do: Istio's choice is as
/// arbitrary), and the Sidecar's pool for the port replaces it.
fn inbound_pool(
    c: &mut proto::Cluster,
    node: &ProxyNode,
    sidecar: Option<(&Resource, &Sidecar)>,
    mesh: &MeshConfig,
    view: &ConfigView,
    port: u32,
    notes: &mut Notes,
) -> bool {
    let ip = node.ip.to_string();
    let served = view.endpoints_at(&ip).find_map(|(svc, e)| {
        e.ports
            .iter()
            .find(|(_, target)| **target == port)
            .map(|(svc_port, _)| (svc, *svc_port))
    });
    // Istio honours a DestinationRule's workloadSelector for outbound traffic only: with no
    // labels to match, only rules without a selector are found.
    let rule = served
        .and_then(|(svc, _)| destination_rule(view, mesh, &node.namespace, &BTreeMap::new(), svc));
    // Istio's `InboundConnectionPoolForPort`: the ingress listener's pool for the port, else
    // the Sidecar's inboundConnectionPool.
    let sidecar = sidecar.and_then(|(r, sc)| {
        let ingress = sc.ingress.iter().enumerate().find_map(|(i, l)| {
            let pool = l.connection_pool.as_ref()?;
            (l.port.as_ref()?.number == port)
                .then(|| (r, pool, format!("spec.ingress[{i}].connectionPool")))
        });
        ingress.or_else(|| {
            sc.inbound_connection_pool
                .as_ref()
                .map(|pool| (r, pool, "spec.inboundConnectionPool".to_owned()))
        })
    });
    inbound_connection_pool(
        c,
        rule.as_ref(),
        served.map_or(port, |(_, p)| p),
        sidecar,
        notes,
    )
}

/// Inbound ports from the workload instance's declared ports and the target ports of the
/// services that select it (whose protocol fills in an undeclared one).
fn workload_ports(node: &ProxyNode, view: &ConfigView) -> BTreeMap<u32, InboundPort> {
    let mut out: BTreeMap<u32, InboundPort> = BTreeMap::new();
    let target = |port: u32| SocketAddr::new(node.app_host, u16::try_from(port).unwrap_or(0));
    if let Some(inst) = view.instance_of(node) {
        for p in &inst.ports {
            out.entry(p.port).or_insert(InboundPort {
                port: p.port,
                target: target(p.port),
                protocol: p.protocol,
            });
        }
    }
    let ip = node.ip.to_string();
    for svc in view.registry().services() {
        for ep in svc.endpoints.iter().filter(|e| e.address == ip) {
            for (svc_port, target_port) in &ep.ports {
                let protocol = svc.port(*svc_port).and_then(|p| p.protocol);
                let entry = out.entry(*target_port).or_insert(InboundPort {
                    port: *target_port,
                    target: target(*target_port),
                    protocol,
                });
                if entry.protocol.is_none() {
                    entry.protocol = protocol;
                }
            }
        }
    }
    out.retain(|port, _| *port != 0 && *port <= u32::from(u16::MAX));
    out
}

/// Inbound ports from a Sidecar's `ingress` listeners.
fn ingress_ports(
    node: &ProxyNode,
    r: &Resource,
    sc: &weft_api::networking::Sidecar,
    notes: &mut Notes,
) -> BTreeMap<u32, InboundPort> {
    let mut out = BTreeMap::new();
    for (i, l) in sc.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        for (set, field, reason) in [
            (
                l.tls.is_some(),
                "tls",
                "TLS termination on sidecar ingress is not supported",
            ),
            (
                !l.bind.is_empty(),
                "bind",
                "inbound listeners bind the proxy's address; bind is ignored",
            ),
        ] {
            if set {
                notes.add(Some(r), format!("{at}.{field}"), reason);
            }
        }
        let Some(port) = &l.port else { continue };
        let Ok(number) = u16::try_from(port.number) else {
            continue;
        };
        // `127.0.0.1:PORT` / `0.0.0.0:PORT` (or empty: the same port) is the application,
        // which weft reaches at the app host.
        let target_port = match l.default_endpoint.as_str() {
            "" => Some(number),
            e if e.starts_with("unix://") => None,
            e => e
                .rsplit_once(':')
                .filter(|(h, _)| {
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    h.parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
                })
                .and_then(|(_, p)| p.parse().ok()),
        };
        let Some(target_port) = target_port else {
            notes.add(
                Some(r),
                format!("{at}.defaultEndpoint"),
                "only the application's loopback or unspecified address (127.0.0.1:PORT, \
                 0.0.0.0:PORT) is supported",
            );
            continue;
        };
        out.insert(
            u32::from(number),
            InboundPort {
                port: u32::from(number),
                target: SocketAddr::new(node.app_host, target_port),
                protocol: Protocol::parse(&port.protocol),
            },
        );
    }
    out
}
