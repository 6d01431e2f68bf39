//! One version of the mesh's configuration, indexed once and shared by every proxy's
//! translation: the resources in force and the service registry built from them.

use std::net::IpAddr;

use weft_api::networking::{DestinationRule, Gateway, Sidecar, VirtualService};
use weft_api::{Resource, Spec};

use crate::node::ProxyNode;
use crate::registry::{Registry, WorkloadInstance};
use crate::unsupported::Unsupported;

/// Resources + registry: the input of [`crate::translate`]. Immutable once built.
#[derive(Debug)]
pub struct ConfigView {
    resources: Vec<Resource>,
    registry: Registry,
}

impl ConfigView {
    /// Indexes `resources` (the validated resources in force, e.g. `Loaded::effective()`) and
    /// builds the registry with the running `instances`.
    pub fn new(resources: Vec<Resource>, instances: Vec<WorkloadInstance>) -> ConfigView {
        let registry = Registry::build(&resources, instances);
        ConfigView {
            resources,
            registry,
        }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What the registry could not represent; independent of any proxy, so reported once.
    pub fn unsupported(&self) -> &[Unsupported] {
        self.registry.unsupported()
    }

    /// The workload instance a proxy fronts: by namespace and name, else by address.
    pub fn instance_of(&self, node: &ProxyNode) -> Option<&WorkloadInstance> {
        let instances = self.registry.instances();
        instances
            .iter()
            .find(|i| i.namespace == node.namespace && i.name == node.name)
            .or_else(|| instances.iter().find(|i| i.ip == node.ip))
    }

    /// Fills in what a node id does not carry (labels, service account, locality) from the
    /// instance the proxy fronts, when the registry knows it.
    pub fn complete_node(&self, node: &mut ProxyNode) {
        if let Some(inst) = self.instance_of(node) {
            if node.labels.is_empty() {
                node.labels = inst.labels.clone();
            }
            if node.service_account.is_empty() || node.service_account == "default" {
                node.service_account = inst.service_account.clone();
            }
            if node.locality.is_empty() {
                node.locality = inst.locality();
            }
        }
    }

    /// The instance at `ip`, if any.
    pub fn instance_at(&self, ip: IpAddr) -> Option<&WorkloadInstance> {
        self.registry.instances().iter().find(|i| i.ip == ip)
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = (&Resource, &VirtualService)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
    }

    pub fn destination_rules(&self) -> impl Iterator<Item = (&Resource, &DestinationRule)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::DestinationRule(dr) => Some((r, dr.as_ref())),
            _ => None,
        })
    }

    pub fn gateways(&self) -> impl Iterator<Item = (&Resource, &Gateway)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
    }

    pub fn sidecars(&self) -> impl Iterator<Item = (&Resource, &Sidecar)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::Sidecar(s) => Some((r, s.as_ref())),
            _ => None,
        })
    }
}
