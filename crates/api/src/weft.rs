//! weft's own kinds (apiVersion `weft.dev/v1alpha1`).
//!
//! A `Workload` is a program weft runs, with a sidecar in front of it: the local counterpart of
//! a Kubernetes Deployment. Its labels (`app`, `version`) go in `metadata.labels`, where
//! Services, DestinationRule subsets and policies select it, exactly as they select Pods. Its
//! identity is its namespace and service account.
//!
//! ```yaml
//! apiVersion: weft.dev/v1alpha1
//! kind: Workload
//! metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
//! spec:
//!   command: ["bookinfo", "reviews"]
//!   serviceAccount: bookinfo-reviews
//!   ports: [{name: http, port: 9080, protocol: HTTP}]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::validate::{Cx, Validate, rules};

/// The `spec` of a Workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The program and its arguments, as an argument vector: it is run directly, not through a
    /// shell. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables set for the program.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The directory the program starts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The service account the workload runs as, which makes its mesh identity
    /// (`<trust domain>/ns/<namespace>/sa/<serviceAccount>`, what AuthorizationPolicy
    /// `principals` match). Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The ports the program listens on. A Service selecting the workload forwards to them, by
    /// number or by name (`targetPort: http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadPort>,
    /// How many copies of the program to run. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

impl WorkloadSpec {
    /// The service account, defaulted.
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or("default")
    }

    /// The number of replicas, defaulted.
    pub fn replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }
}

/// A port the program listens on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadPort {
    /// Required, unique in the workload: a DNS label such as `http` or `grpc-api`.
    #[serde(default)]
    pub name: String,
    /// Required, unique in the workload: `1..65535`.
    #[serde(default)]
    pub port: u32,
    /// What the program speaks on this port, which decides how the sidecar handles the
    /// traffic. Default `HTTP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A port's protocol, spelt as Istio spells it (upper case; lower case is accepted too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 when the client asks for it).
    #[default]
    #[serde(rename = "HTTP", alias = "http")]
    Http,
    /// HTTP/2 only, including cleartext HTTP/2 (h2c).
    #[serde(rename = "HTTP2", alias = "http2")]
    Http2,
    /// gRPC (HTTP/2).
    #[serde(rename = "GRPC", alias = "grpc")]
    Grpc,
    /// HTTP over TLS the program terminates itself; the mesh sees only TLS.
    #[serde(rename = "HTTPS", alias = "https")]
    Https,
    /// TLS the program terminates itself; routed by SNI.
    #[serde(rename = "TLS", alias = "tls")]
    Tls,
    /// Opaque TCP.
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
}

impl Protocol {
    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
        }
    }

    /// True when the sidecar sees HTTP requests (and so can route, retry and authorize on them).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

impl Validate for WorkloadSpec {
    fn validate(&self, cx: &mut Cx) {
        match self.command.first() {
            None => cx.error_at(
                "command",
                "`command` is required: the program to run and its arguments, e.g. [\"bookinfo\", \"reviews\"]",
            ),
            Some(program) if program.trim().is_empty() => {
                cx.field("command", |cx| {
                    cx.index(0, |cx| cx.error("the program name must not be empty"))
                })
            }
            Some(_) => {}
        }
        cx.field("env", |cx| {
            for name in self.env.keys() {
                if !is_env_name(name) {
                    cx.key(name, |cx| {
                        cx.error(format!(
                            "{name:?} is not a valid environment variable name: letters, digits \
                             and '_', not starting with a digit"
                        ))
                    });
                }
            }
        });
        if let Some(dir) = &self.working_dir
            && dir.is_empty()
        {
            cx.error_at(
                "workingDir",
                "workingDir must not be empty; omit it instead",
            );
        }
        if let Some(sa) = &self.service_account
            && !rules::is_dns1123_label(sa)
        {
            cx.error_at(
                "serviceAccount",
                format!(
                    "{sa:?} is not a valid service account name: lower-case alphanumerics and \
                     '-', starting and ending with an alphanumeric, at most 63 characters"
                ),
            );
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        cx.each("ports", &self.ports, |cx, p| {
            if p.name.is_empty() {
                cx.error_at("name", "port name is required, e.g. `http`");
            } else if !rules::is_dns1123_label(&p.name) {
                cx.error_at(
                    "name",
                    format!(
                        "port name {:?} must be a DNS label: lower-case alphanumerics and '-', \
                         at most 63 characters",
                        p.name
                    ),
                );
            } else if !names.insert(p.name.clone()) {
                cx.error_at("name", format!("duplicate port name {:?}", p.name));
            }
            match rules::port(p.port) {
                Err(e) => cx.error_at("port", e),
                Ok(()) if !numbers.insert(p.port) => {
                    cx.error_at("port", format!("port {} is listed twice", p.port))
                }
                Ok(()) => {}
            }
        });
    }
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::errors;

    fn parse(yaml: &str) -> WorkloadSpec {
        crate::validate::test_support::parse(yaml)
    }

    #[test]
    fn valid_examples() {
        let reviews = parse(
            "command: [\"bookinfo\", \"reviews\"]\nserviceAccount: bookinfo-reviews\nports: [{name: http, port: 9080, protocol: HTTP}]",
        );
        assert_eq!(errors(&reviews), []);
        assert_eq!(reviews.service_account(), "bookinfo-reviews");
        assert_eq!(reviews.replicas(), 1);
        assert_eq!(reviews.ports[0].protocol, Protocol::Http);

        let full = parse(
            r#"
command: [./bin/server, --listen, "0.0.0.0:8080"]
workingDir: /srv/app
env: {RUST_LOG: info, _PRIVATE: "1", PORT: "8080"}
replicas: 3
ports:
- {name: http, port: 8080}
- {name: grpc-api, port: 9090, protocol: GRPC}
- {name: admin, port: 9443, protocol: tls}
- {name: db, port: 5432, protocol: TCP}
"#,
        );
        assert_eq!(errors(&full), []);
        assert_eq!(full.service_account(), "default");
        assert_eq!(full.replicas(), 3);
        let protocols: Vec<Protocol> = full.ports.iter().map(|p| p.protocol).collect();
        assert_eq!(
            protocols,
            [Protocol::Http, Protocol::Grpc, Protocol::Tls, Protocol::Tcp]
        );
        assert_eq!(
            errors(&parse("command: [sleep, infinity]\nreplicas: 0")),
            []
        );
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "ports: [{name: http, port: 80}]",
                &[("spec.command", "`command` is required")],
            ),
            ("command: []", &[("spec.command", "required")]),
            (
                "command: [\"\", x]",
                &[("spec.command[0]", "must not be empty")],
            ),
            (
                "command: [a]\nenv: {\"1ST\": x, \"MY-VAR\": y, \"\": z, OK_1: w}",
                &[
                    ("spec.env[]", "not a valid environment variable name"),
                    ("spec.env[1ST]", "not starting with a digit"),
                    ("spec.env[MY-VAR]", "letters, digits and '_'"),
                ],
            ),
            (
                "command: [a]\nworkingDir: \"\"",
                &[("spec.workingDir", "must not be empty")],
            ),
            (
                "command: [a]\nserviceAccount: Bookinfo_Reviews",
                &[("spec.serviceAccount", "not a valid service account")],
            ),
            (
                "command: [a]\nserviceAccount: bookinfo.reviews",
                &[("spec.serviceAccount", "not a valid service account")],
            ),
            (
                "command: [a]\nports: [{port: 80}, {name: HTTP, port: 0}, {name: web, port: 70000}, {name: web, port: 80}]",
                &[
                    ("spec.ports[0].name", "required"),
                    ("spec.ports[1].name", "DNS label"),
                    ("spec.ports[1].port", "1..65535"),
                    ("spec.ports[2].port", "1..65535"),
                    ("spec.ports[3].name", "duplicate port name"),
                    ("spec.ports[3].port", "listed twice"),
                ],
            ),
        ];
        for (yaml, want) in cases {
            let got = errors(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}: {msg}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }

    #[test]
    fn schema_errors() {
        let cases = [
            ("command: [a]\nimage: nginx", "unknown field"),
            (
                "command: [a]\nports: [{name: http, port: 80, protocol: UDP}]",
                "unknown variant",
            ),
            (
                "command: [a]\nports: [{name: http, containerPort: 80}]",
                "unknown field",
            ),
            ("command: bookinfo reviews", "invalid type"),
            ("command: [a]\nreplicas: -1", "expected u32"),
        ];
        for (yaml, want) in cases {
            match yaml_serde::from_str::<WorkloadSpec>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }

    #[test]
    fn round_trips() {
        let spec = parse("command: [a]\nports: [{name: http, port: 80, protocol: grpc}]");
        let yaml = yaml_serde::to_string(&spec).unwrap_or_default();
        assert!(yaml.contains("protocol: GRPC"), "{yaml}");
        assert_eq!(parse(&yaml), spec);
    }
}
