//! Translation: a config version + one proxy's identity -> that proxy's listeners, route
//! configurations and clusters. Pure functions, no I/O: what istiod's `pilot/pkg/networking/core`
//! does for Envoy, for weft's proxy API.
//!
//! ```text
//! sidecar: scope (Sidecar egress hosts, exportTo) -> outbound listener `outbound` (explicit
//!          HTTP proxy) -> route config `outbound`: a virtual host per (service host, port),
//!          from VirtualServices bound to `mesh` (delegates merged into their roots), else a
//!          default route; `*` by the outbound traffic policy -> clusters per service port
//!          and DestinationRule subset;
//!          inbound listeners `inbound|PORT` -> cluster `inbound|PORT||` (the application)
//! gateway: Gateway servers selecting the proxy -> a listener per port -> route config
//!          `http.PORT` from VirtualServices bound to the Gateway, hosts intersected
//! ```
//!
//! What the proxy API cannot express yet is reported in [`ProxyResources::unsupported`].

pub mod capture;
mod circuit_breaking;
mod cluster;
mod cors;
mod delegate;
pub mod dns;
mod gateway;
mod http;
mod key;
mod locality;
pub mod names;
pub mod peer_auth;
mod route_policy;
mod scope;
mod security;
mod sidecar;
pub mod telemetry;
pub mod trace_config;
mod workload_meta;

use weft_api::Resource;
use weft_xds::proto;

pub use gateway::gateway;
pub use key::{OutboundKey, selector_label_keys};
pub use sidecar::{sidecar, sidecar_outbound, sidecar_own, split_outbound};
pub use trace_config::TracingOverride;

use crate::node::ProxyNode;
use crate::unsupported::Unsupported;

/// Everything one proxy runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub listeners: Vec<proto::Listener>,
    pub route_configs: Vec<proto::RouteConfiguration>,
    pub clusters: Vec<proto::Cluster>,
    /// Key material the listeners name (a gateway's credentials): sent only to this proxy.
    pub secrets: Vec<proto::Secret>,
    /// Fields of the input the resources above do not carry: log them, they change behaviour.
    pub unsupported: Vec<Unsupported>,
}

impl ProxyResources {
    /// The same resources as a static bootstrap (what `weft-proxy --config` reads), for
    /// `weft proxy-config` and for running a proxy without xDS.
    pub fn bootstrap(&self, node: &ProxyNode) -> proto::Bootstrap {
        proto::Bootstrap {
            node: Some(proto::Node {
                id: node.id(),
                namespace: node.namespace.clone(),
                cluster_domain: node.cluster_domain.clone(),
                labels: node
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            listeners: self.listeners.clone(),
            route_configs: self.route_configs.clone(),
            clusters: self.clusters.clone(),
            secrets: self.secrets.clone(),
            ..Default::default()
        }
    }
}

/// Unsupported fields met while translating, reported once each.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Unsupported>);

impl Notes {
    pub(crate) fn add(
        &mut self,
        resource: Option<&Resource>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.0.push(Unsupported::new(resource, field, reason));
    }

    /// Sorted by resource and field, duplicates (one rule applied to many clusters) removed.
    pub(crate) fn finish(mut self) -> Vec<Unsupported> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}

/// A proto Duration from one of Istio's.
pub(crate) fn duration(d: &weft_api::Duration) -> Option<weft_xds::proto_types::Duration> {
    let d = d.get().ok()?;
    Some(weft_xds::proto_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}
