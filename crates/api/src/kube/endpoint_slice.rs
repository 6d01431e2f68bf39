//! Kubernetes `EndpointSlice` (discovery.k8s.io/v1): the addresses behind a Service. The
//! Service is named by the `kubernetes.io/service-name` label (in `metadata`). Unlike most
//! kinds, an EndpointSlice has no `spec`: its fields are at the top of the document.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::kube::service::protocol;
use crate::validate::{Cx, Validate, rules};

/// An EndpointSlice document (`metadata` is read by the loader).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `IPv4`, `IPv6` or `FQDN`: the kind of every address in the slice. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// The ports every endpoint serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One backend (usually a Pod).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Its addresses, 1 to 100 (the EndpointSlice controller writes exactly one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    /// The object (usually a Pod) this endpoint is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// An endpoint's state. Unset conditions are unknown; see the accessors for how to read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// Ready for new traffic. Unknown counts as ready, as Kubernetes specifies.
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    /// Able to serve (possibly while terminating). Unknown falls back to `ready`.
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }

    /// Shutting down. Unknown counts as not terminating.
    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

/// Kubernetes' `ObjectReference`, the parts a mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// Matches the name of the Service port this is the target of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number on the endpoints. Unset means every port (rarely used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

// Kubernetes' limit on addresses per endpoint.
const MAX_ADDRESSES: usize = 100;

impl Validate for EndpointSlice {
    fn validate(&self, cx: &mut Cx) {
        let address_type = self.address_type.as_deref();
        match address_type {
            None => cx.error_at("addressType", "addressType is required: IPv4, IPv6 or FQDN"),
            Some("IPv4" | "IPv6" | "FQDN") => {}
            Some(t) => cx.error_at(
                "addressType",
                format!("unknown addressType {t:?}; expected IPv4, IPv6 or FQDN"),
            ),
        }
        cx.each("endpoints", &self.endpoints, |cx, e| {
            if e.addresses.is_empty() || e.addresses.len() > MAX_ADDRESSES {
                cx.error_at(
                    "addresses",
                    format!(
                        "an endpoint needs 1 to {MAX_ADDRESSES} addresses, found {}",
                        e.addresses.len()
                    ),
                );
            }
            cx.field("addresses", |cx| {
                for (i, a) in e.addresses.iter().enumerate() {
                    cx.index(i, |cx| cx.check(address(address_type, a)));
                }
            });
            if let Some(h) = &e.hostname
                && !rules::is_dns1123_label(h)
            {
                cx.error_at("hostname", format!("hostname {h:?} must be a DNS label"));
            }
        });
        let mut names = BTreeSet::new();
        cx.each("ports", &self.ports, |cx, p| {
            let name = p.name.as_deref().unwrap_or("");
            if !name.is_empty() && !rules::is_dns1123_label(name) {
                cx.error_at("name", format!("port name {name:?} must be a DNS label"));
            }
            if !names.insert(name.to_owned()) {
                cx.error_at("name", format!("duplicate port name {name:?}"));
            }
            if let Some(n) = p.port {
                cx.check_at("port", rules::port(n));
            }
            if let Some(proto) = &p.protocol {
                cx.check_at("protocol", protocol(proto));
            }
            if let Some(app) = &p.app_protocol {
                cx.check_at("appProtocol", rules::label_key(app));
            }
        });
    }
}

fn address(address_type: Option<&str>, a: &str) -> Result<(), String> {
    let ip = a.parse::<std::net::IpAddr>();
    match (address_type, ip) {
        (Some("IPv4"), Ok(ip)) if ip.is_ipv4() => Ok(()),
        (Some("IPv4"), _) => Err(format!("{a:?} is not an IPv4 address")),
        (Some("IPv6"), Ok(ip)) if ip.is_ipv6() => Ok(()),
        (Some("IPv6"), _) => Err(format!("{a:?} is not an IPv6 address")),
        (Some("FQDN"), _) => rules::fqdn(a),
        // Without a (valid) type, the address can't be judged; that error is reported once.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::doc_errors;

    fn parse(yaml: &str) -> EndpointSlice {
        crate::validate::test_support::parse(yaml)
    }

    const REVIEWS: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc12
  namespace: default
  labels: {kubernetes.io/service-name: reviews, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
  ownerReferences: [{apiVersion: v1, kind: Service, name: reviews, uid: 1234}]
addressType: IPv4
endpoints:
- addresses: [10.244.0.11]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: kind-control-plane
  zone: us-east-1a
  targetRef: {kind: Pod, name: reviews-v1-5b6d, namespace: default, uid: abcd}
- addresses: [10.244.0.12]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.244.0.13]
ports:
- {name: http, port: 9080, protocol: TCP, appProtocol: http}
"#;

    #[test]
    fn valid_examples() {
        let slice = parse(REVIEWS);
        assert_eq!(doc_errors(&slice), []);
        let e = &slice.endpoints;
        assert_eq!(
            e[0].target_ref.as_ref().map(|r| r.name.as_str()),
            Some("reviews-v1-5b6d")
        );
        assert!(e[0].conditions.is_ready());
        assert!(
            !e[1].conditions.is_ready()
                && e[1].conditions.is_serving()
                && e[1].conditions.is_terminating()
        );
        assert!(
            e[2].conditions.is_ready()
                && e[2].conditions.is_serving()
                && !e[2].conditions.is_terminating()
        );
        for yaml in [
            "addressType: IPv6\nendpoints: [{addresses: [\"fd00::1\"]}]\nports: [{port: 80}]",
            "addressType: FQDN\nendpoints: [{addresses: [db.example.com], hostname: db-0}]",
            "addressType: IPv4",
        ] {
            assert_eq!(doc_errors(&parse(yaml)), [], "{yaml}");
        }
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("endpoints: []", &[("addressType", "required")]),
            (
                "addressType: ipv4",
                &[("addressType", "unknown addressType")],
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: []}, {addresses: [\"fd00::1\", 10.0.0]}]",
                &[
                    ("endpoints[0].addresses", "1 to 100"),
                    ("endpoints[1].addresses[0]", "not an IPv4 address"),
                    ("endpoints[1].addresses[1]", "not an IPv4 address"),
                ],
            ),
            (
                "addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]",
                &[("endpoints[0].addresses[0]", "IPv6")],
            ),
            (
                "addressType: FQDN\nendpoints: [{addresses: [\"a_b.com\"], hostname: Db}]",
                &[
                    ("endpoints[0].addresses[0]", "invalid"),
                    ("endpoints[0].hostname", "DNS label"),
                ],
            ),
            (
                "addressType: IPv4\nports: [{name: Http, port: 0, protocol: http, appProtocol: \"/x\"}, {port: 80}, {port: 81}]",
                &[
                    ("ports[0].name", "DNS label"),
                    ("ports[0].port", "1..65535"),
                    ("ports[0].protocol", "expected TCP"),
                    ("ports[0].appProtocol", "label key"),
                    ("ports[2].name", "duplicate port name \"\""),
                ],
            ),
        ];
        for (yaml, want) in cases {
            let got = doc_errors(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}: {msg}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }
}
