//! The Kubernetes kinds a mesh reads. Unlike Istio's kinds, whose whole schema weft owns,
//! these keep only what a mesh needs and accept (ignore) every other valid field: a real
//! manifest with volumes, probes and resources loads unchanged. Each type here is the whole
//! document; validation runs with the path rooted at the document (`spec.ports[0].port`).

pub mod endpoint_slice;
pub mod namespace;
pub mod secret;
pub mod service;
pub mod workload;

pub use endpoint_slice::EndpointSlice;
pub use namespace::{Namespace, ServiceAccount};
pub use secret::Secret;
pub use service::Service;
pub use workload::{Deployment, Pod};
