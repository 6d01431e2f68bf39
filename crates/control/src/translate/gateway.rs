//! A gateway's resources: Istio's `buildGatewayListeners` and `buildGatewayHTTPRouteConfig`
//! (pilot/pkg/networking/core/gateway.go).
//!
//! Every Gateway whose selector matches the proxy's labels (in any namespace, Istio's default)
//! contributes its servers; servers are grouped by port into one listener each, on the proxy's
//! address, at the target port of the gateway's Service for that port when it has one (a
//! Gateway's `port.number` is a Service port, as in Istio; see `target_port`):
//!
//! - HTTP, and HTTPS with `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL (terminated with the
//!   server's certificate; MUTUAL requires and OPTIONAL_MUTUAL verifies when sent a client
//!   certificate, per server: see `downstream_tls`): an HTTP listener with route configuration
//!   `http.PORT`. A virtual host per host in the
//!   intersection of the server's hosts (`ns/host` only for that namespace's VirtualServices)
//!   and the hosts of each VirtualService bound to the Gateway; routes of several
//!   VirtualServices for one host are concatenated, catch-all routes last. With no
//!   VirtualService bound, a `*` virtual host without routes: requests get 404 NR.
//! - HTTPS/TLS with `PASSTHROUGH`: a TLS passthrough listener routing SNI names by the bound
//!   VirtualServices' `tls` routes.
//! - TCP: a TCP listener to the first applicable `tcp` route's destination.
//!
//! A `credentialName` names a Secret in the gateway's own namespace (Istio reads credentials
//! from the gateway workload's namespace, not the Gateway resource's), whose certificate and
//! key (`tls.crt`/`tls.key`, or `cert`/`key`) travel to this gateway only, as a `Secret`
//! resource the listener names (`kubernetes://NAMESPACE/NAME`). For MUTUAL and OPTIONAL_MUTUAL
//! the client CA is the `<name>-cacert` Secret's `cacert`/`ca.crt` when that Secret exists,
//! else the credential's own (`kubernetes://NAMESPACE/NAME-cacert` either way, as Istio names
//! it); `caCertCredentialName` names the CA's Secret instead. A server whose Secret is missing,
//! or lacks those keys, is left out with a note, as Istio leaves out a server whose secret it
//! cannot fetch: nothing is served without its certificate, and the rest keeps serving.
//!
//! Files are the explicit alternative: `credentialName: file:///DIR` reads `DIR/tls.crt`,
//! `DIR/tls.key` and `DIR/ca.crt` (with `DIR-cacert/ca.crt` preferred when it exists), and the
//! mesh config's `credentialDir`, when set, is the directory of names no Secret has.
//!
//! `ISTIO_MUTUAL` HTTPS servers are mesh mTLS listeners (`meshTls` STRICT: the gateway's
//! workload certificate, clients with mesh certificates), when the gateway has a workload
//! certificate; otherwise they are left out with a note, so their port is not served by them
//! at all (never in plaintext, and never with a certificate Istio would not use).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::networking::VirtualService;
use weft_api::networking::gateway::{Protocol, Server, ServerTlsMode, ServerTlsSettings};
use weft_xds::proto;

use super::cluster::outbound_clusters;
use super::http::{
    RouteCx, hashed_clusters, http_routes, qualify_gateway, source_applies, weighted,
};
use super::names::{gateway_routes, virtual_host};
use super::scope::Scope;
use super::{Notes, ProxyResources};
use crate::host::{
    exported_to, intersection, more_specific_first, names_for_namespace, resolve_host,
};
use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::view::ConfigView;

/// One server of a Gateway that selects the proxy.
struct GatewayServer<'v> {
    resource: &'v Resource,
    /// `namespace/name` of the Gateway.
    gateway: String,
    index: usize,
    server: &'v Server,
    port: u32,
    kind: Kind,
    /// A terminating server's certificates (with their client verification), resolved.
    certificates: Vec<proto::Certificate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    /// HTTP over TLS the gateway terminates.
    Https,
    /// HTTP over mesh mTLS (ISTIO_MUTUAL): the gateway's workload certificate, clients with
    /// mesh certificates.
    MeshHttps,
    Passthrough,
    Tcp,
}

impl GatewayServer<'_> {
    fn at(&self) -> String {
        format!("spec.servers[{}]", self.index)
    }

    fn tls(&self) -> Option<&ServerTlsSettings> {
        self.server.tls.as_ref()
    }
}

/// The resources of the gateway `node`.
pub fn gateway(node: &ProxyNode, mesh: &MeshConfig, view: &ConfigView) -> ProxyResources {
    let mut notes = Notes::default();
    let scope = Scope::for_gateway(node, mesh, view);
    // Clusters first: a route's retries depend on whether its cluster hashes.
    let mut out = ProxyResources {
        clusters: outbound_clusters(&scope, node, mesh, view, &mut notes),
        ..Default::default()
    };
    let hashed = hashed_clusters(&out.clusters);

    let mut by_port: BTreeMap<u32, Vec<GatewayServer<'_>>> = BTreeMap::new();
    for (r, g) in view.gateways() {
        if !selector_matches(&g.selector, &node.labels) {
            continue;
        }
        for (index, server) in g.servers.iter().enumerate() {
            let Some(port) = &server.port else { continue };
            let at = format!("spec.servers[{index}]");
            let has_identity = super::sidecar::has_mesh_identity(&node.labels);
            let Some(kind) = server_kind(r, server, &at, has_identity, &mut notes) else {
                continue;
            };
            let mut certificates = Vec::new();
            if kind == Kind::Https {
                let Some(tls) = server.tls.as_ref() else {
                    continue;
                };
                let cx = CredentialCx {
                    namespace: &node.namespace,
                    mesh,
                    view,
                };
                match server_certificates(r, server, tls, &format!("{at}.tls"), &cx, &mut notes) {
                    Ok((certs, secrets)) => {
                        certificates = certs;
                        for s in secrets {
                            if !out.secrets.iter().any(|o| o.name == s.name) {
                                out.secrets.push(s);
                            }
                        }
                    }
                    Err((field, why)) => {
                        notes.add(Some(r), field, format!("{why}; the server is left out"));
                        continue;
                    }
                }
            }
            if !server.bind.is_empty() {
                notes.add(
                    Some(r),
                    format!("{at}.bind"),
                    "gateways listen on the proxy's address; bind is ignored",
                );
            }
            by_port.entry(port.number).or_default().push(GatewayServer {
                resource: r,
                gateway: format!("{}/{}", r.namespace(), r.name()),
                index,
                server,
                port: port.number,
                kind,
                certificates,
            });
        }
    }

    for (port, servers) in by_port {
        let Ok(listen) = u16::try_from(target_port(node, view, port)) else {
            continue;
        };
        // One listener per port: the first server decides what it is; HTTP and terminated
        // HTTPS cannot share a port (the listener either terminates TLS or not).
        let kind = servers[0].kind;
        let (servers, others): (Vec<_>, Vec<_>) = servers.into_iter().partition(|s| s.kind == kind);
        for s in others {
            notes.add(
                Some(s.resource),
                s.at(),
                format!("port {port} is already served as {kind:?} by another server; this {:?} server is left out", s.kind),
            );
        }
        let base = Base {
            node,
            scope: &scope,
            view,
            mesh,
            port,
            hashed: &hashed,
        };
        let protocol = match kind {
            Kind::Http | Kind::Https | Kind::MeshHttps => {
                out.route_configs
                    .push(http_route_config(&servers, &base, &mut notes));
                let tls = (kind == Kind::Https).then(|| proto::DownstreamTls {
                    certificates: servers
                        .iter()
                        .flat_map(|s| s.certificates.iter().cloned())
                        .collect(),
                });
                // ISTIO_MUTUAL: mesh mTLS, always required (STRICT).
                let mesh_tls = (kind == Kind::MeshHttps).then(proto::MeshTls::default);
                Some(proto::listener::Protocol::Http(proto::HttpListener {
                    route_config: gateway_routes(port),
                    tls,
                    mesh_tls,
                    path_normalization: mesh.path_normalization() as i32,
                    xff_num_trusted_hops: mesh.num_trusted_proxies(),
                    ..Default::default()
                }))
            }
            Kind::Passthrough => passthrough(&servers, &base, &mut notes)
                .map(proto::listener::Protocol::TlsPassthrough),
            Kind::Tcp => tcp(&servers, &base, &mut notes).map(proto::listener::Protocol::Tcp),
        };
        if let Some(protocol) = protocol {
            out.listeners.push(proto::Listener {
                name: format!("{}_{port}", node.ip),
                address: SocketAddr::new(node.ip, listen).to_string(),
                protocol: Some(protocol),
                ..Default::default()
            });
        }
    }
    let telemetry = super::telemetry::for_workload(view, mesh, &node.namespace, &node.labels);
    super::telemetry::apply_access_logs(
        &mut out.listeners,
        &telemetry,
        mesh,
        |_| super::telemetry::ListenerClass::Gateway,
        &mut notes,
    );
    // A gateway is the workload its policies select: every listener of it.
    let security = super::security::for_workload(node, mesh, view, &mut notes);
    super::security::apply(&mut out.listeners, &security);
    super::workload_meta::label_listeners(node, mesh, view, &mut out.listeners);
    super::telemetry::apply_metrics(&mut out.listeners, &telemetry, mesh, |_| {
        super::telemetry::ListenerClass::Gateway
    });
    let over = super::telemetry::tracing_override(
        &telemetry,
        mesh,
        super::telemetry::ListenerClass::Gateway,
    );
    super::trace_config::attach(node, mesh, view, over.as_ref(), &mut out.listeners);
    out.unsupported = notes.finish();
    out
}

/// Where the gateway listens for the servers of Gateway port `port`: as Istio's
/// `MergeGateways`, a Gateway port that is a port of a Service selecting the gateway (in its
/// namespace; the Kubernetes default `istio-ingressgateway` Service maps 80 to 8080 and 443 to
/// 8443) is served on that Service's target port; any other port as written.
pub(crate) fn target_port(node: &ProxyNode, view: &ConfigView, port: u32) -> u32 {
    view.endpoints_at(&node.ip.to_string())
        .filter(|(svc, _)| svc.namespace == node.namespace)
        .find_map(|(_, e)| e.ports.get(&port).copied())
        .unwrap_or(port)
}

/// What every server on one port shares.
struct Base<'a> {
    node: &'a ProxyNode,
    scope: &'a Scope<'a>,
    view: &'a ConfigView,
    mesh: &'a MeshConfig,
    port: u32,
    hashed: &'a HashSet<String>,
}

impl<'a> Base<'a> {
    fn server(&self, s: &GatewayServer<'_>) -> GatewayCx<'_> {
        GatewayCx {
            base: self,
            gateway: s.gateway.clone(),
        }
    }
}

/// Building for one server: the port's [`Base`] and the server's Gateway.
struct GatewayCx<'a> {
    base: &'a Base<'a>,
    /// `namespace/name`.
    gateway: String,
}

impl<'a> GatewayCx<'a> {
    fn route_cx(&self, tls: bool) -> RouteCx<'_> {
        RouteCx {
            node: self.base.node,
            port: self.base.port,
            gateway: &self.gateway,
            tls,
            scope: self.base.scope,
            view: self.base.view,
            mesh: self.base.mesh,
            hashed: self.base.hashed,
        }
    }

    /// VirtualServices bound to this Gateway and exported to the proxy's namespace: private
    /// ones first, then exported by name, then public (Istio's `VirtualServicesForGateway`).
    fn virtual_services(&self) -> Vec<(&'a Resource, &'a VirtualService)> {
        let mut ranked = Vec::new();
        for (r, vs) in self.base.view.virtual_services() {
            let bound = vs
                .gateways
                .iter()
                .any(|g| qualify_gateway(g, r.namespace()) == self.gateway);
            if !bound || vs.is_delegate() {
                continue;
            }
            let export = if vs.export_to.is_empty() {
                &self.base.mesh.default_virtual_service_export_to
            } else {
                &vs.export_to
            };
            if !exported_to(export, r.namespace(), self.base.scope.namespace) {
                continue;
            }
            let public = export.is_empty() || export.iter().any(|e| e == "*");
            let rank = match (public, r.namespace() == self.base.scope.namespace) {
                (true, _) => 2,
                (false, true) => 0,
                (false, false) => 1,
            };
            ranked.push((rank, r, vs));
        }
        ranked.sort_by_key(|(rank, ..)| *rank);
        ranked.into_iter().map(|(_, r, vs)| (r, vs)).collect()
    }
}

/// What a server is, or `None` (noted) when weft cannot serve it.
fn server_kind(
    r: &Resource,
    server: &Server,
    at: &str,
    has_identity: bool,
    notes: &mut Notes,
) -> Option<Kind> {
    let protocol = Protocol::parse(&server.port.as_ref()?.protocol)?;
    if protocol.is_http() {
        return Some(Kind::Http);
    }
    if !protocol.is_tls() {
        return if protocol.is_tcp() {
            Some(Kind::Tcp)
        } else {
            notes.add(
                Some(r),
                format!("{at}.port.protocol"),
                format!("{protocol:?} servers are not supported"),
            );
            None
        };
    }
    let mode = server.tls.as_ref().map(|t| t.mode).unwrap_or_default();
    let terminated = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    match (mode, protocol) {
        (ServerTlsMode::Passthrough, _) => Some(Kind::Passthrough),
        (_, Protocol::Https) if terminated => {
            // weft-api refuses these; a server left without them must not be served by the
            // listener's other certificates (its hosts would go unverified).
            let tls = server.tls.as_ref()?;
            let has_certificate = !tls.server_certificate.is_empty()
                || !tls.credential_name.is_empty()
                || !tls.credential_names.is_empty()
                || !tls.tls_certificates.is_empty();
            let has_client_ca = !tls.ca_certificates.is_empty()
                || !tls.credential_name.is_empty()
                || !tls.credential_names.is_empty();
            let missing = if !has_certificate {
                Some("no certificate: set credentialName or serverCertificate")
            } else if mode != ServerTlsMode::Simple && !has_client_ca {
                Some("no client CA: set credentialName or caCertificates")
            } else {
                None
            };
            match missing {
                Some(why) => {
                    notes.add(
                        Some(r),
                        format!("{at}.tls"),
                        format!("{why}; the server is left out"),
                    );
                    None
                }
                None => Some(Kind::Https),
            }
        }
        (_, _) if terminated => {
            notes.add(
                Some(r),
                format!("{at}.tls.mode"),
                "terminating TLS in front of TCP routes is not supported; use PASSTHROUGH or an HTTPS server",
            );
            None
        }
        (ServerTlsMode::IstioMutual, Protocol::Https) if has_identity => Some(Kind::MeshHttps),
        (ServerTlsMode::IstioMutual, _) => {
            let why = if has_identity {
                "ISTIO_MUTUAL is supported on HTTPS servers only"
            } else {
                "ISTIO_MUTUAL needs the gateway's workload certificate and it has none (its \
                 instance lacks the label security.istio.io/tlsMode: istio)"
            };
            notes.add(
                Some(r),
                format!("{at}.tls.mode"),
                format!(
                    "{why}; the server is left out, so its hosts are not served on this port \
                     (neither in plaintext nor with another server's certificate)"
                ),
            );
            None
        }
        (mode, _) => {
            notes.add(
                Some(r),
                format!("{at}.tls.mode"),
                format!("TLS mode {mode:?} is not supported yet; the server is left out"),
            );
            None
        }
    }
}

/// The route configuration `http.PORT` of the HTTP (or terminated HTTPS) servers on a port.
fn http_route_config(
    servers: &[GatewayServer<'_>],
    base: &Base<'_>,
    notes: &mut Notes,
) -> proto::RouteConfiguration {
    let port = servers[0].port;
    // host -> (routes, redirect to https)
    let mut hosts: BTreeMap<String, (Vec<proto::Route>, bool)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for s in servers {
        let gcx = base.server(s);
        let redirect = s.tls().is_some_and(|t| t.https_redirect);
        let gateway_ns = s.resource.namespace();
        for (r, vs) in gcx.virtual_services() {
            let server_hosts = names_for_namespace(&s.server.hosts, r.namespace(), gateway_ns);
            let vs_hosts: Vec<String> = vs
                .hosts
                .iter()
                .map(|h| resolve_host(h, r.namespace()))
                .collect();
            let common = intersection(&server_hosts, &vs_hosts);
            if common.is_empty() {
                continue;
            }
            let tls = matches!(s.kind, Kind::Https | Kind::MeshHttps);
            let routes = http_routes(&gcx.route_cx(tls), r, vs, notes);
            if routes.is_empty() {
                continue;
            }
            for host in common {
                let host = host.to_ascii_lowercase();
                let entry = hosts.entry(host.clone()).or_insert_with(|| {
                    order.push(host.clone());
                    (Vec::new(), false)
                });
                entry.0.extend(routes.iter().cloned());
                entry.1 |= redirect;
            }
        }
        if redirect {
            for h in &s.server.hosts {
                let host = h
                    .split_once('/')
                    .map_or(h.as_str(), |(_, h)| h)
                    .to_ascii_lowercase();
                hosts
                    .entry(host.clone())
                    .or_insert_with(|| {
                        order.push(host);
                        (Vec::new(), false)
                    })
                    .1 = true;
            }
        }
    }

    let mut virtual_hosts: Vec<proto::VirtualHost> = hosts
        .into_iter()
        .map(|(host, (routes, redirect))| {
            let routes = if redirect {
                // Istio's `httpsRedirect` (Envoy's require_tls): every request is redirected.
                vec![proto::Route {
                    name: "https_redirect".into(),
                    action: Some(proto::route::Action::Redirect(proto::Redirect {
                        scheme: "https".into(),
                        port: 443,
                        code: 301,
                        ..Default::default()
                    })),
                    ..Default::default()
                }]
            } else {
                sort_catch_all_last(routes)
            };
            proto::VirtualHost {
                name: virtual_host(&host, port),
                domains: vec![host],
                routes,
            }
        })
        .collect();
    virtual_hosts.sort_by(|a, b| more_specific_first(&a.domains[0], &b.domains[0]));
    if virtual_hosts.is_empty() {
        // No VirtualService binds: a virtual host without routes, so requests get 404 NR.
        virtual_hosts.push(proto::VirtualHost {
            name: virtual_host("blackhole", port),
            domains: vec!["*".into()],
            routes: Vec::new(),
        });
    }
    proto::RouteConfiguration {
        name: gateway_routes(port),
        virtual_hosts,
        ..Default::default()
    }
}

/// Routes that match everything move after the others (Istio's `SortVHostRoutes`), so that
/// one VirtualService's catch-all does not hide another's specific routes.
fn sort_catch_all_last(routes: Vec<proto::Route>) -> Vec<proto::Route> {
    let (all, specific): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| r.matches.is_empty());
    specific.into_iter().chain(all).collect()
}

/// Where a gateway reads credentials: its namespace's Secrets, then files.
struct CredentialCx<'a> {
    /// The gateway proxy's namespace (Istio's credentials are the gateway workload's).
    namespace: &'a str,
    mesh: &'a MeshConfig,
    view: &'a ConfigView,
}

/// Where one credential name is read from.
enum Source<'a> {
    /// A Secret in the gateway's namespace.
    Secret(&'a weft_api::kube::Secret),
    /// A directory of files (`file://DIR`, or `credentialDir/NAME`).
    Dir(String),
}

impl<'a> CredentialCx<'a> {
    /// The source of `name`, or why there is none.
    fn source(&self, name: &str) -> Result<Source<'a>, String> {
        if let Some(dir) = name.strip_prefix("file://") {
            return Ok(Source::Dir(dir.trim_end_matches('/').to_owned()));
        }
        if let Some((_, secret)) = self.view.secret(self.namespace, name) {
            return Ok(Source::Secret(secret));
        }
        if !self.mesh.credential_dir.is_empty() {
            return Ok(Source::Dir(format!("{}/{name}", self.mesh.credential_dir)));
        }
        Err(format!(
            "Secret {}/{name} not found (credentials are read from the gateway's namespace, {:?})",
            self.namespace, self.namespace
        ))
    }

    /// The xDS name of the Secret `name`'s credential (Istio's SDS name with the namespace).
    fn secret_name(&self, name: &str) -> String {
        format!("kubernetes://{}/{name}", self.namespace)
    }
}

/// What a terminating server serves: one certificate per credential (each with the server's
/// hosts as SNI names and its client verification) and the secrets they name. `Err` holds the
/// field and reason that leave the server out.
fn server_certificates(
    r: &Resource,
    server: &Server,
    tls: &ServerTlsSettings,
    at: &str,
    cx: &CredentialCx<'_>,
    notes: &mut Notes,
) -> Result<(Vec<proto::Certificate>, Vec<proto::Secret>), (String, String)> {
    let names: Vec<String> = server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_owned())
        .filter(|h| h != "*")
        .collect();
    let mut secrets = Vec::new();
    // (cert file, key file) or a secret name.
    let mut sources: Vec<proto::Certificate> = Vec::new();
    if !tls.server_certificate.is_empty() {
        sources.push(proto::Certificate {
            cert_file: tls.server_certificate.clone(),
            key_file: tls.private_key.clone(),
            ..Default::default()
        });
    }
    let credentials: Vec<(String, &String)> = if tls.credential_name.is_empty() {
        tls.credential_names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{at}.credentialNames[{i}]"), n))
            .collect()
    } else {
        vec![(format!("{at}.credentialName"), &tls.credential_name)]
    };
    for (field, name) in &credentials {
        match cx.source(name).map_err(|e| (field.clone(), e))? {
            Source::Dir(dir) => sources.push(proto::Certificate {
                cert_file: format!("{dir}/tls.crt"),
                key_file: format!("{dir}/tls.key"),
                ..Default::default()
            }),
            Source::Secret(secret) => {
                let (private_key, certificate_chain) = secret.key_and_cert().map_err(|e| {
                    (
                        field.clone(),
                        format!("Secret {}/{name} holds no certificate: {e}", cx.namespace),
                    )
                })?;
                let secret_name = cx.secret_name(name);
                secrets.push(proto::Secret {
                    name: secret_name.clone(),
                    r#type: Some(proto::secret::Type::TlsCertificate(proto::TlsCertificate {
                        certificate_chain,
                        private_key,
                    })),
                });
                sources.push(proto::Certificate {
                    secret: secret_name,
                    ..Default::default()
                });
            }
        }
    }
    sources.extend(tls.tls_certificates.iter().map(|c| proto::Certificate {
        cert_file: c.server_certificate.clone(),
        key_file: c.private_key.clone(),
        ..Default::default()
    }));
    note_unapplied(r, tls, at, notes);
    let mutual = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    let client_validation = if mutual {
        let credential = credentials.first().map(|(_, n)| n.as_str());
        let (v, ca_secret) = client_validation(tls, credential, cx, r, at, notes)?;
        secrets.extend(ca_secret);
        Some(v)
    } else {
        None
    };
    let certificates = sources
        .into_iter()
        .map(|c| proto::Certificate {
            server_names: names.clone(),
            client_validation: client_validation.clone(),
            ..c
        })
        .collect();
    Ok((certificates, secrets))
}

/// Notes the server's TLS fields weft does not apply.
fn note_unapplied(r: &Resource, tls: &ServerTlsSettings, at: &str, notes: &mut Notes) {
    let mutual = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    let unsupported: [(bool, &str, &str); 9] = [
        (
            tls.min_protocol_version != Default::default(),
            "minProtocolVersion",
            "TLS versions are the proxy's defaults (1.2, 1.3)",
        ),
        (
            tls.max_protocol_version != Default::default(),
            "maxProtocolVersion",
            "TLS versions are the proxy's defaults (1.2, 1.3)",
        ),
        (
            !tls.cipher_suites.is_empty(),
            "cipherSuites",
            "cipher suites are the proxy's defaults",
        ),
        (
            !tls.ecdh_curves.is_empty(),
            "ecdhCurves",
            "curves are the proxy's defaults",
        ),
        (
            !mutual && !tls.ca_crl.is_empty(),
            "caCrl",
            "SIMPLE does not request client certificates; only MUTUAL and OPTIONAL_MUTUAL \
             check revocation",
        ),
        (
            !mutual && !tls.subject_alt_names.is_empty(),
            "subjectAltNames",
            "SIMPLE does not request client certificates; only MUTUAL and OPTIONAL_MUTUAL \
             check their names",
        ),
        (
            !tls.verify_certificate_spki.is_empty(),
            "verifyCertificateSpki",
            "client certificates are not pinned by key hash; they are checked against the \
             CA and subjectAltNames only",
        ),
        (
            !tls.verify_certificate_hash.is_empty(),
            "verifyCertificateHash",
            "client certificates are not pinned by hash; they are checked against the CA \
             and subjectAltNames only",
        ),
        (
            mutual && tls.insecure_skip_verify == Some(true),
            "insecureSkipVerify",
            "not supported: client certificates are still verified, and a client whose \
             certificate fails is refused",
        ),
    ];
    for (set, field, reason) in unsupported {
        if set {
            notes.add(Some(r), format!("{at}.{field}"), reason);
        }
    }
}

/// How a MUTUAL or OPTIONAL_MUTUAL server verifies client certificates (Istio's
/// `BuildListenerTLSContext`), and the CA secret it names. With a credential (the first of
/// `credentialNames`): a `caCertCredentialName`'s CA, else the `<name>-cacert` Secret's when
/// it exists, else the credential's own (for file sources: the `-cacert` directory when the
/// file exists, which the proxy checks, else the credential's `ca.crt`). Without one:
/// `caCertificates` and `caCrl`. `subjectAltNames` as given. `Err` leaves the server out.
fn client_validation(
    tls: &ServerTlsSettings,
    credential: Option<&str>,
    cx: &CredentialCx<'_>,
    r: &Resource,
    at: &str,
    notes: &mut Notes,
) -> Result<(proto::ClientValidation, Option<proto::Secret>), (String, String)> {
    let mut v = proto::ClientValidation {
        subject_alt_names: tls.subject_alt_names.clone(),
        optional: tls.mode == ServerTlsMode::OptionalMutual,
        ..Default::default()
    };
    let Some(name) = credential else {
        v.crl_file.clone_from(&tls.ca_crl);
        if !tls.ca_cert_credential_name.is_empty() {
            notes.add(
                Some(r),
                format!("{at}.caCertCredentialName"),
                "ignored without a credentialName (as in Istio): the client CA is caCertificates",
            );
        }
        // `server_kind` left out servers without a CA source, so this is set.
        v.ca_file.clone_from(&tls.ca_certificates);
        return Ok((v, None));
    };
    if !tls.ca_crl.is_empty() {
        notes.add(
            Some(r),
            format!("{at}.caCrl"),
            "ignored with a credential (as in Istio): the CRL is the credential's ca.crl",
        );
    }
    if !tls.ca_certificates.is_empty() {
        notes.add(
            Some(r),
            format!("{at}.caCertificates"),
            "ignored: with a credentialName the client CA comes from the credential",
        );
    }
    let (field, ca_name, fallback) = if tls.ca_cert_credential_name.is_empty() {
        (
            format!("{at}.credentialName"),
            format!("{name}-cacert"),
            Some(name),
        )
    } else {
        (
            format!("{at}.caCertCredentialName"),
            tls.ca_cert_credential_name.clone(),
            None,
        )
    };
    // Istio's lookup: the CA's own Secret, else (for `-cacert`) the credential's.
    let secret = cx
        .view
        .secret(cx.namespace, &ca_name)
        .or_else(|| fallback.and_then(|n| cx.view.secret(cx.namespace, n)))
        .filter(|_| !ca_name.starts_with("file://"));
    if let Some((found, secret)) = secret {
        let trusted_ca = secret.ca_cert().map_err(|e| {
            (
                field.clone(),
                format!(
                    "no client CA: Secret {}/{}: {e}",
                    cx.namespace,
                    found.name()
                ),
            )
        })?;
        let crl = secret.ca_crl().ok().flatten().unwrap_or_default();
        let secret_name = cx.secret_name(&ca_name);
        v.ca_secret.clone_from(&secret_name);
        let ca = proto::Secret {
            name: secret_name,
            r#type: Some(proto::secret::Type::ValidationContext(
                proto::CertificateValidation { trusted_ca, crl },
            )),
        };
        return Ok((v, Some(ca)));
    }
    // Files: the credential's source decides where the CA files are.
    let dir_of = |n: &str| match cx.source(n) {
        Ok(Source::Dir(dir)) => Ok(dir),
        Ok(Source::Secret(_)) => Err(String::new()),
        Err(e) => Err(e),
    };
    match fallback {
        Some(n) => {
            let dir = dir_of(n).map_err(|e| (field.clone(), format!("no client CA: {e}")))?;
            v.ca_file = format!("{dir}/ca.crt");
            v.preferred_ca_file = format!("{dir}-cacert/ca.crt");
        }
        None => {
            let dir =
                dir_of(&ca_name).map_err(|e| (field.clone(), format!("no client CA: {e}")))?;
            v.ca_file = format!("{dir}/ca.crt");
        }
    }
    Ok((v, None))
}

/// SNI routes of the passthrough servers on a port, from the bound VirtualServices' `tls`
/// routes. `None` when nothing routes (Istio builds no listener then).
fn passthrough(
    servers: &[GatewayServer<'_>],
    base: &Base<'_>,
    notes: &mut Notes,
) -> Option<proto::TlsPassthroughListener> {
    let mut routes = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for s in servers {
        let gcx = base.server(s);
        let rcx = gcx.route_cx(false);
        for (r, vs) in gcx.virtual_services() {
            let server_hosts =
                names_for_namespace(&s.server.hosts, r.namespace(), s.resource.namespace());
            let vs_hosts: Vec<String> = vs
                .hosts
                .iter()
                .map(|h| resolve_host(h, r.namespace()))
                .collect();
            let common = intersection(&server_hosts, &vs_hosts);
            if common.is_empty() {
                continue;
            }
            for (i, tls) in vs.tls.iter().enumerate() {
                let mut names: Vec<String> = Vec::new();
                if tls.matches.is_empty() {
                    names.extend(common.iter().cloned());
                }
                for m in &tls.matches {
                    let applies = (m.port == 0 || m.port == s.port)
                        && source_applies(
                            &rcx,
                            &m.gateways,
                            &m.source_labels,
                            &m.source_namespace,
                            r.namespace(),
                        );
                    if applies {
                        names.extend(intersection(&m.sni_hosts, &common));
                    }
                }
                names.retain(|n| seen.insert(n.clone()));
                if names.is_empty() {
                    continue;
                }
                let clusters = weighted(&rcx, r, &tls.route);
                if clusters.len() > 1 {
                    notes.add(
                        Some(r),
                        format!("spec.tls[{i}].route"),
                        "weighted destinations on a passthrough route are not supported; the first one takes all traffic",
                    );
                }
                let Some(first) = clusters.into_iter().next() else {
                    continue;
                };
                routes.push(proto::SniRoute {
                    server_names: names,
                    cluster: first.cluster,
                });
            }
        }
    }
    (!routes.is_empty()).then_some(proto::TlsPassthroughListener { routes })
}

/// The destination of the TCP servers on a port: the first applicable `tcp` route of a bound
/// VirtualService whose hosts meet the server's.
fn tcp(
    servers: &[GatewayServer<'_>],
    base: &Base<'_>,
    notes: &mut Notes,
) -> Option<proto::TcpListener> {
    for s in servers {
        let gcx = base.server(s);
        let rcx = gcx.route_cx(false);
        for (r, vs) in gcx.virtual_services() {
            let server_hosts =
                names_for_namespace(&s.server.hosts, r.namespace(), s.resource.namespace());
            let vs_hosts: Vec<String> = vs
                .hosts
                .iter()
                .map(|h| resolve_host(h, r.namespace()))
                .collect();
            if intersection(&server_hosts, &vs_hosts).is_empty() {
                continue;
            }
            if let Some(clusters) = super::http::l4_destinations(&rcx, r, vs, None, notes) {
                if clusters.len() > 1 {
                    notes.add(
                        Some(r),
                        "spec.tcp",
                        "weighted destinations on a gateway TCP route are not supported; the first one takes all traffic",
                    );
                }
                if let Some(first) = clusters.into_iter().next() {
                    return Some(proto::TcpListener {
                        cluster: first.cluster,
                        mesh_tls: None,
                        ..Default::default()
                    });
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
