//! Kubernetes `Service` (core/v1): a stable name for the workloads its selector picks. The mesh
//! reads its ports (their names and `appProtocol` say the protocol) and where they forward to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validate::{Cx, Validate, rules};

/// A Service document (`metadata` is read by the loader).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Pods (and weft Workloads) with all of these labels, in the Service's namespace, back
    /// it. Empty: the Service has no selected endpoints (they are managed by hand).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// The virtual IP; `None` makes the Service headless (no virtual IP, DNS returns the
    /// endpoints' addresses).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// The virtual IPs of a dual-stack Service; the first equals `clusterIP`.
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    /// For `type: ExternalName`: the DNS name the Service is an alias (CNAME) for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

impl ServiceSpec {
    /// True for `clusterIP: None`: no virtual IP, clients connect to endpoints directly.
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }

    /// True for `type: ExternalName`.
    pub fn is_external_name(&self) -> bool {
        self.service_type.as_deref() == Some("ExternalName")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the Service has more than one port. Istio reads the protocol from its
    /// prefix (`http`, `http-web`, `grpc-api`) unless `appProtocol` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The application protocol (`http`, `grpc`, `kubernetes.io/h2c`); takes precedence over
    /// the name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The port the Service listens on.
    #[serde(default)]
    pub port: u32,
    /// The port on the selected workloads traffic goes to: a number, or the name of a
    /// container (or Workload) port. Unset, `0` or `""` mean the same number as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// The port on every node, for `NodePort` and `LoadBalancer` Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
}

/// Kubernetes' `IntOrString`: a port number or a port name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(u32),
    String(String),
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => s.serialize_u32(*n),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntOrStringVisitor;
        impl Visitor<'_> for IntOrStringVisitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                u32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                u32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v))
            }
        }
        d.deserialize_any(IntOrStringVisitor)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

impl Validate for Service {
    fn validate(&self, cx: &mut Cx) {
        cx.field("spec", |cx| self.spec.validate(cx));
    }
}

impl Validate for ServiceSpec {
    fn validate(&self, cx: &mut Cx) {
        cx.field("selector", |cx| rules::labels(cx, &self.selector));
        if let Some(t) = &self.service_type
            && !SERVICE_TYPES.contains(&t.as_str())
        {
            cx.error_at(
                "type",
                format!(
                    "unknown Service type {t:?}; expected one of {}",
                    SERVICE_TYPES.join(", ")
                ),
            );
        }
        if self.is_external_name() {
            match self.external_name.as_deref() {
                None | Some("") => cx.error_at("externalName", "required for type ExternalName"),
                Some(name) => cx.check_at("externalName", rules::fqdn(name)),
            }
        } else if self.ports.is_empty() && !self.is_headless() {
            cx.error_at(
                "ports",
                "a Service needs at least one port (unless it is headless)",
            );
        }
        if let Some(ip) = &self.cluster_ip {
            cx.check_at("clusterIP", cluster_ip(ip));
        }
        cx.field("clusterIPs", |cx| {
            for (i, ip) in self.cluster_ips.iter().enumerate() {
                cx.index(i, |cx| cx.check(cluster_ip(ip)));
            }
        });
        if let (Some(ip), Some(first)) = (&self.cluster_ip, self.cluster_ips.first())
            && ip != first
        {
            cx.error_at(
                "clusterIPs",
                format!("the first entry must equal clusterIP {ip:?}"),
            );
        }

        let several = self.ports.len() > 1;
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        cx.each("ports", &self.ports, |cx, p| {
            match p.name.as_deref() {
                None | Some("") if several => cx.error_at(
                    "name",
                    "name is required when the Service has more than one port",
                ),
                None | Some("") => {}
                Some(name) => {
                    if !rules::is_dns1123_label(name) {
                        cx.error_at(
                            "name",
                            format!(
                                "port name {name:?} must be a DNS label: lower-case alphanumerics \
                                 and '-', at most 63 characters"
                            ),
                        );
                    }
                    if !names.insert(name.to_owned()) {
                        cx.error_at("name", format!("duplicate port name {name:?}"));
                    }
                }
            }
            p.validate(cx);
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            if !ports.insert((p.port, protocol.to_owned())) {
                cx.error(format!("duplicate port {}/{protocol}", p.port));
            }
        });
    }
}

impl Validate for ServicePort {
    fn validate(&self, cx: &mut Cx) {
        cx.check_at("port", rules::port(self.port));
        if let Some(p) = &self.protocol {
            cx.check_at("protocol", protocol(p));
        }
        if let Some(app) = &self.app_protocol {
            cx.check_at("appProtocol", rules::label_key(app));
        }
        match &self.target_port {
            Some(IntOrString::Int(n)) if *n != 0 => cx.check_at("targetPort", rules::port(*n)),
            Some(IntOrString::String(name)) if !name.is_empty() => {
                cx.check_at("targetPort", port_name(name))
            }
            _ => {}
        }
        if let Some(n) = self.node_port
            && n != 0
        {
            cx.check_at("nodePort", rules::port(n));
        }
    }
}

fn cluster_ip(ip: &str) -> Result<(), String> {
    if ip.is_empty() || ip == "None" {
        return Ok(());
    }
    rules::ip(ip).map_err(|e| format!("{e}; use an IP address, or \"None\" for a headless Service"))
}

/// A Kubernetes port protocol: `TCP`, `UDP` or `SCTP` (exactly so spelt).
pub(crate) fn protocol(p: &str) -> Result<(), String> {
    if matches!(p, "TCP" | "UDP" | "SCTP") {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol {p:?}; expected TCP, UDP or SCTP"
        ))
    }
}

/// A named port (Kubernetes' IANA_SVC_NAME): at most 15 lower-case alphanumerics and '-', with
/// at least one letter, no '-' at either end and no "--".
pub(crate) fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "port name {name:?} is invalid: at most 15 lower-case alphanumerics and '-', with at \
             least one letter, not starting or ending with '-' and without \"--\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::doc_errors;

    fn parse(yaml: &str) -> Service {
        crate::validate::test_support::parse(yaml)
    }

    // Bookinfo's Services, as in Istio's samples/bookinfo/platform/kube/bookinfo.yaml.
    const BOOKINFO: &[&str] = &[
        r#"
apiVersion: v1
kind: Service
metadata:
  name: details
  labels: {app: details, service: details}
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: details
"#,
        r#"
apiVersion: v1
kind: Service
metadata:
  name: productpage
  labels: {app: productpage, service: productpage}
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: productpage
"#,
    ];

    #[test]
    fn valid_examples() {
        let more = [
            // Everything a mesh reads, plus fields it does not.
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.12
  clusterIPs: [10.96.0.12]
  sessionAffinity: None
  ipFamilyPolicy: SingleStack
  selector: {app: web}
  ports:
  - {name: http-web, port: 80, targetPort: http, protocol: TCP, nodePort: 30080}
  - {name: grpc, port: 9090, targetPort: 19090, appProtocol: grpc}
  - {name: h2c, port: 8081, appProtocol: kubernetes.io/h2c}
status:
  loadBalancer: {}
"#,
            "spec:\n  clusterIP: None\n  selector: {app: db}",
            "spec:\n  type: ExternalName\n  externalName: db.example.com",
            "spec:\n  ports: [{port: 53, protocol: UDP, targetPort: 0}]",
        ];
        for yaml in BOOKINFO.iter().copied().chain(more) {
            assert_eq!(doc_errors(&parse(yaml)), [], "{yaml}");
        }
    }

    #[test]
    fn target_port_is_int_or_string() {
        let svc = parse(
            "spec:\n  ports: [{port: 80, targetPort: 8080}, {port: 81, targetPort: web}, {port: 82, targetPort: \"8082\"}]",
        );
        let targets: Vec<_> = svc
            .spec
            .ports
            .iter()
            .map(|p| p.target_port.clone())
            .collect();
        assert_eq!(
            targets,
            [
                Some(IntOrString::Int(8080)),
                Some(IntOrString::String("web".into())),
                Some(IntOrString::String("8082".into())),
            ]
        );
        let value: yaml_serde::Value = yaml_serde::from_str(
            "spec: {ports: [{port: 80, targetPort: 8080}, {port: 81, targetPort: web}]}",
        )
        .unwrap_or(yaml_serde::Value::Null);
        let from_value: Option<Service> = yaml_serde::from_value(value).ok();
        let targets: Vec<_> = from_value
            .map(|s| {
                s.spec
                    .ports
                    .into_iter()
                    .filter_map(|p| p.target_port)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            targets,
            [IntOrString::Int(8080), IntOrString::String("web".into())]
        );
        let json = serde_json::to_string(&svc.spec.ports[0]).unwrap_or_default();
        assert!(json.contains(r#""targetPort":8080"#), "{json}");
        for bad in ["[1]", "-1", "1.5", "{a: 1}"] {
            let yaml = format!("spec:\n  ports: [{{port: 80, targetPort: {bad}}}]");
            assert!(yaml_serde::from_str::<Service>(&yaml).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "spec:\n  selector: {app: x}",
                &[("spec.ports", "at least one port")],
            ),
            (
                "spec:\n  ports: [{port: 0}, {name: http, port: 70000}]",
                &[
                    (
                        "spec.ports[0].name",
                        "required when the Service has more than one port",
                    ),
                    ("spec.ports[0].port", "1..65535"),
                    ("spec.ports[1].port", "1..65535"),
                ],
            ),
            (
                "spec:\n  ports: [{name: Http, port: 80}, {name: web, port: 81}, {name: web, port: 82}]",
                &[
                    ("spec.ports[0].name", "DNS label"),
                    ("spec.ports[2].name", "duplicate port name"),
                ],
            ),
            (
                "spec:\n  ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}, {name: c, port: 80, protocol: UDP}]",
                &[("spec.ports[1]", "duplicate port 80/TCP")],
            ),
            (
                "spec:\n  ports: [{port: 80, targetPort: 70000, protocol: tcp, nodePort: 99999, appProtocol: \"-bad\"}]",
                &[
                    ("spec.ports[0].protocol", "expected TCP, UDP or SCTP"),
                    ("spec.ports[0].appProtocol", "label key"),
                    ("spec.ports[0].targetPort", "1..65535"),
                    ("spec.ports[0].nodePort", "1..65535"),
                ],
            ),
            (
                "spec:\n  ports: [{port: 80, targetPort: web_http}, {port: 81, targetPort: \"8081\"}]",
                &[
                    ("spec.ports[0].name", "required"),
                    (
                        "spec.ports[0].targetPort",
                        "port name \"web_http\" is invalid",
                    ),
                    ("spec.ports[1].name", "required"),
                    ("spec.ports[1].targetPort", "at least one letter"),
                ],
            ),
            (
                "spec:\n  type: External\n  clusterIP: 10.0.0\n  clusterIPs: [10.0.0.1]\n  ports: [{port: 80}]",
                &[
                    ("spec.type", "unknown Service type"),
                    ("spec.clusterIP", "headless"),
                    ("spec.clusterIPs", "must equal clusterIP"),
                ],
            ),
            (
                "spec:\n  type: ExternalName",
                &[("spec.externalName", "required")],
            ),
            (
                "spec:\n  type: ExternalName\n  externalName: not_a_host",
                &[("spec.externalName", "invalid")],
            ),
            (
                "spec:\n  selector: {\"app/\": x}\n  ports: [{port: 80}]",
                &[("spec.selector[app/]", "label key")],
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

    #[test]
    fn port_names() {
        for ok in ["http", "h2c", "a-b", "web80", "abcdefghijklmno"] {
            assert_eq!(port_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "80", "-a", "a-", "a--b", "A", "abcdefghijklmnop", "a_b"] {
            assert!(port_name(bad).is_err(), "{bad:?}");
        }
    }
}
