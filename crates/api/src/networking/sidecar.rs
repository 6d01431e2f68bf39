//! `Sidecar` (networking.istio.io): narrows what a workload's sidecar proxy listens on and which
//! services it can reach. Without one, every sidecar gets every service in the mesh.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: Sidecar
//! metadata: {name: default, namespace: bookinfo}
//! spec:
//!   egress:
//!   - hosts: ["./*", "istio-system/*"]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::networking::destination_rule::ConnectionPoolSettings;
use crate::networking::gateway::{
    Protocol, ServerTlsMode, ServerTlsSettings, UNIX_PREFIX, is_default, is_istio_label, port_name,
    protocol, unix_address,
};
use crate::networking::virtual_service::Destination;
use crate::validate::{Cx, Validate, rules};

/// The `spec` of a Sidecar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// The workloads (in the Sidecar's namespace) this applies to; without it, every workload in
    /// the namespace (or in the mesh, for the root namespace's Sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners. When empty, Istio derives them from the workload's services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they can reach. When empty, the namespace's (or the
    /// mesh's) default Sidecar applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Limits on inbound connections for all ingress listeners; a listener's own
    /// `connectionPool` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What happens to traffic for destinations outside the service registry; the mesh's
    /// setting (`ALLOW_ANY` by default) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// The networking API's `WorkloadSelector` (Sidecar, ServiceEntry): workloads by `labels`.
/// Unlike [`crate::common::WorkloadSelector`], the map is called `labels`, not `matchLabels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An inbound listener of the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// The port traffic arrives on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// The IP the listener binds to (no Unix sockets for ingress); derived when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "is_default")]
    pub capture_mode: CaptureMode,
    /// Where the application listens: `127.0.0.1:PORT`, `[::1]:PORT` (loopback), `0.0.0.0:PORT`,
    /// `[::]:PORT` (the instance IP), or `unix:///path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// Terminate TLS from clients outside the mesh (SIMPLE or MUTUAL, file-based certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Limits on inbound connections for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener of the sidecar and the hosts reachable through it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// The listener's port (0 with a Unix socket `bind`). Without one, the listener covers every
    /// port of its hosts; at most one such listener, and it must be the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP or `unix://` socket to bind; needs `port`. Derived when empty (127.0.0.1 with capture
    /// mode `NONE`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// How traffic reaches the listener (IP binds only; `DEFAULT` or `NONE` for sockets).
    #[serde(default, skip_serializing_if = "is_default")]
    pub capture_mode: CaptureMode,
    /// Reachable services, as `namespace/dnsName`. The namespace is `*` (any), `.` (the
    /// Sidecar's), a name, or `~`-prefixed to exclude; the DNS name is an FQDN, `*.suffix` or
    /// `*`. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// The port of a sidecar listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(default, skip_serializing_if = "is_default")]
    pub number: u32,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ... (case-insensitive); sniffed when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Optional label; a DNS label when set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated and without effect; Istio rejects it on a Sidecar.
    #[serde(default, skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// How traffic to a listener is captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Whatever the environment does (usually iptables).
    #[default]
    Default,
    /// Redirect with iptables.
    Iptables,
    /// No capture: the application talks to the listener directly.
    None,
}

/// The sidecar's handling of traffic to unknown destinations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` when the policy is present without a mode.
    #[serde(default)]
    pub mode: OutboundTrafficPolicyMode,
    /// Forward unknown traffic to this proxy instead of the original destination (`ALLOW_ANY`
    /// only; the host must also be imported by an egress listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    /// Drop traffic to destinations not in the service registry.
    #[default]
    RegistryOnly,
    /// Pass traffic to unknown destinations through.
    AllowAny,
}

impl Validate for WorkloadSelector {
    fn validate(&self, cx: &mut Cx) {
        cx.field("labels", |cx| {
            for (k, v) in &self.labels {
                cx.key(k, |cx| {
                    if k.contains('*') || v.contains('*') {
                        cx.error("wildcards are not supported in a workload selector");
                    } else {
                        cx.check(rules::label_key(k));
                        cx.check(rules::label_value(v));
                    }
                });
            }
        });
    }
}

impl WorkloadSelector {
    /// Validates the selector at `.workloadSelector`, warning when it has no labels.
    pub(crate) fn check(selector: &Option<WorkloadSelector>, cx: &mut Cx, kind: &str) {
        cx.opt("workloadSelector", selector, |cx, s| {
            s.validate(cx);
            if s.labels.is_empty() {
                cx.warn(format!(
                    "workloadSelector has no labels, so the {kind} applies to every workload \
                     in the namespace"
                ));
            }
        });
    }
}

impl Validate for Sidecar {
    fn validate(&self, cx: &mut Cx) {
        WorkloadSelector::check(&self.workload_selector, cx, "Sidecar");
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            cx.error(
                "a Sidecar must set at least one of ingress, egress, outboundTrafficPolicy or \
                 inboundConnectionPool",
            );
        }

        let mut ports = BTreeSet::new();
        cx.field("ingress", |cx| {
            for (i, listener) in self.ingress.iter().enumerate() {
                cx.index(i, |cx| {
                    listener.validate(cx);
                    if let Some(port) = &listener.port
                        && !ports.insert(port.number)
                    {
                        cx.field("port", |cx| {
                            cx.error_at(
                                "number",
                                format!("port {} is used by another ingress listener", port.number),
                            )
                        });
                    }
                });
            }
        });
        cx.opt(
            "inboundConnectionPool",
            &self.inbound_connection_pool,
            |cx, p| p.validate(cx),
        );

        let mut ports = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        let mut portless = 0;
        let last = self.egress.len().saturating_sub(1);
        cx.field("egress", |cx| {
            for (i, listener) in self.egress.iter().enumerate() {
                cx.index(i, |cx| {
                    match &listener.port {
                        None => {
                            portless += 1;
                            if portless > 1 {
                                cx.error("only one egress listener may omit port");
                            } else if i != last {
                                cx.error("the egress listener without port must be the last one");
                            }
                        }
                        Some(port) if port.number == 0 => {
                            if !sockets.insert(listener.bind.as_str()) {
                                cx.error_at(
                                    "bind",
                                    "unix domain socket binds of egress listeners must be unique",
                                );
                            }
                        }
                        Some(port) => {
                            if !ports.insert(port.number) {
                                cx.field("port", |cx| {
                                    cx.error_at(
                                        "number",
                                        format!(
                                            "port {} is used by another egress listener",
                                            port.number
                                        ),
                                    )
                                });
                            }
                        }
                    }
                    listener.validate(cx);
                });
            }
        });

        cx.opt(
            "outboundTrafficPolicy",
            &self.outbound_traffic_policy,
            |cx, p| p.validate(cx),
        );
    }
}

/// The checks shared by ingress and egress ports.
fn check_port(cx: &mut Cx, port: &SidecarPort) -> Option<Protocol> {
    cx.field("port", |cx| {
        if port.target_port > 0 {
            cx.error_at(
                "targetPort",
                "targetPort has no effect on a Sidecar; remove it",
            );
        }
        if !port.name.is_empty() {
            cx.check_at("name", port_name(&port.name));
        }
        match protocol(&port.protocol) {
            Ok(p) => p,
            Err(e) => {
                cx.error_at("protocol", e);
                None
            }
        }
    })
}

impl Validate for IstioIngressListener {
    fn validate(&self, cx: &mut Cx) {
        let Some(port) = &self.port else {
            cx.error_at("port", "port is required for ingress listeners");
            return;
        };
        let proto = check_port(cx, port);
        cx.field("port", |cx| cx.check_at("number", rules::port(port.number)));
        if !self.bind.is_empty() {
            cx.check_at("bind", rules::ip(&self.bind));
        }
        if !self.default_endpoint.is_empty() {
            cx.check_at("defaultEndpoint", default_endpoint(&self.default_endpoint));
        }

        cx.opt("tls", &self.tls, |cx, tls| {
            let unsupported = [
                ("subjectAltNames", !tls.subject_alt_names.is_empty()),
                ("httpsRedirect", tls.https_redirect),
                ("credentialName", !tls.credential_name.is_empty()),
                ("credentialNames", !tls.credential_names.is_empty()),
                ("tlsCertificates", !tls.tls_certificates.is_empty()),
            ];
            for (field, set) in unsupported {
                if set {
                    cx.error_at(
                        field,
                        format!("{field} is not supported in sidecar ingress TLS"),
                    );
                }
            }
            if matches!(
                tls.mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                cx.error_at(
                    "mode",
                    "sidecar ingress TLS supports SIMPLE and MUTUAL, not ISTIO_MUTUAL or \
                     AUTO_PASSTHROUGH",
                );
            }
            if !proto.is_some_and(Protocol::is_tls) {
                cx.error("TLS settings need an HTTPS or TLS port protocol");
            }
            tls.validate(cx);
        });

        cx.opt("connectionPool", &self.connection_pool, |cx, pool| {
            pool.validate(cx);
            if pool.http.is_some() && proto.is_some_and(|p| !p.is_http()) {
                cx.field("http", |cx| {
                    cx.warn(format!(
                        "port {} has protocol {}, not HTTP: only the tcp settings apply",
                        port.number, port.protocol
                    ))
                });
            }
        });
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix:///path`.
fn default_endpoint(ep: &str) -> Result<(), String> {
    if let Some(path) = ep.strip_prefix(UNIX_PREFIX) {
        return unix_address(path);
    }
    let bad = || {
        format!(
            "defaultEndpoint {ep:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT \
             or unix:///path"
        )
    };
    let (host, port) = match ep.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").ok_or_else(bad)?,
        None => match ep.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return Err(bad()),
        },
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        return Err(bad());
    }
    let number: u32 = port
        .parse()
        .map_err(|_| format!("defaultEndpoint port {port:?} is not a number"))?;
    rules::port(number)
}

impl Validate for IstioEgressListener {
    fn validate(&self, cx: &mut Cx) {
        if let Some(port) = &self.port {
            check_port(cx, port);
            match self.bind.strip_prefix(UNIX_PREFIX) {
                _ if port.number != 0 => {
                    cx.field("port", |cx| cx.check_at("number", rules::port(port.number)));
                    if !self.bind.is_empty() {
                        cx.check_at("bind", rules::ip(&self.bind));
                    }
                }
                Some(path) => {
                    cx.check_at("bind", unix_address(path));
                    if !matches!(self.capture_mode, CaptureMode::Default | CaptureMode::None) {
                        cx.error_at(
                            "captureMode",
                            "captureMode must be DEFAULT or NONE for a unix domain socket listener",
                        );
                    }
                }
                None => cx.error_at(
                    "bind",
                    "a listener with port number 0 must bind a unix domain socket (unix:///path)",
                ),
            }
        }

        if self.hosts.is_empty() {
            cx.error_at("hosts", "an egress listener must have at least one host");
        }
        // namespace -> hosts already imported from it, to flag repeats.
        let mut imported: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        cx.field("hosts", |cx| {
            for (i, host) in self.hosts.iter().enumerate() {
                cx.index(i, |cx| {
                    cx.check(rules::namespaced_host(host, false));
                    let Some((ns, name)) = host.split_once('/') else {
                        return;
                    };
                    if ns.starts_with('~') {
                        return;
                    }
                    let names = imported.entry(ns).or_default();
                    let repeated = if name == "*" {
                        !names.is_empty()
                    } else {
                        names.contains(name) || names.contains("*")
                    };
                    if repeated {
                        cx.warn(format!(
                            "{host:?} repeats hosts already imported by this listener"
                        ));
                    }
                    names.insert(name);
                });
            }
            if imported.get("*").is_some_and(|n| n.contains("*")) && imported.len() > 1 {
                cx.warn("`*/*` already imports every host; the other entries have no effect");
            }
        });
    }
}

impl Validate for OutboundTrafficPolicy {
    fn validate(&self, cx: &mut Cx) {
        let Some(proxy) = &self.egress_proxy else {
            return;
        };
        cx.field("egressProxy", |cx| {
            // Istio deprecated the field and its proxies ignore it; weft's too.
            cx.warn_code(
                crate::diag::code::DEPRECATED,
                "`egressProxy` is deprecated and ignored (as by Istio's proxies); route unknown hosts through an egress gateway with a ServiceEntry and VirtualService instead",
            );
            if self.mode != OutboundTrafficPolicyMode::AllowAny {
                cx.error("egressProxy can only be set with mode ALLOW_ANY");
                return;
            }
            if proxy.host == "*" {
                cx.error_at("host", "egressProxy host cannot be `*`");
            } else {
                cx.check_at("host", rules::fqdn(&proxy.host));
            }
            if !proxy.subset.is_empty() && !is_istio_label(&proxy.subset) {
                cx.error_at("subset", format!("invalid subset name {:?}", proxy.subset));
            }
            match &proxy.port {
                None => cx.error_at("port", "egressProxy port is required"),
                Some(port) => {
                    cx.field("port", |cx| cx.check_at("number", rules::port(port.number)))
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, warnings};

    fn parse(yaml: &str) -> Sidecar {
        crate::validate::test_support::parse(yaml)
    }

    use crate::validate::test_support::Cases;

    fn check(
        cases: crate::validate::test_support::Cases<'_>,
        findings: fn(&Sidecar) -> Vec<(String, String)>,
    ) {
        crate::validate::test_support::check_cases(cases, findings);
    }

    #[test]
    fn valid_examples() {
        let cases = [
            // The namespace default from Istio's docs: own namespace plus the control plane.
            "egress:\n- hosts:\n  - \"./*\"\n  - \"istio-system/*\"\n",
            // Per-workload ingress with a loopback endpoint and a Unix-socket egress listener.
            r#"
workloadSelector:
  labels: {app: ratings}
ingress:
- port: {number: 9080, protocol: HTTP, name: somename}
  defaultEndpoint: unix:///var/run/someuds.sock
- port: {number: 9081, protocol: HTTP}
  defaultEndpoint: 127.0.0.1:8080
  connectionPool: {http: {http1MaxPendingRequests: 100}}
egress:
- port: {number: 9080, protocol: HTTP, name: egresshttp}
  hosts: ["prod-us1/*"]
- port: {number: 0, protocol: HTTP}
  bind: unix:///var/run/app.sock
  captureMode: NONE
  hosts: ["*/*"]
- hosts: ["istio-system/*", "~prod-us2/*", "*/*.example.com"]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
            // TLS termination at the sidecar.
            r#"
workloadSelector: {labels: {app: httpbin}}
ingress:
- port: {number: 9080, protocol: HTTPS, name: external}
  defaultEndpoint: "[::1]:8080"
  tls:
    mode: SIMPLE
    privateKey: /etc/istio/tls-certs/tls.key
    serverCertificate: /etc/istio/tls-certs/tls.crt
egress:
- port: {number: 3306, protocol: MYSQL, name: mysql}
  bind: 127.0.0.1
  captureMode: NONE
  hosts: ["*/mysql.foo.com"]
"#,
            "inboundConnectionPool: {http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024}}",
            "outboundTrafficPolicy: {mode: ALLOW_ANY}",
            r#"
egress:
- hosts: ["./*", "istio-system/*", "egress/egress.example.com"]
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy: {host: egress.example.com, subset: v1, port: {number: 443}}
"#,
        ];
        for yaml in cases {
            let spec = parse(yaml);
            assert_eq!(errors(&spec), [], "{yaml}");
            let warned = warnings(&spec);
            // egressProxy is valid but deprecated (Istio's proxies ignore it).
            if yaml.contains("egressProxy") {
                assert_eq!(warned.len(), 1, "{warned:?}");
                assert_eq!(warned[0].0, "spec.outboundTrafficPolicy.egressProxy");
                assert!(warned[0].1.contains("deprecated"), "{warned:?}");
            } else {
                assert_eq!(warned, [], "{yaml}");
            }
        }
    }

    #[test]
    fn invalid_examples() {
        let cases: Cases<'_> = &[
            (
                "workloadSelector: {labels: {app: a}}",
                &[("spec", "at least one of ingress")],
            ),
            (
                "workloadSelector: {labels: {app: 'a*'}}\negress: [{hosts: ['./*']}]",
                &[("spec.workloadSelector.labels[app]", "wildcards")],
            ),
            (
                "ingress: [{bind: 1.2.3.4}]",
                &[("spec.ingress[0].port", "port is required")],
            ),
            (
                "ingress:\n- port: {number: 0, protocol: HTPP, name: -x, targetPort: 80}\n  bind: 'unix:///a'",
                &[
                    ("spec.ingress[0].port.targetPort", "no effect on a Sidecar"),
                    ("spec.ingress[0].port.name", "invalid port name"),
                    ("spec.ingress[0].port.protocol", "did you mean \"HTTP\""),
                    ("spec.ingress[0].port.number", "1..65535"),
                    ("spec.ingress[0].bind", "not a valid IP"),
                ],
            ),
            (
                "ingress:\n- port: {number: 80, protocol: HTTP}\n- port: {number: 80, protocol: TCP}",
                &[(
                    "spec.ingress[1].port.number",
                    "used by another ingress listener",
                )],
            ),
            (
                "ingress:\n- port: {number: 80}\n  defaultEndpoint: 10.0.0.1:80\n- port: {number: 81}\n  defaultEndpoint: 127.0.0.1:http\n- port: {number: 82}\n  defaultEndpoint: 127.0.0.1:0\n- port: {number: 83}\n  defaultEndpoint: unix://sock",
                &[
                    ("spec.ingress[0].defaultEndpoint", "must be 127.0.0.1:PORT"),
                    ("spec.ingress[1].defaultEndpoint", "not a number"),
                    ("spec.ingress[2].defaultEndpoint", "1..65535"),
                    ("spec.ingress[3].defaultEndpoint", "absolute path"),
                ],
            ),
            (
                "ingress:\n- port: {number: 80, protocol: HTTP}\n  tls: {mode: ISTIO_MUTUAL, httpsRedirect: true, credentialName: c, subjectAltNames: [a]}",
                &[
                    ("spec.ingress[0].tls.subjectAltNames", "not supported"),
                    ("spec.ingress[0].tls.httpsRedirect", "not supported"),
                    ("spec.ingress[0].tls.credentialName", "not supported"),
                    ("spec.ingress[0].tls.mode", "SIMPLE and MUTUAL"),
                    ("spec.ingress[0].tls", "HTTPS or TLS port"),
                    ("spec.ingress[0].tls.credentialName", "must not be set"),
                ],
            ),
            (
                "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {mode: SIMPLE}",
                &[
                    (
                        "spec.ingress[0].tls.serverCertificate",
                        "server certificate",
                    ),
                    ("spec.ingress[0].tls.privateKey", "private key"),
                ],
            ),
            (
                "inboundConnectionPool: {tcp: {maxConnections: -5}}",
                &[("spec.inboundConnectionPool.tcp.maxConnections", "negative")],
            ),
            (
                "egress:\n- hosts: ['./*']\n- port: {number: 80, protocol: HTTP}\n  hosts: []",
                &[
                    ("spec.egress[0]", "must be the last"),
                    ("spec.egress[1].hosts", "at least one host"),
                ],
            ),
            (
                "egress:\n- port: {number: 80}\n  hosts: ['./*']\n- port: {number: 80}\n  hosts: ['./*']\n- hosts: ['./*']\n- hosts: ['./*']",
                &[
                    (
                        "spec.egress[1].port.number",
                        "used by another egress listener",
                    ),
                    ("spec.egress[2]", "must be the last"),
                    ("spec.egress[3]", "only one egress listener may omit port"),
                ],
            ),
            (
                "egress:\n- port: {number: 0, protocol: HTTP}\n  hosts: ['./*']\n- port: {number: 0}\n  bind: unix:///a.sock\n  captureMode: IPTABLES\n  hosts: ['./*']\n- port: {number: 0}\n  bind: unix:///a.sock\n  hosts: ['./*']",
                &[
                    ("spec.egress[0].bind", "must bind a unix domain socket"),
                    ("spec.egress[1].captureMode", "DEFAULT or NONE"),
                    ("spec.egress[2].bind", "must be unique"),
                ],
            ),
            (
                "egress:\n- port: {number: 8080}\n  bind: localhost\n  hosts: [bookinfo.com, 'ns/reviews', '~bad_ns/*']",
                &[
                    ("spec.egress[0].bind", "not a valid IP"),
                    ("spec.egress[0].hosts[0]", "namespace/dnsName"),
                    ("spec.egress[0].hosts[1]", "short names"),
                    ("spec.egress[0].hosts[2]", "invalid namespace"),
                ],
            ),
            (
                "outboundTrafficPolicy:\n  egressProxy: {host: egress.example.com, port: {number: 443}}",
                &[(
                    "spec.outboundTrafficPolicy.egressProxy",
                    "only be set with mode ALLOW_ANY",
                )],
            ),
            (
                "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: '*.example.com', subset: v_1}",
                &[
                    ("spec.outboundTrafficPolicy.egressProxy.host", "invalid"),
                    (
                        "spec.outboundTrafficPolicy.egressProxy.subset",
                        "invalid subset name",
                    ),
                    (
                        "spec.outboundTrafficPolicy.egressProxy.port",
                        "port is required",
                    ),
                ],
            ),
        ];
        check(cases, errors);
    }

    #[test]
    fn warnings_are_reported() {
        let cases: Cases<'_> = &[
            (
                "workloadSelector: {}\negress: [{hosts: ['./*']}]",
                &[("spec.workloadSelector", "no labels")],
            ),
            (
                "egress:\n- hosts: ['ns1/a.com', 'ns1/a.com', 'ns2/*', 'ns2/b.com', './x.com', './*']",
                &[
                    ("spec.egress[0].hosts[1]", "repeats"),
                    ("spec.egress[0].hosts[3]", "repeats"),
                    ("spec.egress[0].hosts[5]", "repeats"),
                ],
            ),
            (
                "egress:\n- hosts: ['*/*', 'istio-system/*']",
                &[("spec.egress[0].hosts", "`*/*` already imports")],
            ),
            (
                "ingress:\n- port: {number: 3306, protocol: MYSQL}\n  connectionPool: {http: {maxRetries: 3}}",
                &[(
                    "spec.ingress[0].connectionPool.http",
                    "only the tcp settings apply",
                )],
            ),
        ];
        check(cases, warnings);
    }

    #[test]
    fn schema_errors() {
        let cases = [
            (
                "egress: [{hosts: ['./*'], localhostServerTls: {}}]",
                "unknown field",
            ),
            ("workloadSelector: {matchLabels: {app: a}}", "unknown field"),
            (
                "outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}",
                "unknown variant",
            ),
            (
                "egress: [{hosts: ['./*'], captureMode: iptables}]",
                "unknown variant",
            ),
        ];
        for (yaml, want) in cases {
            match yaml_serde::from_str::<Sidecar>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }
}
