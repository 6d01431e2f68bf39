//! Distributed tracing for a proxy's HTTP listeners (`HttpListener.tracing`), from the mesh
//! config ([`crate::trace_mesh`]) and, when given, a per-proxy [`TracingOverride`] (what a
//! Telemetry resource's `tracing` selects for the proxy's workload).
//!
//! Which provider: the override's, else `defaultProviders.tracing`'s first, else the legacy
//! `defaultConfig.tracing.zipkin.address` unless `enableTracing: false` (which, as in Istio,
//! gates only that legacy path). Sampling: the override's, else
//! `defaultConfig.tracing.sampling`, else Istio's 1%.
//!
//! The collector's host is resolved here when the registry knows it (a Service or
//! ServiceEntry: its first endpoint with an IP, at the endpoint's port for the provider's
//! port), so that a collector running as a workload of a local mesh is reached at its pod
//! address; an IP address is used as is; any other name is left for the proxy to resolve.

use weft_xds::proto;

use crate::mesh_config::MeshConfig;
use crate::node::{ProxyKind, ProxyNode};
use crate::trace_mesh::{self, ExtensionProvider};
use crate::view::ConfigView;

/// What a Telemetry resource selecting a proxy says of tracing; every field unset means the
/// mesh config's. Plugged in by `attach`'s caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingOverride {
    /// Provider names (`providers[].name`); the first one is used.
    pub providers: Option<Vec<String>>,
    /// `randomSamplingPercentage`.
    pub sampling: Option<f64>,
    /// `customTags`, added to (and replacing by name) the mesh config's.
    pub custom_tags: Vec<proto::CustomTag>,
    /// `disableSpanReporting`.
    pub disable_span_reporting: Option<bool>,
}

/// Sets `tracing` on every HTTP listener of `node` (each with its span kind and service
/// name); leaves them untraced when nothing selects a provider.
pub(crate) fn attach(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    over: Option<&TracingOverride>,
    listeners: &mut [proto::Listener],
) {
    let Some(base) = tracing(node, mesh, view, over) else {
        return;
    };
    for l in listeners {
        let service_name = l
            .workload
            .as_ref()
            .map(|w| format!("{}.{}", w.canonical_service, w.namespace))
            .unwrap_or_else(|| node.name.clone());
        let inbound = node.kind == ProxyKind::Sidecar && l.name.starts_with("inbound|");
        let Some(proto::listener::Protocol::Http(h)) = &mut l.protocol else {
            continue;
        };
        let mut t = base.clone();
        t.service_name = service_name;
        // A gateway's request span is server side, and its request upstream a client span of
        // its own (Istio's gateways spawn upstream spans); a sidecar's outbound is one client
        // span, its inbound one server span.
        let gateway = node.kind == ProxyKind::Gateway;
        t.spawn_upstream_span = gateway;
        t.set_span_kind(if inbound || gateway {
            proto::tracing::SpanKind::Server
        } else {
            proto::tracing::SpanKind::Client
        });
        h.tracing = Some(t);
    }
}

/// The tracing every listener of `node` shares, or None.
fn tracing(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    over: Option<&TracingOverride>,
) -> Option<proto::Tracing> {
    let enabled = mesh.enable_tracing != Some(false);
    let legacy = mesh.proxy_tracing();
    let chosen = over
        .and_then(|o| o.providers.as_ref())
        .map(|p| p.first().cloned())
        .unwrap_or_else(|| mesh.default_providers.tracing.first().cloned());
    let (provider, host, port, max_tag) = match chosen {
        // None for an unknown name or a provider of a kind weft does not send to (the mesh
        // config's check reported it).
        Some(name) => mesh.extension_provider(&name).map(provider_of)??,
        None => {
            let address = legacy.filter(|_| enabled)?.zipkin.as_ref()?.address.clone();
            let (host, port) = address.rsplit_once(':')?;
            let port = port.parse().ok()?;
            (proto::tracing::Provider::Zipkin, host.to_owned(), port, 0)
        }
    };
    let sampling = over
        .and_then(|o| o.sampling)
        .or_else(|| legacy.and_then(|t| t.sampling))
        .unwrap_or(trace_mesh::DEFAULT_SAMPLING);
    let max_tag_length = if max_tag != 0 {
        max_tag
    } else {
        legacy.and_then(|t| t.max_path_tag_length).unwrap_or(0)
    };
    let mut custom_tags = legacy.map(custom_tags).unwrap_or_default();
    for tag in over.map(|o| o.custom_tags.as_slice()).unwrap_or_default() {
        custom_tags.retain(|t| t.tag != tag.tag);
        custom_tags.push(tag.clone());
    }
    let mut t = proto::Tracing {
        collector: collector(node, view, &host, port),
        sampling,
        max_tag_length,
        custom_tags,
        disable_reporting: over.and_then(|o| o.disable_span_reporting).unwrap_or(false),
        ..Default::default()
    };
    t.set_provider(provider);
    Some(t)
}

/// A tracing provider's kind, host, port and tag length; None for other kinds.
fn provider_of(p: &ExtensionProvider) -> Option<(proto::tracing::Provider, String, u32, u32)> {
    if let Some(z) = &p.zipkin {
        return Some((
            proto::tracing::Provider::Zipkin,
            z.service.clone(),
            z.port,
            z.max_tag_length,
        ));
    }
    let o = p.opentelemetry.as_ref()?;
    Some((
        proto::tracing::Provider::Opentelemetry,
        o.service.clone(),
        o.port,
        o.max_tag_length,
    ))
}

fn custom_tags(t: &trace_mesh::ProxyTracing) -> Vec<proto::CustomTag> {
    use proto::custom_tag::Source;
    t.custom_tags
        .iter()
        .filter_map(|(name, tag)| {
            let from = |f: &trace_mesh::FromSource| proto::CustomTagFrom {
                name: f.name.clone(),
                default_value: f.default_value.clone(),
            };
            let source = if let Some(l) = &tag.literal {
                Source::Literal(l.value.clone())
            } else if let Some(e) = &tag.environment {
                Source::Environment(from(e))
            } else {
                Source::Header(from(tag.header.as_ref()?))
            };
            Some(proto::CustomTag {
                tag: name.clone(),
                source: Some(source),
            })
        })
        .collect()
}

/// Where the proxy sends spans: `host`'s endpoint when the registry knows the host (also as
/// Kubernetes' short forms `name.namespace` and `name`), the IP as is, else `host:port` for
/// the proxy to resolve.
fn collector(node: &ProxyNode, view: &ConfigView, host: &str, port: u32) -> String {
    let host = host.split_once('/').map_or(host, |(_, h)| h);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return std::net::SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)).to_string();
    }
    let domain = &node.cluster_domain;
    let candidates = [
        host.to_owned(),
        format!("{host}.svc.{domain}"),
        format!("{host}.{}.svc.{domain}", node.namespace),
    ];
    for name in &candidates {
        for svc in view.registry().by_host(name) {
            let at = svc.endpoints.iter().find_map(|e| {
                let ip = e.address.parse::<std::net::IpAddr>().ok()?;
                let target = e.ports.get(&port).copied().unwrap_or(port);
                Some(std::net::SocketAddr::new(ip, u16::try_from(target).ok()?))
            });
            if let Some(at) = at {
                return at.to_string();
            }
        }
    }
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        crate::server::mesh_file::parse(yaml).expect("mesh config")
    }

    fn node(kind: &str) -> ProxyNode {
        let id = format!("{kind}~127.1.0.5~productpage-v1-0.default~default.svc.cluster.local");
        ProxyNode::parse_id(&id).expect("node id")
    }

    fn listeners() -> Vec<proto::Listener> {
        let http = |name: &str| proto::Listener {
            name: name.into(),
            protocol: Some(proto::listener::Protocol::Http(
                proto::HttpListener::default(),
            )),
            workload: Some(proto::WorkloadMetadata {
                canonical_service: "productpage".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        vec![
            http("outbound"),
            http("inbound|9080||"),
            proto::Listener {
                name: "inbound|3306||".into(),
                protocol: Some(proto::listener::Protocol::Tcp(proto::TcpListener::default())),
                ..Default::default()
            },
        ]
    }

    fn traced(ls: &[proto::Listener]) -> Vec<Option<proto::Tracing>> {
        ls.iter()
            .map(|l| match &l.protocol {
                Some(proto::listener::Protocol::Http(h)) => h.tracing.clone(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_traced_without_a_provider_or_with_legacy_tracing_disabled() {
        let view = ConfigView::new(Vec::new(), Vec::new());
        let mut ls = listeners();
        attach(&node("sidecar"), &mesh(""), &view, None, &mut ls);
        assert_eq!(traced(&ls), vec![None, None, None]);
        let m = mesh(
            "enableTracing: false\ndefaultConfig: {tracing: {zipkin: {address: 127.0.0.1:9411}}}",
        );
        attach(&node("sidecar"), &m, &view, None, &mut ls);
        assert_eq!(traced(&ls), vec![None, None, None]);
    }

    #[test]
    fn the_default_provider_gives_each_http_listener_its_span_kind() {
        let view = ConfigView::new(Vec::new(), Vec::new());
        let m = mesh(
            r#"
defaultProviders: {tracing: [zipkin]}
extensionProviders:
- {name: zipkin, zipkin: {service: 127.0.0.1, port: 9411, maxTagLength: 64}}
defaultConfig: {tracing: {sampling: 100, customTags: {team: {literal: {value: books}}}}}
"#,
        );
        let mut ls = listeners();
        attach(&node("sidecar"), &m, &view, None, &mut ls);
        let t = traced(&ls);
        let out = t[0].as_ref().expect("outbound traced");
        assert_eq!(out.collector, "127.0.0.1:9411");
        assert_eq!(out.provider(), proto::tracing::Provider::Zipkin);
        assert_eq!(out.span_kind(), proto::tracing::SpanKind::Client);
        assert_eq!(out.sampling, 100.0);
        assert_eq!(out.max_tag_length, 64);
        assert_eq!(out.service_name, "productpage.default");
        assert_eq!(out.custom_tags[0].tag, "team");
        let inb = t[1].as_ref().expect("inbound traced");
        assert_eq!(inb.span_kind(), proto::tracing::SpanKind::Server);
        assert!(t[2].is_none(), "TCP listeners have no spans");

        assert!(!out.spawn_upstream_span && !inb.spawn_upstream_span);
        // A gateway's request span is server side, with a client span for the upstream.
        let mut ls = listeners();
        attach(&node("router"), &m, &view, None, &mut ls);
        let gw = traced(&ls)[0].clone().unwrap();
        assert_eq!(gw.span_kind(), proto::tracing::SpanKind::Server);
        assert!(gw.spawn_upstream_span);
    }

    #[test]
    fn legacy_zipkin_address_and_default_sampling() {
        let view = ConfigView::new(Vec::new(), Vec::new());
        let m = mesh("defaultConfig: {tracing: {zipkin: {address: zipkin.example.com:9411}}}");
        let mut ls = listeners();
        attach(&node("sidecar"), &m, &view, None, &mut ls);
        let t = traced(&ls)[0].clone().unwrap();
        assert_eq!(
            t.collector, "zipkin.example.com:9411",
            "a name the proxy resolves"
        );
        assert_eq!(t.sampling, 1.0, "Istio's default 1%");
    }

    #[test]
    fn an_override_picks_the_provider_and_sampling() {
        let view = ConfigView::new(Vec::new(), Vec::new());
        let m = mesh(
            r#"
defaultProviders: {tracing: [zipkin]}
extensionProviders:
- {name: zipkin, zipkin: {service: 127.0.0.1, port: 9411}}
- {name: otel, opentelemetry: {service: 127.0.0.2, port: 4317, grpc: {}}}
"#,
        );
        let over = TracingOverride {
            providers: Some(vec!["otel".into()]),
            sampling: Some(25.0),
            disable_span_reporting: Some(true),
            ..Default::default()
        };
        let mut ls = listeners();
        attach(&node("sidecar"), &m, &view, Some(&over), &mut ls);
        let t = traced(&ls)[0].clone().unwrap();
        assert_eq!(t.provider(), proto::tracing::Provider::Opentelemetry);
        assert_eq!(t.collector, "127.0.0.2:4317");
        assert_eq!(t.sampling, 25.0);
        assert!(t.disable_reporting);
    }

    #[test]
    fn a_collector_in_the_registry_is_reached_at_its_endpoint() {
        let loaded = weft_api::load_str(
            "test.yaml",
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zipkin, namespace: istio-system}
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9411, name: http-query, protocol: HTTP}]
  endpoints: [{address: 127.5.0.3, ports: {http-query: 19411}}]
"#,
        );
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        let view = ConfigView::new(loaded.resources, Vec::new());
        let n = node("sidecar");
        for host in [
            "zipkin.istio-system.svc.cluster.local",
            "istio-system/zipkin.istio-system.svc.cluster.local",
            "zipkin.istio-system",
        ] {
            assert_eq!(
                collector(&n, &view, host, 9411),
                "127.5.0.3:19411",
                "{host}"
            );
        }
        assert_eq!(
            collector(&n, &view, "other.example.com", 9411),
            "other.example.com:9411"
        );
        assert_eq!(collector(&n, &view, "::1", 9411), "[::1]:9411");
    }
}
