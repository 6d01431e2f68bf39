//! One version of the mesh's configuration, indexed once and shared by every proxy's
//! translation: the resources in force and the service registry built from them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use weft_api::kube::Secret;
use weft_api::networking::{DestinationRule, Gateway, Sidecar, VirtualService};
use weft_api::{Resource, Spec};

use crate::dns::DnsTable;
use crate::node::ProxyNode;
use crate::registry::{Endpoint, Registry, Service, WorkloadInstance};
use crate::unsupported::Unsupported;

/// Resources + registry: the input of [`crate::translate`]. Immutable once built.
#[derive(Debug)]
pub struct ConfigView {
    resources: Vec<Resource>,
    registry: Registry,
    /// Instance index by (namespace, name), and the first by address: every proxy of a
    /// push looks its own up.
    instance_by_name: HashMap<(String, String), usize>,
    instance_by_ip: HashMap<IpAddr, usize>,
    /// (service, endpoint) indexes by endpoint address, in registry order.
    endpoints_by_address: HashMap<String, Vec<(usize, usize)>>,
    /// What the registry's DNS names resolved to ([`crate::dns`]).
    dns: Arc<DnsTable>,
    /// The keys fetched from RequestAuthentications' jwksUri ([`crate::jwks`]).
    jwks: Arc<crate::jwks::JwksTable>,
    /// VirtualServices by (namespace, name), as indexes into `resources`: root VirtualServices
    /// look their delegates up by name.
    virtual_service_by_name: HashMap<(String, String), usize>,
    /// Secrets by (namespace, name): gateways look their credentials up by name.
    secret_by_name: HashMap<(String, String), usize>,
    /// What the registry could not represent.
    unsupported: Vec<Unsupported>,
}

impl ConfigView {
    /// Indexes `resources` (the validated resources in force, e.g. `Loaded::effective()`) and
    /// builds the registry with the running `instances`.
    pub fn new(resources: Vec<Resource>, instances: Vec<WorkloadInstance>) -> ConfigView {
        let registry = Registry::build(&resources, instances);
        let mut instance_by_name = HashMap::new();
        let mut instance_by_ip = HashMap::new();
        for (i, inst) in registry.instances().iter().enumerate() {
            instance_by_name
                .entry((inst.namespace.clone(), inst.name.clone()))
                .or_insert(i);
            instance_by_ip.entry(inst.ip).or_insert(i);
        }
        let mut endpoints_by_address: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (s, svc) in registry.services().iter().enumerate() {
            for (e, ep) in svc.endpoints.iter().enumerate() {
                endpoints_by_address
                    .entry(ep.address.clone())
                    .or_default()
                    .push((s, e));
            }
        }
        let mut virtual_service_by_name = HashMap::new();
        let mut secret_by_name = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            let index = match r.spec {
                Spec::VirtualService(_) => &mut virtual_service_by_name,
                Spec::Secret(_) => &mut secret_by_name,
                _ => continue,
            };
            index
                .entry((r.namespace().to_owned(), r.name().to_owned()))
                .or_insert(i);
        }
        let mut unsupported = registry.unsupported().to_vec();
        // Telemetry tracing and metrics are read but not applied yet: never silently.
        unsupported.extend(crate::translate::telemetry::not_applied(&resources));
        ConfigView {
            unsupported,
            secret_by_name,
            virtual_service_by_name,
            resources,
            registry,
            instance_by_name,
            instance_by_ip,
            endpoints_by_address,
            dns: Arc::default(),
            jwks: Arc::default(),
        }
    }

    /// This view with the answers of the DNS names its services use.
    pub fn with_dns(mut self, dns: Arc<DnsTable>) -> ConfigView {
        self.dns = dns;
        self
    }

    pub fn with_jwks(mut self, jwks: Arc<crate::jwks::JwksTable>) -> ConfigView {
        self.jwks = jwks;
        self
    }

    pub fn jwks(&self) -> &crate::jwks::JwksTable {
        &self.jwks
    }

    pub fn jwks_table(&self) -> Arc<crate::jwks::JwksTable> {
        self.jwks.clone()
    }

    pub fn dns(&self) -> &DnsTable {
        &self.dns
    }

    pub fn dns_table(&self) -> Arc<DnsTable> {
        self.dns.clone()
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What the registry could not represent; independent of any proxy, so reported once.
    pub fn unsupported(&self) -> &[Unsupported] {
        &self.unsupported
    }

    /// The workload instance a proxy fronts: by namespace and name, else by address.
    pub fn instance_of(&self, node: &ProxyNode) -> Option<&WorkloadInstance> {
        let instances = self.registry.instances();
        self.instance_by_name
            .get(&(node.namespace.clone(), node.name.clone()))
            .or_else(|| self.instance_by_ip.get(&node.ip))
            .and_then(|&i| instances.get(i))
    }

    /// Every service endpoint at `address` (an IP), with its service, in registry order.
    pub fn endpoints_at(&self, address: &str) -> impl Iterator<Item = (&Service, &Endpoint)> {
        let services = self.registry.services();
        self.endpoints_by_address
            .get(address)
            .into_iter()
            .flatten()
            .filter_map(move |&(s, e)| {
                let svc = services.get(s)?;
                Some((svc, svc.endpoints.get(e)?))
            })
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
        self.instance_by_ip
            .get(&ip)
            .and_then(|&i| self.registry.instances().get(i))
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = (&Resource, &VirtualService)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
    }

    /// The VirtualService `namespace/name`, if there is one.
    pub fn virtual_service(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(&Resource, &VirtualService)> {
        let i = *self
            .virtual_service_by_name
            .get(&(namespace.to_owned(), name.to_owned()))?;
        let r = self.resources.get(i)?;
        match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        }
    }

    /// The Secret `namespace/name`, if there is one.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<(&Resource, &Secret)> {
        let i = *self
            .secret_by_name
            .get(&(namespace.to_owned(), name.to_owned()))?;
        let r = self.resources.get(i)?;
        match &r.spec {
            Spec::Secret(s) => Some((r, s)),
            _ => None,
        }
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

#[cfg(test)]
mod not_enforced_tests {
    use super::*;

    /// A PeerAuthentication is enforced (mesh mTLS): `/debug/config_errors` does not list it
    /// as ignored.
    #[test]
    fn peer_authentications_are_not_reported_as_ignored() {
        let loaded = weft_api::load_str(
            "pa.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
        );
        let view = ConfigView::new(loaded.resources, Vec::new());
        let notes: Vec<String> = view.unsupported().iter().map(ToString::to_string).collect();
        assert!(notes.is_empty(), "{notes:?}");
    }
}
