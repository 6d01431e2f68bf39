//! networking.istio.io (v1alpha3, v1beta1, v1: one schema): Gateway, VirtualService,
//! DestinationRule, ServiceEntry, Sidecar, WorkloadEntry. Each type here is the resource's
//! `spec`; validation runs with the path rooted at `spec`.

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
pub use workload_entry::WorkloadEntry;
