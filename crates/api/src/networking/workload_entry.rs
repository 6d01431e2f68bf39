//! `WorkloadEntry` (networking.istio.io): a workload that is not a Kubernetes pod (typically a
//! VM), with its address and labels, so that Services and ServiceEntries can select it like a
//! pod. The same message is a ServiceEntry's inline `endpoints` entry.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: WorkloadEntry
//! metadata: {name: details-vm}
//! spec:
//!   address: 10.128.0.12
//!   labels: {app: details, version: v1}
//!   serviceAccount: bookinfo-details
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::networking::gateway::{UNIX_PREFIX, is_default, port_name, unix_address};
use crate::validate::{Cx, Validate, rules};

/// The `spec` of a WorkloadEntry, and one endpoint of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// The endpoint's address without a port: an IP, a fully qualified DNS name (only with DNS
    /// resolution), or `unix:///absolute/path` for a Unix domain socket. May be empty only when
    /// `network` is set: the endpoint is then reached through that network's gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name -> this endpoint's port. Traffic to a service port goes to the mapped
    /// port; unmapped ports use the service's `targetPort`, else the same number. Not allowed for
    /// `unix://` addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// The workload's labels, which selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The L3 network the endpoint is in; endpoints on other networks are reached through that
    /// network's gateway. Required when `address` is empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// The failure domain, `region/zone/subzone`, for locality-aware load balancing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Load-balancing weight; endpoints with higher weights get proportionally more traffic.
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight: u32,
    /// The workload's service account (in the same namespace), for its identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// Which addresses an entry may have, depending on where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addresses {
    /// A standalone WorkloadEntry: an IP, an FQDN or a socket, since whether it will be
    /// resolved by DNS is not known yet.
    Standalone,
    /// An endpoint of a `STATIC` ServiceEntry: an IP or a socket.
    Static,
    /// An endpoint of a `DNS`/`DNS_ROUND_ROBIN` ServiceEntry: an IP or an FQDN.
    Dns,
}

impl WorkloadEntry {
    /// Istio's `validateWorkloadEntry`. `service_ports` are the port names of the enclosing
    /// ServiceEntry, which the `ports` keys must refer to.
    pub(crate) fn check(
        &self,
        cx: &mut Cx,
        addresses: Addresses,
        service_ports: Option<&BTreeSet<&str>>,
    ) {
        let addr = self.address.as_str();
        let unix = addr
            .strip_prefix(UNIX_PREFIX)
            .filter(|_| addresses != Addresses::Dns);
        if addr.is_empty() {
            if self.network.is_empty() {
                cx.error_at(
                    "address",
                    "address is required (it may be empty only when `network` is set)",
                );
            } else if addresses == Addresses::Dns {
                cx.error_at(
                    "address",
                    "an endpoint of a DNS ServiceEntry needs an address to resolve",
                );
            } else {
                cx.field("address", |cx| {
                    cx.warn(format!(
                        "address is unset: the endpoint is reached through network {:?}'s gateway",
                        self.network
                    ))
                });
            }
        } else if let Some(path) = unix {
            cx.check_at("address", unix_address(path));
            if !self.ports.is_empty() {
                cx.error_at("ports", "a unix domain socket endpoint cannot have ports");
            }
            if service_ports.is_some_and(|p| p.len() != 1) {
                cx.error_at(
                    "address",
                    "a unix domain socket endpoint needs its ServiceEntry to declare exactly 1 \
                     port",
                );
            }
        } else if rules::ip(addr).is_err() {
            let fqdn = rules::fqdn(addr);
            match addresses {
                Addresses::Static => cx.error_at(
                    "address",
                    format!(
                        "address {addr:?} must be an IP address or a unix:// socket \
                         (DNS names need resolution DNS)"
                    ),
                ),
                Addresses::Standalone if fqdn.is_err() => cx.error_at(
                    "address",
                    format!(
                        "address {addr:?} is not an IP address, a fully qualified DNS name \
                         or a unix:// socket"
                    ),
                ),
                Addresses::Dns if fqdn.is_err() => cx.error_at(
                    "address",
                    format!("address {addr:?} is not an IP address or a fully qualified DNS name"),
                ),
                _ => {}
            }
        }

        cx.field("ports", |cx| {
            for (name, port) in &self.ports {
                cx.key(name, |cx| {
                    cx.check(port_name(name));
                    cx.check(rules::port(*port));
                    if let Some(declared) = service_ports
                        && !declared.contains(name.as_str())
                    {
                        let names: Vec<&str> = declared.iter().copied().collect();
                        cx.error(format!(
                            "port {name:?} is not a port name of the ServiceEntry (declared: {})",
                            names.join(", ")
                        ));
                    }
                });
            }
        });
        cx.field("labels", |cx| rules::labels(cx, &self.labels));
    }
}

impl Validate for WorkloadEntry {
    fn validate(&self, cx: &mut Cx) {
        self.check(cx, Addresses::Standalone, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, warnings};

    fn parse(yaml: &str) -> WorkloadEntry {
        crate::validate::test_support::parse(yaml)
    }

    #[test]
    fn valid_examples() {
        let cases = [
            // A VM running bookinfo's details service (Istio's docs example).
            "address: 2.2.2.2\nlabels:\n  app: details-legacy\n  instance-id: vm1\nserviceAccount: details-legacy\nports: {http: 8080}",
            "address: vm1.internal.example.com\nlocality: us-east1/us-east1-b\nweight: 10",
            "address: unix:///var/run/app.sock",
            "address: 'unix://@abstract'",
            "address: 2001:db8::1\nnetwork: network2",
            "address: 10.0.0.1\nports: {HTTP-Web: 80}",
        ];
        for yaml in cases {
            let spec = parse(yaml);
            assert_eq!(errors(&spec), [], "{yaml}");
            assert_eq!(warnings(&spec), [], "{yaml}");
        }
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "labels: {app: a}",
                &[("spec.address", "address is required")],
            ),
            (
                "address: not_a_host!",
                &[("spec.address", "not an IP address")],
            ),
            (
                "address: '*.example.com'",
                &[("spec.address", "not an IP address")],
            ),
            (
                "address: unix://relative",
                &[("spec.address", "absolute path")],
            ),
            (
                "address: unix:///dir/",
                &[("spec.address", "absolute path")],
            ),
            (
                "address: unix:///a.sock\nports: {http: 80}",
                &[("spec.ports", "cannot have ports")],
            ),
            (
                "address: 1.1.1.1\nports: {http: 0, -bad: 80}",
                &[
                    ("spec.ports[-bad]", "invalid port name"),
                    ("spec.ports[http]", "1..65535"),
                ],
            ),
            (
                "address: 1.1.1.1\nlabels: {'-app': x}",
                &[("spec.labels[-app]", "label key")],
            ),
        ];
        for (yaml, want) in cases {
            let got = errors(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }

    #[test]
    fn network_without_address_warns() {
        let spec = parse("network: network2\nlabels: {app: a}");
        assert_eq!(errors(&spec), []);
        let got = warnings(&spec);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "spec.address");
        assert!(got[0].1.contains("network2"));
    }

    #[test]
    fn schema_errors() {
        for (yaml, want) in [
            ("address: 1.1.1.1\nport: {http: 80}", "unknown field"),
            ("address: 1.1.1.1\nports: {http: -1}", ""),
            ("address: 1.1.1.1\nweight: heavy", ""),
        ] {
            match yaml_serde::from_str::<WorkloadEntry>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }
}
