//! The tracing part of Istio's MeshConfig: `extensionProviders` (zipkin, opentelemetry),
//! `defaultProviders.tracing`, `enableTracing` and `defaultConfig.tracing` (sampling, custom
//! tags, the legacy `zipkin.address`), and their checks. What a proxy gets of them is
//! [`crate::translate::trace_config`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_api::validate::Cx;

use crate::mesh_config::MeshConfig;

// The providers are the mesh config's (shared with access logging); the tracing kinds are
// `TracingProvider`s.
pub use crate::mesh_config::{
    DefaultProviders, ExtensionProvider, TracingProvider as ZipkinProvider,
    TracingProvider as OpenTelemetryProvider,
};

/// Istio's `ProxyConfig.tracing` (`meshConfig.defaultConfig.tracing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyTracing {
    /// Percentage of requests sampled where a trace starts, 0.0 to 100.0. Istio's default: 1.
    pub sampling: Option<f64>,
    /// The legacy Zipkin collector (`zipkin: {address: HOST:PORT}`): used when no
    /// `defaultProviders.tracing` names a provider.
    pub zipkin: Option<LegacyZipkin>,
    pub custom_tags: BTreeMap<String, CustomTag>,
    pub max_path_tag_length: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LegacyZipkin {
    pub address: String,
}

/// Istio's `Tracing.CustomTag`: one of a literal, an environment variable or a request header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomTag {
    pub literal: Option<Literal>,
    pub environment: Option<FromSource>,
    pub header: Option<FromSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Literal {
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FromSource {
    pub name: String,
    pub default_value: String,
}

/// Istio's default `defaultConfig.tracing.sampling`: 1%.
pub const DEFAULT_SAMPLING: f64 = 1.0;

impl MeshConfig {
    /// The extension provider named `name`.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// `defaultConfig.tracing`, when set.
    pub fn proxy_tracing(&self) -> Option<&ProxyTracing> {
        self.default_config.tracing.as_ref()
    }
}

/// Whether `host` is a collector host weft can use: an IP address or a DNS name, optionally
/// `NAMESPACE/` first as Istio allows.
fn host_ok(host: &str) -> bool {
    let host = host.split_once('/').map_or(host, |(_, h)| h);
    host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

fn check_service(cx: &mut Cx, service: &str, port: u32) {
    if !host_ok(service) {
        cx.error_at(
            "service",
            format!("{service:?} is not a host (a service's FQDN, an IP address or a DNS name)"),
        );
    }
    if !(1..=65535).contains(&port) {
        cx.error_at("port", format!("{port} is not a port (1-65535)"));
    }
}

/// The checks of the tracing fields, each finding with its field path. Errors keep the mesh
/// config from being used (the previous one stays in force).
pub(crate) fn check(mesh: &MeshConfig, cx: &mut Cx) {
    let mut seen = std::collections::BTreeSet::new();
    cx.each("extensionProviders", &mesh.extension_providers, |cx, p| {
        if p.name.is_empty() {
            cx.error_at("name", "a provider needs a name");
        } else if !seen.insert(p.name.clone()) {
            cx.error_at("name", format!("{:?} is defined more than once", p.name));
        }
        cx.opt("zipkin", &p.zipkin, |cx, z| {
            check_service(cx, &z.service, z.port)
        });
        cx.opt("opentelemetry", &p.opentelemetry, |cx, o| {
            check_service(cx, &o.service, o.port);
            if o.http.is_some() {
                cx.error_at(
                    "http",
                    "OTLP over HTTP is not supported by weft; use `grpc` (OTLP/gRPC)",
                );
            }
        });
    });
    cx.field("defaultProviders", |cx| {
        cx.each("tracing", &mesh.default_providers.tracing, |cx, name| {
            match mesh.extension_provider(name) {
                None => cx.error(format!(
                    "no extensionProviders entry is named {name:?} (known: {})",
                    known(mesh)
                )),
                Some(p) if p.zipkin.is_none() && p.opentelemetry.is_none() => cx.warn(format!(
                    "provider {name:?} is not a tracing provider weft supports (zipkin, opentelemetry): no spans are sent"
                )),
                Some(_) => {}
            }
        });
        if mesh.default_providers.tracing.len() > 1 {
            cx.field("tracing", |cx| {
                cx.warn("only the first tracing provider is used (as Istio: one per proxy)");
            });
        }
    });
    cx.field("defaultConfig", |cx| {
        cx.opt("tracing", &mesh.default_config.tracing, |cx, t| {
            cx.opt("sampling", &t.sampling, |cx, s| {
                if !(0.0..=100.0).contains(s) {
                    cx.error(format!("{s} is not a percentage from 0.0 to 100.0"));
                }
            });
            cx.opt("zipkin", &t.zipkin, |cx, z| {
                let ok = z
                    .address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| host_ok(h) && p.parse::<u16>().is_ok_and(|p| p != 0));
                if !ok {
                    cx.error_at("address", format!("{:?} is not HOST:PORT", z.address));
                }
            });
            cx.field("customTags", |cx| {
                for (name, tag) in &t.custom_tags {
                    cx.field(name, |cx| check_tag(cx, tag));
                }
            });
        });
    });
}

fn known(mesh: &MeshConfig) -> String {
    let names: Vec<&str> = mesh
        .extension_providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn check_tag(cx: &mut Cx, tag: &CustomTag) {
    let n = usize::from(tag.literal.is_some())
        + usize::from(tag.environment.is_some())
        + usize::from(tag.header.is_some());
    if n != 1 {
        cx.error("exactly one of literal, environment or header is required");
    }
    cx.opt("header", &tag.header, |cx, h| {
        if http_header_name_ok(&h.name) {
            return;
        }
        cx.error_at("name", format!("{:?} is not a header name", h.name));
    });
    cx.opt("environment", &tag.environment, |cx, e| {
        if e.name.is_empty() {
            cx.error_at("name", "an environment variable name is required");
        }
    });
}

fn http_header_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<MeshConfig, String> {
        crate::server::mesh_file::parse(yaml)
    }

    #[test]
    fn tracing_providers_are_read_as_istio_writes_them() {
        let mesh = parse(
            r#"
enableTracing: true
defaultProviders:
  tracing: [zipkin]
  accessLogging: [envoy]
extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, maxTagLength: 100}
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, grpc: {}}
- name: envoy
  envoyFileAccessLog: {path: /dev/stdout}
defaultConfig:
  tracing:
    sampling: 50
    maxPathTagLength: 99
    customTags:
      cluster: {literal: {value: east}}
      user: {header: {name: end-user, defaultValue: anonymous}}
"#,
        )
        .expect("parses");
        let z = mesh
            .extension_provider("zipkin")
            .unwrap()
            .zipkin
            .as_ref()
            .unwrap();
        assert_eq!(
            (z.service.as_str(), z.port, z.max_tag_length),
            ("zipkin.istio-system.svc.cluster.local", 9411, 100)
        );
        assert!(
            mesh.extension_provider("otel")
                .unwrap()
                .opentelemetry
                .is_some()
        );
        assert!(
            mesh.extension_provider("envoy")
                .unwrap()
                .envoy_file_access_log
                .is_some()
        );
        let t = mesh.proxy_tracing().unwrap();
        assert_eq!(t.sampling, Some(50.0));
        assert_eq!(t.custom_tags.len(), 2);
    }

    #[test]
    fn bad_tracing_config_is_an_error_naming_the_field() {
        for (yaml, field) in [
            (
                "defaultProviders: {tracing: [nope]}",
                "defaultProviders.tracing[0]",
            ),
            (
                "extensionProviders: [{name: z, zipkin: {service: 'bad host', port: 9411}}]",
                "extensionProviders[0].zipkin.service",
            ),
            (
                "extensionProviders: [{name: z, zipkin: {service: zipkin, port: 0}}]",
                "extensionProviders[0].zipkin.port",
            ),
            (
                "extensionProviders: [{name: o, opentelemetry: {service: otel, port: 4318, http: {path: /v1/traces}}}]",
                "extensionProviders[0].opentelemetry.http",
            ),
            (
                "defaultConfig: {tracing: {sampling: 150}}",
                "defaultConfig.tracing.sampling",
            ),
            (
                "defaultConfig: {tracing: {zipkin: {address: zipkin}}}",
                "defaultConfig.tracing.zipkin.address",
            ),
            (
                "defaultConfig: {tracing: {customTags: {t: {header: {name: 'a b'}}}}}",
                "defaultConfig.tracing.customTags.t.header.name",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(field), "{yaml}: {e}");
        }
    }
}
