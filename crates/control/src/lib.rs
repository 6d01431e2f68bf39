//! weft-control: the control plane's core. This part is pure: resources and running workload
//! instances in, per-proxy configuration out, no I/O.
//!
//! ```text
//! Vec<Resource> + Vec<WorkloadInstance>
//!        |  ConfigView::new: registry (services, ports, protocols, endpoints), indexes
//!        v
//! ConfigView  +  MeshConfig  +  ProxyNode (who asks)
//!        |  translate::sidecar / translate::gateway
//!        v
//! ProxyResources { listeners, route_configs, clusters, unsupported }   (weft_xds::proto)
//! ```
//!
//! [`server`] is the part with I/O (tokio): the config store, the instances file, push over
//! xDS and the monitoring endpoints, run by `weft control-plane`.

pub mod ca;
pub mod dns;
pub mod host;
pub mod jwks;
pub mod mesh_config;
pub mod node;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod trace_mesh;
pub mod translate;
pub mod unsupported;
pub mod view;

pub use mesh_config::MeshConfig;
pub use node::{NodeIdError, ProxyKind, ProxyNode};
pub use registry::{Registry, WorkloadInstance};
pub use translate::{ProxyResources, gateway, sidecar};
pub use unsupported::Unsupported;
pub use view::ConfigView;

/// The resources of any proxy: [`sidecar`] or [`gateway`] by its kind.
pub fn translate(node: &ProxyNode, mesh: &MeshConfig, view: &ConfigView) -> ProxyResources {
    match node.kind {
        ProxyKind::Sidecar => sidecar(node, mesh, view),
        ProxyKind::Gateway => gateway(node, mesh, view),
    }
}
