//! An index of loaded resources for the analyzers: services by host, DestinationRules by
//! host, gateways by name, and workloads with their labels and ports.

use std::collections::{BTreeMap, HashMap};

use crate::common::selector_matches;
use crate::networking::{DestinationRule, VirtualService};
use crate::resource::{Resource, Spec};

/// Kubernetes' default cluster domain; short hosts resolve to `name.namespace.svc.<domain>`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Resolves a host as Istio does: a name without a dot is a Service short name in `namespace`;
/// anything else is taken as written.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// True when `pattern` (`*.example.com`, `*`, or an exact host) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len() || pattern == "*",
        None => pattern == host,
    }
}

/// A service reachable by host: a Kubernetes Service or a ServiceEntry host.
#[derive(Debug)]
pub struct ServiceHost<'a> {
    pub resource: &'a Resource,
    /// Host as resolved (FQDN for Services; as written, maybe wildcard, for ServiceEntries).
    pub host: String,
    /// Port numbers the service exposes.
    pub ports: Vec<u32>,
}

/// A workload: something that runs and carries labels (Deployment, Pod, Workload,
/// WorkloadEntry).
#[derive(Debug)]
pub struct WorkloadView<'a> {
    pub resource: &'a Resource,
    pub labels: &'a BTreeMap<String, String>,
    /// Field path of the labels, for findings (`spec.template.metadata.labels`).
    pub labels_path: &'static str,
    /// Named and numbered ports the workload listens on.
    pub ports: Vec<(Option<&'a str>, u32)>,
}

/// What the analyzers read.
pub struct Mesh<'a> {
    pub resources: &'a [Resource],
    pub services: Vec<ServiceHost<'a>>,
    /// `(namespace, name)` of every Gateway.
    pub gateways: HashMap<(&'a str, &'a str), &'a Resource>,
    pub workloads: Vec<WorkloadView<'a>>,
}

impl<'a> Mesh<'a> {
    pub fn new(resources: &'a [Resource]) -> Self {
        let mut services = Vec::new();
        let mut gateways = HashMap::new();
        let mut workloads = Vec::new();
        for r in resources {
            match &r.spec {
                Spec::Service(s) => services.push(ServiceHost {
                    resource: r,
                    host: resolve_host(r.name(), r.namespace()),
                    ports: s.spec.ports.iter().map(|p| p.port).collect(),
                }),
                Spec::ServiceEntry(se) => {
                    for h in &se.hosts {
                        services.push(ServiceHost {
                            resource: r,
                            host: resolve_host(h, r.namespace()),
                            ports: se.ports.iter().map(|p| p.number).collect(),
                        });
                    }
                }
                Spec::Gateway(_) => {
                    gateways.insert((r.namespace(), r.name()), r);
                }
                Spec::Deployment(d) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &d.spec.template.metadata.labels,
                    labels_path: "spec.template.metadata.labels",
                    ports: pod_ports(&d.spec.template.spec),
                }),
                Spec::Pod(p) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &r.metadata.labels,
                    labels_path: "metadata.labels",
                    ports: pod_ports(&p.spec),
                }),
                Spec::Workload(w) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &r.metadata.labels,
                    labels_path: "metadata.labels",
                    ports: w
                        .ports
                        .iter()
                        .map(|p| (Some(p.name.as_str()), p.port))
                        .collect(),
                }),
                Spec::WorkloadEntry(we) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &we.labels,
                    labels_path: "spec.labels",
                    ports: we
                        .ports
                        .iter()
                        .map(|(n, p)| (Some(n.as_str()), *p))
                        .collect(),
                }),
                _ => {}
            }
        }
        Mesh {
            resources,
            services,
            gateways,
            workloads,
        }
    }

    /// Services whose host covers `host` (exact, or a wildcard ServiceEntry host).
    pub fn services_for(&self, host: &str) -> impl Iterator<Item = &ServiceHost<'a>> {
        let host = host.to_owned();
        self.services
            .iter()
            .filter(move |s| host_matches(&s.host, &host))
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = (&'a Resource, &'a VirtualService)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
    }

    pub fn destination_rules(&self) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::DestinationRule(dr) => Some((r, dr.as_ref())),
            _ => None,
        })
    }

    /// DestinationRules whose host covers `host` (resolved against each rule's namespace).
    pub fn rules_for<'s>(
        &'s self,
        host: &'s str,
    ) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> + 's {
        self.destination_rules()
            .filter(move |(r, dr)| host_matches(&resolve_host(&dr.host, r.namespace()), host))
    }

    /// Workloads in `namespace` selected by a label selector (an empty selector selects none,
    /// as a Service without selector has no endpoints).
    pub fn selected<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s WorkloadView<'a>> + 's {
        self.workloads.iter().filter(move |w| {
            !selector.is_empty()
                && w.resource.namespace() == namespace
                && selector_matches(selector, w.labels)
        })
    }
}

fn pod_ports(spec: &crate::kube::workload::PodSpec) -> Vec<(Option<&str>, u32)> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_and_match() {
        assert_eq!(
            resolve_host("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod.svc.cluster.local", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(resolve_host("*.example.com", "default"), "*.example.com");
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("*", "anything.at.all"));
        assert!(host_matches("a.b", "a.b"));
        assert!(!host_matches("a.b", "a.c"));
    }
}
