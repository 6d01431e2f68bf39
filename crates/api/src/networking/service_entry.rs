//! `ServiceEntry` (networking.istio.io): adds a service to the mesh's registry: an external API,
//! a VM-hosted service, or a set of addresses, with its ports and how its endpoints are found.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: external-svc-https}
//! spec:
//!   hosts: [api.dropboxapi.com]
//!   location: MESH_EXTERNAL
//!   ports:
//!   - {number: 443, name: https, protocol: TLS}
//!   resolution: DNS
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::networking::destination_rule::export_to;
use crate::networking::gateway::{Protocol, is_default, port_name, protocol};
use crate::networking::sidecar::WorkloadSelector;
use crate::networking::workload_entry::{Addresses, WorkloadEntry};
use crate::validate::{Cx, Validate, rules};

/// The `spec` of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// The service's names, matched against VirtualService and DestinationRule hosts, the HTTP
    /// authority and the TLS SNI. A DNS name, possibly `*.`-prefixed; never `*` alone. With DNS
    /// resolution and no endpoints, the hosts are also what gets resolved. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service: traffic to them is treated as this service's.
    /// Without addresses, TCP traffic is identified by port alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The service's ports; names and numbers are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh (which decides mTLS and similar behaviour).
    #[serde(default, skip_serializing_if = "is_default")]
    pub location: Location,
    /// How the proxy finds the endpoints' IPs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resolution: Resolution,
    /// The endpoints, inline. Only one of `endpoints` and `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Select pods and WorkloadEntries (in this namespace) as endpoints (`MESH_INTERNAL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces that see the service: `.`, `*` (all, the default), names, or `~` (none but
    /// the service's own proxies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs the server certificate must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Not part of the spec: the addresses the control plane allocated, from the resource's
    /// `status.addresses[].value` (Istio writes them there when it allocates addresses for
    /// ServiceEntries without any). Filled in by the loader.
    #[serde(skip)]
    pub allocated_addresses: Vec<String>,
}

/// A port of the service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "is_default")]
    pub number: u32,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ... (case-insensitive); sniffed when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The port's name, which endpoints' `ports` refer to. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The endpoints' port when an endpoint does not map this port; `number` when unset.
    #[serde(default, skip_serializing_if = "is_default")]
    pub target_port: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh, e.g. an external API.
    #[default]
    MeshExternal,
    /// Part of the mesh, e.g. VMs with sidecars.
    MeshInternal,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Connections are already addressed: forward to the original destination IP.
    #[default]
    None,
    /// Use the endpoints' IP addresses.
    Static,
    /// Resolve the endpoints' names (or the hosts, without endpoints) with DNS, using all
    /// addresses returned.
    Dns,
    /// Like `DNS`, but only the first address returned is used for new connections.
    DnsRoundRobin,
    /// Resolve the request's Host header or SNI at request time; wildcard hosts only.
    DynamicDns,
}

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

impl Validate for ServiceEntry {
    fn validate(&self, cx: &mut Cx) {
        let resolution = self.resolution.name();
        WorkloadSelector::check(&self.workload_selector, cx, "ServiceEntry");
        if self.workload_selector.is_some() && !self.endpoints.is_empty() {
            cx.error("only one of workloadSelector or endpoints may be set");
        }

        if self.hosts.is_empty() {
            cx.error_at("hosts", "a ServiceEntry must have at least one host");
        }
        cx.field("hosts", |cx| {
            for (i, host) in self.hosts.iter().enumerate() {
                cx.index(i, |cx| {
                    if host == "*" {
                        cx.error("a ServiceEntry host cannot be `*`");
                    } else {
                        cx.check(rules::wildcard_host(host));
                        // Istio accepts `*foo.com` here but warns: only `*.` wildcards match.
                        if host.starts_with('*') && !host.starts_with("*.") {
                            cx.warn(format!("partial wildcard {host:?} is not supported; use `*.` followed by a domain"));
                        }
                    }
                });
            }
        });

        cx.field("addresses", |cx| {
            for (i, addr) in self.addresses.iter().enumerate() {
                cx.index(i, |cx| {
                    cx.check(rules::ip_or_cidr(addr));
                    if addr.contains('/')
                        && !matches!(self.resolution, Resolution::None | Resolution::Static)
                    {
                        cx.error(format!(
                            "CIDR addresses are only allowed with resolution NONE or STATIC, \
                             not {resolution}"
                        ));
                    }
                });
            }
        });

        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        let protocols: Vec<Option<Protocol>> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                cx.field("ports", |cx| {
                    cx.index(i, |cx| {
                        cx.check_at("name", port_name(&port.name));
                        if !port.name.is_empty() && !names.insert(port.name.as_str()) {
                            cx.error_at(
                                "name",
                                format!("port name {:?} is already used", port.name),
                            );
                        }
                        cx.check_at("number", rules::port(port.number));
                        if !numbers.insert(port.number) {
                            cx.error_at(
                                "number",
                                format!("port {} is already defined", port.number),
                            );
                        }
                        if port.target_port != 0 {
                            cx.check_at("targetPort", rules::port(port.target_port));
                        }
                        match protocol(&port.protocol) {
                            Ok(p) => p,
                            Err(e) => {
                                cx.error_at("protocol", e);
                                None
                            }
                        }
                    })
                })
            })
            .collect();

        self.check_resolution(cx, &names, &protocols);

        // Plain TCP carries no host name, so several hosts on one TCP port are
        // indistinguishable; with NONE the hosts are ignored anyway.
        if self.resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = protocols
                .iter()
                .position(|p| !p.is_some_and(|p| p.is_http() || p.is_tls()));
            if let Some(i) = opaque {
                let message = format!(
                    "with several hosts and resolution {resolution}, every port must be HTTP or \
                     TLS-based: plain TCP cannot tell the hosts apart"
                );
                cx.field("ports", |cx| {
                    cx.index(i, |cx| cx.error_at("protocol", message))
                });
            }
        }

        export_to(cx, &self.export_to, true);
    }
}

impl ServiceEntry {
    fn check_resolution(
        &self,
        cx: &mut Cx,
        port_names: &BTreeSet<&str>,
        protocols: &[Option<Protocol>],
    ) {
        match self.resolution {
            Resolution::None => {
                if !self.endpoints.is_empty() {
                    cx.error_at("endpoints", "resolution NONE cannot have endpoints");
                }
                if self.workload_selector.is_some() {
                    cx.field("workloadSelector", |cx| {
                        cx.warn("workloadSelector has no effect with resolution NONE")
                    });
                }
            }
            Resolution::Static => {
                if self.endpoints.is_empty() && self.workload_selector.is_none() {
                    cx.field("endpoints", |cx| {
                        cx.warn(
                            "resolution STATIC without endpoints or a workloadSelector: the \
                             service has no endpoints",
                        )
                    });
                }
                self.check_endpoints(cx, Addresses::Static, port_names);
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                self.check_dns(cx, port_names, protocols)
            }
            Resolution::DynamicDns => self.check_dynamic_dns(cx, protocols),
        }
    }

    fn check_endpoints(&self, cx: &mut Cx, addresses: Addresses, port_names: &BTreeSet<&str>) {
        cx.field("endpoints", |cx| {
            for (i, e) in self.endpoints.iter().enumerate() {
                cx.index(i, |cx| e.check(cx, addresses, Some(port_names)));
            }
        });
    }

    fn check_dns(&self, cx: &mut Cx, port_names: &BTreeSet<&str>, protocols: &[Option<Protocol>]) {
        let resolution = self.resolution.name();
        if self.endpoints.is_empty() {
            // The hosts themselves are resolved, so they must be names, not patterns.
            let wildcards = self.hosts.iter().enumerate().filter(|(_, h)| {
                h.as_str() != "*" && rules::wildcard_host(h).is_ok() && rules::fqdn(h).is_err()
            });
            for (i, _) in wildcards {
                let message = format!(
                    "with resolution {resolution} and no endpoints the hosts are resolved, so \
                     they cannot be wildcards"
                );
                cx.field("hosts", |cx| cx.index(i, |cx| cx.error(message)));
            }
        }
        if self.resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
            cx.error_at(
                "endpoints",
                "resolution DNS_ROUND_ROBIN allows at most 1 endpoint",
            );
        }
        self.check_endpoints(cx, Addresses::Dns, port_names);
        let tcp = protocols.iter().any(|p| p.is_some_and(Protocol::is_tcp));
        if !self.addresses.is_empty() && self.hosts.len() > 1 && tcp {
            cx.field("hosts", |cx| {
                cx.warn("a ServiceEntry with addresses and a TCP port should have only one host")
            });
        }
    }

    fn check_dynamic_dns(&self, cx: &mut Cx, protocols: &[Option<Protocol>]) {
        for (i, host) in self.hosts.iter().enumerate() {
            if !host.starts_with('*') {
                let message = "resolution DYNAMIC_DNS needs wildcard hosts (`*.example.com`)";
                cx.field("hosts", |cx| cx.index(i, |cx| cx.error(message)));
            }
        }
        if !self.addresses.is_empty() {
            cx.error_at(
                "addresses",
                "resolution DYNAMIC_DNS cannot have addresses: routes come from the hosts",
            );
        }
        if !self.endpoints.is_empty() {
            cx.error_at(
                "endpoints",
                "resolution DYNAMIC_DNS cannot have endpoints: the destination comes from the \
                 hosts",
            );
        }
        for (i, p) in protocols.iter().enumerate() {
            use Protocol::*;
            if !matches!(p, Some(Http | Tls | Grpc | Http2)) {
                let message =
                    "resolution DYNAMIC_DNS supports HTTP, TLS, GRPC and HTTP2 ports only";
                cx.field("ports", |cx| {
                    cx.index(i, |cx| cx.error_at("protocol", message))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, warnings};

    fn parse(yaml: &str) -> ServiceEntry {
        crate::validate::test_support::parse(yaml)
    }

    use crate::validate::test_support::Cases;

    fn check(
        cases: crate::validate::test_support::Cases<'_>,
        findings: fn(&ServiceEntry) -> Vec<(String, String)>,
    ) {
        crate::validate::test_support::check_cases(cases, findings);
    }

    #[test]
    fn valid_examples() {
        let cases = [
            // An external HTTPS API reached by DNS (egress task).
            r#"
hosts:
- api.dropboxapi.com
- www.googleapis.com
location: MESH_EXTERNAL
ports:
- number: 443
  name: https
  protocol: TLS
resolution: DNS
"#,
            "hosts: [httpbin.org]\nports: [{number: 80, name: http-port, protocol: HTTP}]\nresolution: DNS\nlocation: MESH_EXTERNAL\n",
            // A database on fixed IPs behind a virtual CIDR.
            r#"
hosts: [mymongodb.somedomain]
addresses: [192.192.192.192/24]
ports:
- {number: 27018, name: mongodb, protocol: MONGO}
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 2.2.2.2
- address: 3.3.3.3
  ports: {mongodb: 27019}
  labels: {zone: b}
"#,
            // VMs selected as endpoints.
            r#"
hosts: [details.bookinfo.com]
location: MESH_INTERNAL
ports:
- {number: 80, name: http, protocol: HTTP, targetPort: 8080}
resolution: STATIC
workloadSelector:
  labels: {app: details-legacy}
"#,
            "hosts: [unix.example.com]\nports: [{number: 8080, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: 'unix:///var/run/example/socket'}]\n",
            // DNS endpoints with a port mapping, and round robin with one endpoint.
            r#"
hosts: [foo.bar.com]
location: MESH_EXTERNAL
ports:
- {number: 80, name: http, protocol: HTTP}
- {number: 443, name: https, protocol: TLS}
resolution: DNS
endpoints:
- address: us.foo.bar.com
  ports: {https: 8443}
- address: uk.foo.bar.com
"#,
            "hosts: [api.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: lb.example.com}]\n",
            // Wildcards: passthrough with NONE, and dynamic DNS.
            "hosts: ['*.bar.com']\nlocation: MESH_EXTERNAL\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: NONE\n",
            "hosts: ['*.wikipedia.org']\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DYNAMIC_DNS\n",
            "hosts: [internal.example.com]\naddresses: [10.1.1.1]\nports: [{number: 5432, name: tcp-pg, protocol: TCP}]\nexportTo: ['~']\n",
        ];
        for yaml in cases {
            let spec = parse(yaml);
            assert_eq!(errors(&spec), [], "{yaml}");
            assert_eq!(warnings(&spec), [], "{yaml}");
        }
    }

    #[test]
    fn invalid_examples() {
        let cases: Cases<'_> = &[
            (
                "ports: [{number: 80, name: http, protocol: HTTP}]",
                &[("spec.hosts", "at least one host")],
            ),
            (
                "hosts: ['*', '*foo.com', a.com]\nresolution: NONE",
                &[("spec.hosts[0]", "cannot be `*`")],
            ),
            (
                "hosts: [a.com]\naddresses: [10.0.0.0/8, 300.1.1.1]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]",
                &[
                    ("spec.addresses[0]", "CIDR addresses are only allowed"),
                    ("spec.addresses[1]", "not a valid IP"),
                ],
            ),
            (
                "hosts: [a.com]\nresolution: DNS\nports:\n- {number: 80, name: http, protocol: HTTP}\n- {number: 80, name: http, protocol: HTTPX}\n- {number: 0, protocol: TCP, targetPort: 70000}",
                &[
                    ("spec.ports[1].name", "already used"),
                    ("spec.ports[1].number", "already defined"),
                    ("spec.ports[1].protocol", "unsupported protocol"),
                    ("spec.ports[2].name", "port name is required"),
                    ("spec.ports[2].number", "1..65535"),
                    ("spec.ports[2].targetPort", "1..65535"),
                ],
            ),
            (
                "hosts: [a.com]\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]\nresolution: STATIC",
                &[("spec", "only one of workloadSelector or endpoints")],
            ),
            (
                "hosts: [a.com]\nendpoints: [{address: 1.1.1.1}]",
                &[("spec.endpoints", "resolution NONE cannot have endpoints")],
            ),
            (
                "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints:\n- {address: db.example.com}\n- {address: 1.1.1.1, ports: {grpc: 9090}}\n- {address: 'unix:///a.sock', ports: {http: 80}}",
                &[
                    (
                        "spec.endpoints[0].address",
                        "must be an IP address or a unix:// socket",
                    ),
                    (
                        "spec.endpoints[1].ports[grpc]",
                        "not a port name of the ServiceEntry",
                    ),
                    ("spec.endpoints[2].ports", "cannot have ports"),
                ],
            ),
            (
                "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}, {number: 81, name: admin}]\nendpoints: [{address: 'unix:///a.sock'}]",
                &[("spec.endpoints[0].address", "exactly 1 port")],
            ),
            (
                "hosts: ['*.a.com', b.com]\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]",
                &[("spec.hosts[0]", "cannot be wildcards")],
            ),
            (
                "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: a.example.com}, {address: 'unix:///a.sock', ports: {http2: 80}}]",
                &[
                    ("spec.endpoints", "at most 1 endpoint"),
                    (
                        "spec.endpoints[1].address",
                        "not an IP address or a fully qualified DNS name",
                    ),
                    ("spec.endpoints[1].ports[http2]", "not a port name"),
                ],
            ),
            (
                "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}, {number: 5432, name: pg, protocol: TCP}, {number: 1, name: sniffed}]",
                &[(
                    "spec.ports[1].protocol",
                    "plain TCP cannot tell the hosts apart",
                )],
            ),
            (
                "hosts: [a.wikipedia.org]\naddresses: [1.1.1.1]\nresolution: DYNAMIC_DNS\nendpoints: [{address: 1.1.1.1}]\nports: [{number: 5432, name: pg, protocol: TCP}]",
                &[
                    ("spec.hosts[0]", "needs wildcard hosts"),
                    ("spec.addresses", "cannot have addresses"),
                    ("spec.endpoints", "cannot have endpoints"),
                    ("spec.ports[0].protocol", "HTTP, TLS, GRPC and HTTP2"),
                ],
            ),
            (
                "hosts: [a.com]\nexportTo: ['~', '*']",
                &[
                    ("spec.exportTo", "`*` (all namespaces) together"),
                    ("spec.exportTo", "`~` (no one) together"),
                ],
            ),
            (
                "hosts: [a.com]\nworkloadSelector: {labels: {'app*': a}}\nresolution: STATIC",
                &[("spec.workloadSelector.labels[app*]", "wildcards")],
            ),
        ];
        check(cases, errors);
    }

    #[test]
    fn warnings_are_reported() {
        let cases: Cases<'_> = &[
            (
                "hosts: [a.com]\nresolution: STATIC",
                &[("spec.endpoints", "no endpoints")],
            ),
            (
                "hosts: [a.com]\nworkloadSelector: {}\nresolution: STATIC",
                &[("spec.workloadSelector", "no labels")],
            ),
            (
                "hosts: [a.com]\nworkloadSelector: {labels: {app: a}}",
                &[("spec.workloadSelector", "no effect with resolution NONE")],
            ),
            (
                "hosts: [a.com, b.com]\naddresses: [1.1.1.1]\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]",
                &[("spec.hosts", "only one host")],
            ),
            (
                "hosts: [a.com]\nresolution: STATIC\nendpoints: [{network: n2}]",
                &[("spec.endpoints[0].address", "network \"n2\"")],
            ),
        ];
        check(cases, warnings);
    }

    #[test]
    fn schema_errors() {
        let cases = [
            ("hosts: [a.com]\nresolution: dns", "unknown variant"),
            ("hosts: [a.com]\nlocation: EXTERNAL", "unknown variant"),
            (
                "hosts: [a.com]\nendpoints: [{address: 1.1.1.1, weigth: 2}]",
                "unknown field",
            ),
            (
                "hosts: [a.com]\nports: [{number: 80, name: http, targetport: 8080}]",
                "unknown field",
            ),
            ("host: a.com", "unknown field"),
        ];
        for (yaml, want) in cases {
            match yaml_serde::from_str::<ServiceEntry>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }
}
