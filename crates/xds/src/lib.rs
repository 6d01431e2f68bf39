//! weft-xds: the proxy configuration API and its xDS transport.
//!
//! `config::v1` holds the generated types of `proto/weft/config/v1/config.proto`, with serde
//! in the proto3 JSON mapping: field names in camelCase (snake_case also accepted), enums by
//! name, durations as `"1.5s"`. A static bootstrap file is that JSON, or the same as YAML.
//!
//! The transport is Envoy's delta (incremental) Aggregated Discovery Service, on Envoy's own
//! wire types (`envoy.service.discovery.v3`), carrying weft's resources as
//! `google.protobuf.Any`:
//!
//! - [`resource`]: type URLs, packing, content-hash versions and [`resource::ProxyResources`],
//!   the set of resources one proxy should have.
//! - [`server`]: the gRPC service; a control plane implements [`server::ResourceSource`]
//!   (one `watch` channel of `ProxyResources` per proxy) and reads
//!   [`server::XdsServer::status`] for `weft proxy-status`.
//! - [`client`]: the proxy's side; the proxy implements [`client::ConfigHandler`] and gets
//!   ACK/NACK, reconnects with backoff and a readiness signal.
//!
//! The transport does not know what a Listener or a Cluster means: it moves named, versioned
//! `Any`s and reports what was accepted.

pub mod config {
    pub mod v1 {
        // Generated code: lints are the generator's business.
        #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
        include!(concat!(env!("OUT_DIR"), "/weft.config.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/weft.config.v1.serde.rs"));
    }
}

pub use config::v1 as proto;

/// Every label of Istio's standard metrics, in the order weft-proxy writes them: what
/// `ListenerStats.overrides[].removed_labels` may name.
pub const STANDARD_METRIC_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

pub mod access_log_format;
/// The OpenTelemetry protocol's trace types (vendored `opentelemetry/proto`), what the proxy's
/// OTLP/gRPC span exporter sends. Nested as their packages so the generated paths resolve.
// Generated code whose comments hold examples that are not Rust: no doctests from it.
#[cfg(not(doctest))]
pub mod opentelemetry {
    pub mod proto {
        #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
        pub mod common {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.common.v1.rs"
                ));
            }
        }
        pub mod resource {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.resource.v1.rs"
                ));
            }
        }
        pub mod trace {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.trace.v1.rs"));
            }
        }
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/opentelemetry.proto.collector.trace.v1.rs"
                    ));
                }
            }
        }
    }
}

pub mod ca;
pub mod client;
pub mod resource;
pub mod server;

/// Envoy's xDS wire types this transport speaks (`DeltaDiscoveryRequest`, `Node`, `Any`, ...).
pub mod envoy {
    pub use envoy_types::pb::envoy::config::core::v3::Node;
    pub use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    pub use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
        aggregated_discovery_service_client, aggregated_discovery_service_server,
    };
    pub use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
    pub use envoy_types::pb::google::protobuf::{Any, Struct, Value};
    pub use envoy_types::pb::google::rpc::Status as RpcStatus;
}

/// Well-known protobuf types (Duration, ...) with their JSON mapping.
pub use pbjson_types as proto_types;

#[cfg(test)]
mod tests {
    use super::proto::*;

    #[test]
    fn bootstrap_reads_from_yaml() {
        let yaml = r#"
node: {id: "sidecar~127.0.0.2~reviews-v1.default~default.svc.cluster.local", namespace: default}
listeners:
- name: outbound
  address: 127.0.0.2:15001
  http: {routeConfig: outbound, explicitProxy: true}
routeConfigs:
- name: outbound
  virtualHosts:
  - name: reviews
    domains: ["reviews.default.svc.cluster.local"]
    routes:
    - matches: [{headers: {end-user: {exact: jason}}}]
      route: {clusters: [{cluster: "outbound|9080|v2|reviews.default.svc.cluster.local"}]}
    - route: {clusters: [{cluster: v1, weight: 90}, {cluster: v3, weight: 10}]}
clusters:
- name: "outbound|9080|v2|reviews.default.svc.cluster.local"
  lbPolicy: LEAST_REQUEST
  connectTimeout: 1.5s
  endpoints: [{address: 127.0.0.3:9080, labels: {version: v2}}]
"#;
        let b: Bootstrap = yaml_serde::from_str(yaml).expect("bootstrap parses");
        assert_eq!(b.listeners.len(), 1);
        match &b.listeners[0].protocol {
            Some(listener::Protocol::Http(h)) => assert!(h.explicit_proxy),
            other => panic!("expected http, got {other:?}"),
        }
        let vh = &b.route_configs[0].virtual_hosts[0];
        let m = &vh.routes[0].matches[0].headers["end-user"];
        assert_eq!(
            m.match_type,
            Some(string_match::MatchType::Exact("jason".into()))
        );
        let c = &b.clusters[0];
        assert_eq!(c.lb_policy(), LbPolicy::LeastRequest);
        let t = c.connect_timeout.as_ref().expect("timeout");
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
        // And back: the JSON mapping round-trips.
        let json = serde_json::to_string(&b).unwrap();
        let again: Bootstrap = serde_json::from_str(&json).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = yaml_serde::from_str::<Cluster>("name: a\nlbPolicyy: RANDOM\n").unwrap_err();
        assert!(err.to_string().contains("lbPolicyy"), "{err}");
    }
}
