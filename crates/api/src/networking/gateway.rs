//! `Gateway` (networking.istio.io): the listeners of a standalone proxy at the edge of the mesh
//! (ingress or egress gateway), selected by workload labels. A VirtualService binds to a
//! Gateway to route what its servers accept.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: Gateway
//! metadata: {name: bookinfo-gateway}
//! spec:
//!   selector: {istio: ingressgateway}
//!   servers:
//!   - port: {number: 80, name: http, protocol: HTTP}
//!     hosts: ["*"]
//! ```
//!
//! This file also holds the small pieces the other networking kinds share with Gateway: port
//! protocols, port names and Unix domain socket addresses.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::validate::{Cx, Validate, rules};

/// The `spec` of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// The listeners. At least one is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads (pods/VMs) that get these servers. By default Istio
    /// searches all namespaces for them; an empty selector selects every gateway workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listener of a gateway: a port, the hosts it serves and its TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Where the gateway listens. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// The IP address (`x.x.x.x`) or Unix domain socket (`unix:///path`, `unix://@abstract`) the
    /// listener binds to; with a socket the port number must be 0. Empty binds all addresses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// The hosts this server exposes, as `[namespace/]dnsName`: the namespace part (`*`, `.`
    /// or a namespace; `*` when omitted) limits which namespaces' VirtualServices may bind, the
    /// DNS name may start with a `*.` wildcard or be `*`. At least one is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS termination or passthrough, and HTTP-to-HTTPS redirect. Required for HTTPS and TLS
    /// ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Where traffic is forwarded by default (`127.0.0.1:PORT` or `unix:///path`). Istio does
    /// not implement this for gateways; it is accepted and ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// An optional name, unique among the servers; used e.g. to prefix statistics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Istio's `Port`: a numbered, named port and the protocol it carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number; 0 only with a Unix domain socket `bind`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub number: u32,
    /// The protocol, case-insensitive: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, ...
    /// Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The port's label. Required, and unique among a Gateway's servers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated and meaningless for gateways (it only ever applied to ServiceEntry ports);
    /// Istio rejects it on a Gateway.
    #[serde(default, skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// TLS options of a server: how the proxy terminates (or passes through) TLS from clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer every plain HTTP request with a 301 redirect to HTTPS.
    #[serde(default, skip_serializing_if = "is_default")]
    pub https_redirect: bool,
    /// How TLS is handled; `PASSTHROUGH` when unset.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: ServerTlsMode,
    /// Path of the server certificate file (with `SIMPLE`/`MUTUAL`, unless a credential is named).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Path of the server's private key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path of the CA bundle that verifies client certificates (`MUTUAL`, `OPTIONAL_MUTUAL`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Path of a certificate revocation list checked against client certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// Name of the Kubernetes secret holding the certificate, key and optionally the client CA
    /// (`tls.crt`/`tls.key`/`ca.crt`, or `cert`/`key`/`cacert`). Replaces the file paths.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Like `credentialName`, for up to two certificates (e.g. one RSA and one ECDSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Secret or ConfigMap with the CA certificates for mutual TLS; takes precedence over the CA
    /// in the `credentialName` secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    /// Up to two certificate/key file pairs (e.g. RSA and ECDSA) instead of
    /// `serverCertificate`/`privateKey`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Accepted subject alternative names of client certificates (mutual TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Base64 SHA-256 hashes of the SPKI of accepted client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Hex SHA-256 hashes of accepted client certificates (plain or colon-separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version accepted; TLS 1.2 when unset (`TLS_AUTO`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_protocol_version: TlsProtocol,
    /// Highest TLS version accepted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_protocol_version: TlsProtocol,
    /// The only cipher suites offered (OpenSSL names); Envoy's defaults when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// The only ECDH curves offered (e.g. `X25519`, `P-256`); the proxy's defaults when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// Verify client certificates but let a connection through even when verification fails
    /// (Gateway API's `AllowInsecureFallback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// One server certificate and its key, as file paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}

/// How a server handles TLS from clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Do not terminate: route on the client's SNI with a VirtualService `tls` route.
    #[default]
    Passthrough,
    /// Terminate TLS with the server certificate; no client certificate is requested.
    Simple,
    /// Terminate TLS and require a client certificate verified against `caCertificates`.
    Mutual,
    /// Like `PASSTHROUGH`, but the destination is encoded in the SNI (Istio's multi-network
    /// east-west gateways); no VirtualService is needed.
    AutoPassthrough,
    /// Mutual TLS with Istio's own workload certificates; no certificate fields may be set.
    IstioMutual,
    /// Like `MUTUAL`, but a client certificate is only verified when presented.
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum TlsProtocol {
    /// Envoy's default.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// The protocols Istio knows for a port (istio/istio `pkg/config/protocol`). Names are
/// case-insensitive in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    /// A generic outbound HTTP proxy port (Sidecar egress listeners only).
    HttpProxy,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    MySql,
}

impl Protocol {
    const NAMES: &[(&str, Protocol)] = &[
        ("HTTP", Protocol::Http),
        ("HTTPS", Protocol::Https),
        ("HTTP2", Protocol::Http2),
        ("HTTP_PROXY", Protocol::HttpProxy),
        ("GRPC", Protocol::Grpc),
        ("GRPC-WEB", Protocol::GrpcWeb),
        ("TCP", Protocol::Tcp),
        ("TLS", Protocol::Tls),
        ("UDP", Protocol::Udp),
        ("MONGO", Protocol::Mongo),
        ("REDIS", Protocol::Redis),
        ("MYSQL", Protocol::MySql),
    ];

    /// The protocol named `name`, ignoring case; `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Protocol> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    /// Carried over HTTP (1.1 or 2): routed with VirtualService `http` routes.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// Carried over TLS (HTTPS, TLS): needs TLS settings on a gateway server.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Proxied as opaque TCP (or TLS on TCP).
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::MySql
        )
    }
}

/// Istio's `ValidateProtocol`: empty (the proxy sniffs the protocol) or a known protocol.
pub fn protocol(name: &str) -> Result<Option<Protocol>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Some(p) = Protocol::parse(name) {
        return Ok(Some(p));
    }
    let names = Protocol::NAMES.iter().map(|(n, _)| *n);
    let hint = crate::suggest::did_you_mean(name, names.clone())
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default();
    let all: Vec<&str> = names.collect();
    Err(format!(
        "unsupported protocol {name:?}{hint} (supported, case-insensitive: {})",
        all.join(", ")
    ))
}

/// Istio's DNS label check (`labels.IsDNS1123Label`), used for port and subset names. Unlike
/// Kubernetes' it accepts upper case.
pub fn is_istio_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Istio's `ValidatePortName`: a DNS label (upper case allowed).
pub fn port_name(name: &str) -> Result<(), String> {
    if is_istio_label(name) {
        Ok(())
    } else if name.is_empty() {
        Err("port name is required".into())
    } else {
        Err(format!(
            "invalid port name {name:?}: at most 63 alphanumerics and '-', starting and ending \
             with an alphanumeric"
        ))
    }
}

/// The prefix of a Unix domain socket address (`unix:///var/run/app.sock`, `unix://@abstract`).
pub const UNIX_PREFIX: &str = "unix://";

/// Istio's `ValidateUnixAddress`, for the part after `unix://`: an absolute file path, or an
/// abstract socket name starting with `@`.
pub fn unix_address(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("unix domain socket address must not be empty".into());
    }
    if path.starts_with('@') {
        return Ok(());
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "unix domain socket {path:?} must be an absolute path to a file (or `@name` for an \
             abstract socket)"
        ));
    }
    Ok(())
}

/// For `skip_serializing_if`: proto3 scalars at their zero value are left out.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Validate for Gateway {
    fn validate(&self, cx: &mut Cx) {
        if self.servers.is_empty() {
            cx.error_at("servers", "a Gateway must have at least one server");
        }
        cx.field("selector", |cx| rules::labels(cx, &self.selector));

        let mut port_names = BTreeSet::new();
        let mut server_names = BTreeSet::new();
        cx.field("servers", |cx| {
            for (i, server) in self.servers.iter().enumerate() {
                cx.index(i, |cx| {
                    server.validate(cx);
                    if let Some(port) = &server.port
                        && !port.name.is_empty()
                        && !port_names.insert(port.name.as_str())
                    {
                        cx.error_at(
                            "port",
                            format!(
                                "port names in servers must be unique: {:?} is used twice",
                                port.name
                            ),
                        );
                    }
                    if !server.name.is_empty() && !server_names.insert(server.name.as_str()) {
                        cx.error_at(
                            "name",
                            format!(
                                "server names must be unique: {:?} is used twice",
                                server.name
                            ),
                        );
                    }
                });
            }
        });
    }
}

impl Validate for Server {
    fn validate(&self, cx: &mut Cx) {
        if self.hosts.is_empty() {
            cx.error_at("hosts", "a server must have at least one host");
        }
        cx.field("hosts", |cx| {
            for (i, host) in self.hosts.iter().enumerate() {
                cx.index(i, |cx| cx.check(rules::namespaced_host(host, true)));
            }
        });

        let unix_bind = self.bind.strip_prefix(UNIX_PREFIX);
        match unix_bind {
            Some(path) => cx.check_at("bind", unix_address(path)),
            None if !self.bind.is_empty() => cx.check_at("bind", rules::ip(&self.bind)),
            None => {}
        }

        let Some(port) = &self.port else {
            cx.error_at("port", "port is required");
            cx.opt("tls", &self.tls, |cx, tls| tls.validate(cx));
            return;
        };
        let proto = cx.field("port", |cx| {
            if port.number > 0 || unix_bind.is_none() {
                cx.check_at("number", rules::port(port.number));
            }
            if unix_bind.is_some() && port.number != 0 {
                cx.error_at(
                    "number",
                    "port number must be 0 when the server binds a unix domain socket",
                );
            }
            if port.target_port > 0 {
                cx.error_at(
                    "targetPort",
                    "targetPort has no effect on a Gateway; remove it",
                );
            }
            if port.name.is_empty() {
                cx.error_at("name", "port name is required");
            }
            if port.protocol.is_empty() {
                cx.error_at("protocol", "protocol is required");
                return None;
            }
            match protocol(&port.protocol) {
                Ok(p) => p,
                Err(e) => {
                    cx.error_at("protocol", e);
                    None
                }
            }
        });

        if let Some(tls) = &self.tls {
            cx.field("tls", |cx| {
                tls.validate(cx);
                if tls.https_redirect && proto.is_some_and(|p| !p.is_http()) {
                    cx.field("httpsRedirect", |cx| {
                        cx.warn("httpsRedirect only applies to plain HTTP servers")
                    });
                }
            });
        }
        let Some(proto) = proto else { return };
        match &self.tls {
            None if proto.is_tls() => cx.error_at(
                "tls",
                format!(
                    "a server with protocol {} must have TLS settings",
                    port.protocol
                ),
            ),
            Some(tls) if !proto.is_tls() => {
                // A plain HTTP server may carry only the redirect (its mode stays PASSTHROUGH).
                let passthrough = matches!(
                    tls.mode,
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                let has_certs = !tls.ca_certificates.is_empty()
                    || !tls.private_key.is_empty()
                    || !tls.server_certificate.is_empty();
                if !proto.is_http() {
                    cx.error_at(
                        "tls",
                        format!(
                            "a server with protocol {} cannot have TLS settings; use HTTPS or TLS",
                            port.protocol
                        ),
                    );
                } else if !passthrough || has_certs {
                    cx.error_at(
                        "tls",
                        "a plain-text HTTP server cannot have TLS settings other than \
                         httpsRedirect; use protocol HTTPS to terminate TLS",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Cipher suites Envoy (BoringSSL) accepts in `cipherSuites`.
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(cs: &str) -> bool {
    // Like Istio, anything starting with an operator (`-`, `+`, `!`, `[`) is passed through:
    // cipher expressions are not parsed.
    cs.is_empty()
        || cs == "ALL"
        || !cs.starts_with(|c: char| c.is_alphanumeric())
        || CIPHER_SUITES.contains(&cs)
}

impl Validate for ServerTlsSettings {
    fn validate(&self, cx: &mut Cx) {
        use ServerTlsMode::*;

        if matches!(
            self.min_protocol_version,
            TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1
        ) && self.cipher_suites.is_empty()
        {
            cx.field("minProtocolVersion", |cx| {
                cx.warn(
                    "TLS versions below TLSV1_2 need `cipherSuites` set to compatible ciphers: \
                     the default list no longer includes any",
                )
            });
        }
        if self.min_protocol_version != TlsProtocol::TlsAuto
            && self.max_protocol_version != TlsProtocol::TlsAuto
            && self.min_protocol_version > self.max_protocol_version
        {
            cx.error_at(
                "maxProtocolVersion",
                "maxProtocolVersion must not be lower than minProtocolVersion",
            );
        }
        let mut seen = BTreeSet::new();
        cx.field("cipherSuites", |cx| {
            for (i, cs) in self.cipher_suites.iter().enumerate() {
                cx.index(i, |cx| {
                    if !is_valid_cipher_suite(cs) {
                        let hint = crate::suggest::did_you_mean(cs, CIPHER_SUITES.iter().copied())
                            .map(|s| format!("; did you mean {s:?}?"))
                            .unwrap_or_default();
                        cx.warn(format!("unknown cipher suite {cs:?} will be ignored{hint}"));
                    } else if !seen.insert(cs.as_str()) {
                        cx.warn(format!("duplicate cipher suite {cs:?} will be ignored"));
                    }
                });
            }
        });
        if self.credential_names.len() > 2 {
            cx.error_at("credentialNames", "at most 2 credentialNames may be set");
        }
        if self.tls_certificates.len() > 2 {
            cx.error_at("tlsCertificates", "at most 2 tlsCertificates may be set");
        }

        if self.mode == IstioMutual {
            // Istio's own certificates are used; any configured certificate would be ignored.
            let set = [
                ("serverCertificate", !self.server_certificate.is_empty()),
                ("privateKey", !self.private_key.is_empty()),
                ("caCertificates", !self.ca_certificates.is_empty()),
                ("tlsCertificates", !self.tls_certificates.is_empty()),
                ("credentialName", !self.credential_name.is_empty()),
                ("credentialNames", !self.credential_names.is_empty()),
            ];
            for (field, is_set) in set {
                if is_set {
                    cx.error_at(
                        field,
                        format!("ISTIO_MUTUAL uses Istio's certificates: {field} must not be set"),
                    );
                }
            }
            return;
        }

        if matches!(self.mode, Passthrough | AutoPassthrough) {
            let set: Vec<&str> = [
                ("caCrl", !self.ca_crl.is_empty()),
                ("serverCertificate", !self.server_certificate.is_empty()),
                ("privateKey", !self.private_key.is_empty()),
                ("caCertificates", !self.ca_certificates.is_empty()),
                ("tlsCertificates", !self.tls_certificates.is_empty()),
                ("credentialName", !self.credential_name.is_empty()),
                ("credentialNames", !self.credential_names.is_empty()),
            ]
            .into_iter()
            .filter_map(|(f, is_set)| is_set.then_some(f))
            .collect();
            if !set.is_empty() {
                let mode = if self.mode == Passthrough {
                    "PASSTHROUGH"
                } else {
                    "AUTO_PASSTHROUGH"
                };
                cx.warn(format!(
                    "{mode} does not terminate TLS, so {} will be ignored",
                    set.join(", ")
                ));
            }
        }

        let sources = [
            !self.server_certificate.is_empty() && !self.private_key.is_empty(),
            !self.credential_name.is_empty(),
            !self.credential_names.is_empty(),
            !self.tls_certificates.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            cx.error(
                "only one certificate source may be set: credentialName, credentialNames, \
                 serverCertificate/privateKey, or tlsCertificates",
            );
        }

        let terminates = matches!(self.mode, Simple | Mutual | OptionalMutual);
        let named_credential =
            !self.credential_name.is_empty() || !self.credential_names.is_empty();
        if terminates && named_credential {
            // The certificates (and the client CA) come from the named secret.
            return;
        }
        if terminates {
            let what = if self.mode == Simple {
                "SIMPLE TLS"
            } else {
                "MUTUAL TLS"
            };
            if self.mode != Simple && self.ca_certificates.is_empty() {
                cx.error_at(
                    "caCertificates",
                    format!(
                        "{what} requires a client CA bundle (caCertificates) or a credentialName"
                    ),
                );
            }
            if self.tls_certificates.is_empty() {
                check_cert_pair(cx, what, &self.server_certificate, &self.private_key);
            } else {
                cx.each("tlsCertificates", &self.tls_certificates, |cx, c| {
                    check_cert_pair(cx, what, &c.server_certificate, &c.private_key)
                });
            }
        }
        if !self.ca_crl.is_empty() {
            if !self.credential_name.is_empty() {
                cx.error_at(
                    "caCrl",
                    "caCrl cannot be used with credentialName; put the CRL in the credential",
                );
            }
            if self.mode == Simple {
                cx.error_at(
                    "caCrl",
                    "caCrl needs client certificates; it is not supported with SIMPLE TLS",
                );
            }
        }
    }
}

fn check_cert_pair(cx: &mut Cx, what: &str, cert: &str, key: &str) {
    if cert.is_empty() {
        cx.error_at(
            "serverCertificate",
            format!("{what} requires a server certificate (serverCertificate) or a credentialName"),
        );
    }
    if key.is_empty() {
        cx.error_at(
            "privateKey",
            format!("{what} requires a private key (privateKey) or a credentialName"),
        );
    }
}

#[cfg(test)]
mod tests;
