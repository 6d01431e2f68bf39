//! `DestinationRule` (networking.istio.io): what happens to traffic for a host after routing:
//! load balancing, connection pool limits, outlier detection (circuit breaking), upstream TLS,
//! and the named `subsets` (groups of endpoints by label) that routes can target.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: DestinationRule
//! metadata: {name: reviews}
//! spec:
//!   host: reviews
//!   trafficPolicy:
//!     loadBalancer: {simple: LEAST_REQUEST}
//!   subsets:
//!   - name: v1
//!     labels: {version: v1}
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::common::WorkloadSelector;
use crate::networking::gateway::{is_default, is_istio_label};
use crate::networking::virtual_service::PortSelector;
use crate::validate::{Cx, Validate, rules};

mod connection_pool;
mod load_balancer;

pub use connection_pool::{
    ConnectionKeepalive, ConnectionPoolSettings, H2UpgradePolicy, HttpSettings, OutlierDetection,
    TcpKeepalive, TcpSettings,
};
pub use load_balancer::{
    ConsistentHashLb, CookieAttribute, Distribute, Failover, HttpCookie, LoadBalancerSettings,
    LocalityLoadBalancerSetting, MagLev, RingHash, SimpleLb, WarmupConfiguration,
    ZoneAwareLoadBalancerSetting,
};

/// The `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service the rule applies to, as in the service registry: a short name (resolved in
    /// the rule's namespace), an FQDN, or a `*.`-prefixed wildcard. Required.
    #[serde(default)]
    pub host: String,
    /// Policies for all of the host's traffic (subsets and ports may override them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of the host's endpoints, selected by label, that routes can target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces that see this rule: `.` (its own), `*` (all, the default when empty) or names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Apply the rule only to the proxies of these workloads (in the rule's namespace); then it
    /// may only be exported to its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Policies for the traffic to a destination (or a subset of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS the proxy originates towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port policies. A port's policy replaces (does not merge with) the ones above:
    /// fields it leaves out take their defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel TCP to the host over HTTP CONNECT or POST (TCP and TLS routes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limit concurrent retries relative to the active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// The policies of one port of the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The destination's port this applies to. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnels downstream TCP connections to `targetHost:targetPort` through the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (the default) or `POST`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// FQDN or IP the connection is tunneled to. Required.
    #[serde(default)]
    pub target_host: String,
    /// Port the connection is tunneled to. Required.
    #[serde(default)]
    pub target_port: u32,
}

/// The upstream PROXY protocol header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "is_default")]
    pub version: ProxyProtocolVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    /// Human-readable header (the default).
    #[default]
    V1,
    /// Binary header.
    V2,
}

/// A limit on concurrent retries as a share of the active and pending requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Percent of active plus pending requests that may be retries; 20 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the percentage; 3 when unset.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_retry_concurrency: u32,
    /// When non-zero, requests seen over this window count towards the budget (not only the
    /// active ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

/// A named group of the host's endpoints, selected by labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes use in `destination.subset`. Required, a DNS label, unique in the rule.
    #[serde(default)]
    pub name: String,
    /// Endpoint labels that pick the subset's members.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the rule-level policy for this subset (applied only when a route sends
    /// traffic to the subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// TLS the proxy originates to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: ClientTlsMode,
    /// Client certificate file; required with `MUTUAL` unless `credentialName` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// Client private key file; required with `MUTUAL` unless `credentialName` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// CA bundle verifying the server; the system's CAs when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Secret (or `configmap://` for CA-only) holding the client certificate, key and CA;
    /// replaces the file paths. At sidecars it needs a `workloadSelector` on the rule.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Accepted server SANs; overrides the ServiceEntry's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI sent to the server; derived from the request's authority when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// Skip verifying the server's certificate chain and SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file checked against the server's certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text to the upstream.
    #[default]
    Disable,
    /// Originate TLS.
    Simple,
    /// Originate mutual TLS with the given client certificate.
    Mutual,
    /// Mutual TLS with Istio's workload certificates.
    IstioMutual,
}

impl Validate for DestinationRule {
    fn validate(&self, cx: &mut Cx) {
        if self.host.is_empty() {
            cx.error_at("host", "host is required");
        } else {
            cx.check_at("host", rules::wildcard_host(&self.host));
        }
        cx.opt("trafficPolicy", &self.traffic_policy, |cx, p| {
            p.validate(cx)
        });

        let mut names = BTreeSet::new();
        cx.field("subsets", |cx| {
            for (i, subset) in self.subsets.iter().enumerate() {
                cx.index(i, |cx| {
                    subset.validate(cx);
                    if !subset.name.is_empty() && !names.insert(subset.name.as_str()) {
                        cx.error_at("name", format!("duplicate subset name {:?}", subset.name));
                    }
                });
            }
        });

        let exported = export_to(cx, &self.export_to, false);
        if let Some(selector) = &self.workload_selector {
            cx.field("workloadSelector", |cx| {
                selector.validate(cx);
                if selector.match_labels.is_empty() {
                    cx.warn(
                        "workloadSelector has no labels, so it selects every workload in \
                         the namespace",
                    );
                }
            });
            // Namespace names other than `.` may be the rule's own namespace, which is not known
            // here; `*` and several entries certainly reach beyond it.
            if exported.contains("*") {
                cx.error_at(
                    "exportTo",
                    "a DestinationRule with a workloadSelector can only be exported to its own \
                     namespace (`.`)",
                );
            } else if exported.len() > 1 {
                cx.error_at(
                    "exportTo",
                    "a DestinationRule with a workloadSelector cannot have several exportTo \
                     entries",
                );
            }
        }
    }
}

/// Istio's `validateExportTo` for a resource's `exportTo`: `.`, `*`, namespace names, and for a
/// ServiceEntry `~` (visible to no one). Returns the distinct entries.
pub(crate) fn export_to<'a>(
    cx: &mut Cx,
    entries: &'a [String],
    allow_none: bool,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    cx.field("exportTo", |cx| {
        for (i, e) in entries.iter().enumerate() {
            cx.index(i, |cx| {
                if !seen.insert(e.as_str()) {
                    cx.error(format!("duplicate exportTo entry {e:?}"));
                    return;
                }
                match e.as_str() {
                    "." | "*" => {}
                    "~" if allow_none => {}
                    "~" => cx.error(
                        "exportTo `~` (visible to no one) is only allowed in a ServiceEntry",
                    ),
                    ns if !rules::is_dns1123_label(ns) => cx.error(format!(
                        "invalid exportTo entry {ns:?}: use `.`, `*` or a namespace name"
                    )),
                    _ => {}
                }
            });
        }
        if entries.len() > 1 {
            if seen.contains("*") {
                cx.error("exportTo cannot have `*` (all namespaces) together with other entries");
            }
            if allow_none && seen.contains("~") {
                cx.error("exportTo cannot have `~` (no one) together with other entries");
            }
        }
    });
    seen
}

impl Validate for Subset {
    fn validate(&self, cx: &mut Cx) {
        if self.name.is_empty() {
            cx.error_at("name", "subset name is required");
        } else if !is_istio_label(&self.name) {
            cx.error_at(
                "name",
                format!(
                    "invalid subset name {:?}: at most 63 alphanumerics and '-', starting and \
                     ending with an alphanumeric",
                    self.name
                ),
            );
        }
        cx.field("labels", |cx| rules::labels(cx, &self.labels));
        cx.opt("trafficPolicy", &self.traffic_policy, |cx, p| {
            p.validate(cx)
        });
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, cx: &mut Cx) {
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            cx.error("trafficPolicy must set at least one policy");
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            cx.error("tunnel and proxyProtocol cannot be set together");
        }
        check_policies(
            cx,
            &self.load_balancer,
            &self.connection_pool,
            &self.outlier_detection,
            &self.tls,
        );

        let mut ports = BTreeSet::new();
        cx.field("portLevelSettings", |cx| {
            for (i, p) in self.port_level_settings.iter().enumerate() {
                cx.index(i, |cx| {
                    p.validate(cx);
                    if let Some(port) = &p.port
                        && !ports.insert(port.number)
                    {
                        cx.field("port", |cx| {
                            cx.warn(format!(
                                "port {} already has settings above; only the first applies",
                                port.number
                            ))
                        });
                    }
                });
            }
        });
        cx.opt("tunnel", &self.tunnel, |cx, t| t.validate(cx));
        cx.opt("retryBudget", &self.retry_budget, |cx, b| b.validate(cx));
    }
}

fn check_policies(
    cx: &mut Cx,
    load_balancer: &Option<LoadBalancerSettings>,
    connection_pool: &Option<ConnectionPoolSettings>,
    outlier_detection: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
) {
    let has_outlier = outlier_detection.is_some();
    cx.opt("loadBalancer", load_balancer, |cx, lb| {
        lb.check(cx, has_outlier)
    });
    cx.opt("connectionPool", connection_pool, |cx, p| p.validate(cx));
    cx.opt("outlierDetection", outlier_detection, |cx, o| {
        o.validate(cx)
    });
    cx.opt("tls", tls, |cx, t| t.validate(cx));
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, cx: &mut Cx) {
        match &self.port {
            None => cx.error_at("port", "port is required"),
            Some(port) => cx.field("port", |cx| cx.check_at("number", rules::port(port.number))),
        }
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
        {
            cx.error(
                "a port's traffic policy must set at least one of loadBalancer, connectionPool, \
                 outlierDetection or tls",
            );
        }
        check_policies(
            cx,
            &self.load_balancer,
            &self.connection_pool,
            &self.outlier_detection,
            &self.tls,
        );
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, cx: &mut Cx) {
        if !matches!(self.protocol.as_str(), "" | "CONNECT" | "POST") {
            cx.error_at(
                "protocol",
                format!(
                    "tunnel protocol {:?} must be CONNECT or POST",
                    self.protocol
                ),
            );
        }
        if self.target_host.is_empty() {
            cx.error_at("targetHost", "targetHost is required");
        } else if rules::fqdn(&self.target_host).is_err() && rules::ip(&self.target_host).is_err() {
            cx.error_at(
                "targetHost",
                format!(
                    "targetHost {:?} must be an FQDN or an IP address",
                    self.target_host
                ),
            );
        }
        cx.check_at("targetPort", rules::port(self.target_port));
    }
}

impl Validate for RetryBudget {
    fn validate(&self, cx: &mut Cx) {
        if let Some(p) = self.percent {
            cx.check_at("percent", rules::percentage(p));
        }
        cx.opt("budgetInterval", &self.budget_interval, |cx, d| {
            cx.check(d.get().map(|_| ()))
        });
    }
}

/// A duration that Istio requires to be at least 1ms, in whole milliseconds.
fn duration(cx: &mut Cx, name: &str, d: &Option<Duration>) {
    cx.opt(name, d, |cx, d| cx.check(d.check()));
}

/// The prefix of a `credentialName` that names a ConfigMap (CA certificates only).
const CONFIGMAP_PREFIX: &str = "configmap://";

impl Validate for ClientTlsSettings {
    fn validate(&self, cx: &mut Cx) {
        use ClientTlsMode::*;

        if let Some(rest) = self.credential_name.strip_prefix(CONFIGMAP_PREFIX) {
            // `configmap://[namespace/]name`; Istio also requires the namespace, when given, to
            // be the rule's own.
            let ok = match rest.split_once('/') {
                Some((ns, name)) => rules::is_dns1123_label(ns) && rules::object_name(name).is_ok(),
                None => rules::object_name(rest).is_ok(),
            };
            if !ok {
                cx.error_at(
                    "credentialName",
                    format!(
                        "invalid credentialName {:?}: use configmap://[namespace/]name",
                        self.credential_name
                    ),
                );
            }
        }

        let has_sans = !self.subject_alt_names.is_empty();
        if self.insecure_skip_verify == Some(true) {
            let conflicting: &[(&str, bool)] = match self.mode {
                Simple => &[
                    ("caCertificates", !self.ca_certificates.is_empty()),
                    ("credentialName", !self.credential_name.is_empty()),
                    ("subjectAltNames", has_sans),
                ],
                Mutual => &[
                    ("caCertificates", !self.ca_certificates.is_empty()),
                    ("subjectAltNames", has_sans),
                ],
                _ => &[],
            };
            for (field, set) in conflicting {
                if *set {
                    cx.error_at(
                        field,
                        format!("{field} cannot be set when insecureSkipVerify is true"),
                    );
                }
            }
        }

        let files = [
            ("clientCertificate", !self.client_certificate.is_empty()),
            ("privateKey", !self.private_key.is_empty()),
            ("caCertificates", !self.ca_certificates.is_empty()),
            ("caCrl", !self.ca_crl.is_empty()),
        ];
        match self.mode {
            Simple | Mutual if !self.credential_name.is_empty() => {
                for (field, set) in files {
                    if set {
                        cx.error_at(
                            field,
                            format!(
                                "{field} cannot be set together with credentialName (the \
                                 secret provides it)"
                            ),
                        );
                    }
                }
            }
            Mutual => {
                if self.client_certificate.is_empty() {
                    cx.error_at(
                        "clientCertificate",
                        "MUTUAL TLS requires clientCertificate (or a credentialName)",
                    );
                }
                if self.private_key.is_empty() {
                    cx.error_at(
                        "privateKey",
                        "MUTUAL TLS requires privateKey (or a credentialName)",
                    );
                }
            }
            IstioMutual => {
                let ignored: Vec<&str> = files
                    .iter()
                    .chain(&[("credentialName", !self.credential_name.is_empty())])
                    .filter_map(|(f, set)| set.then_some(*f))
                    .collect();
                if !ignored.is_empty() {
                    cx.warn(format!(
                        "ISTIO_MUTUAL uses Istio's workload certificates, so {} will be ignored",
                        ignored.join(", ")
                    ));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
