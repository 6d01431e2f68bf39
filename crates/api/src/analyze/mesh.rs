//! An index of loaded resources for the analyzers: services by host, DestinationRules by
//! host, gateways and VirtualServices by name, and workloads with their labels and ports.

use std::collections::{BTreeMap, HashMap};

use super::settings::MeshSettings;
use crate::common::selector_matches;
use crate::host::{or_default, service_export_to};
use crate::networking::{DestinationRule, VirtualService};
use crate::resource::{Resource, Spec};

pub use crate::host::{CLUSTER_DOMAIN, exported_to, host_matches, resolve_host};

/// A service reachable by host: a Kubernetes Service or a ServiceEntry host.
#[derive(Debug)]
pub struct ServiceHost<'a> {
    pub resource: &'a Resource,
    /// Host as resolved (FQDN for Services; as written, maybe wildcard, for ServiceEntries).
    pub host: String,
    /// Port numbers the service exposes.
    pub ports: Vec<u32>,
    /// Its own visibility: a ServiceEntry's `exportTo`, a Service's
    /// `networking.istio.io/exportTo` annotation (empty: the mesh default).
    pub export_to: Vec<String>,
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
    /// False when its pods opt out of the sidecar (`sidecar.istio.io/inject: "false"`, as a
    /// label or annotation): not in the mesh.
    pub injected: bool,
}

/// Whether pod metadata opts out of sidecar injection.
fn opted_out(meta: &crate::common::ObjectMeta) -> bool {
    let off = |m: &BTreeMap<String, String>| {
        m.get("sidecar.istio.io/inject")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    };
    off(&meta.labels) || off(&meta.annotations)
}

/// What the analyzers read. Lookups by host and namespace go through indexes built once, so
/// analysis stays linear in the size of the configuration.
pub struct Mesh<'a> {
    pub resources: &'a [Resource],
    /// The mesh config's settings (`--mesh-config`), or Istio's defaults.
    pub settings: MeshSettings,
    pub services: Vec<ServiceHost<'a>>,
    /// `(namespace, name)` of every Gateway.
    pub gateways: HashMap<(&'a str, &'a str), &'a Resource>,
    /// `(namespace, name)` of every VirtualService; of two definitions (WA0006) the later,
    /// which replaces the earlier.
    virtual_services_by_name: HashMap<(&'a str, &'a str), (&'a Resource, &'a VirtualService)>,
    pub workloads: Vec<WorkloadView<'a>>,
    services_by_host: HostIndex,
    rules: Vec<(&'a Resource, &'a DestinationRule)>,
    rules_by_host: HostIndex,
    workloads_by_namespace: HashMap<&'a str, Vec<usize>>,
}

/// Positions in a list by host: exact hosts in a map, wildcard hosts (few) in a list.
#[derive(Default)]
struct HostIndex {
    exact: HashMap<String, Vec<usize>>,
    wildcard: Vec<(String, usize)>,
}

impl HostIndex {
    fn insert(&mut self, host: String, at: usize) {
        if host.starts_with('*') {
            self.wildcard.push((host, at));
        } else {
            self.exact.entry(host).or_default().push(at);
        }
    }

    /// Positions whose host covers `host`, in insertion order.
    fn lookup(&self, host: &str) -> Vec<usize> {
        let mut found: Vec<usize> = self.exact.get(host).cloned().unwrap_or_default();
        found.extend(
            self.wildcard
                .iter()
                .filter(|(pattern, _)| host_matches(pattern, host))
                .map(|(_, at)| *at),
        );
        found.sort_unstable();
        found
    }
}

impl<'a> Mesh<'a> {
    pub fn new(resources: &'a [Resource]) -> Self {
        Self::with_settings(resources, &MeshSettings::default())
    }

    pub fn with_settings(resources: &'a [Resource], settings: &MeshSettings) -> Self {
        let mut services = Vec::new();
        let mut gateways = HashMap::new();
        let mut virtual_services_by_name = HashMap::new();
        let mut workloads = Vec::new();
        for r in resources {
            match &r.spec {
                Spec::Service(s) => services.push(ServiceHost {
                    resource: r,
                    host: resolve_host(r.name(), r.namespace()),
                    ports: s.spec.ports.iter().map(|p| p.port).collect(),
                    export_to: service_export_to(r),
                }),
                Spec::ServiceEntry(se) => {
                    for h in &se.hosts {
                        services.push(ServiceHost {
                            resource: r,
                            host: resolve_host(h, r.namespace()),
                            ports: se.ports.iter().map(|p| p.number).collect(),
                            export_to: se.export_to.clone(),
                        });
                    }
                }
                Spec::Gateway(_) => {
                    gateways.insert((r.namespace(), r.name()), r);
                }
                Spec::VirtualService(vs) => {
                    virtual_services_by_name.insert((r.namespace(), r.name()), (r, vs));
                }
                Spec::Deployment(d) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &d.spec.template.metadata.labels,
                    labels_path: "spec.template.metadata.labels",
                    ports: pod_ports(&d.spec.template.spec),
                    injected: !opted_out(&d.spec.template.metadata),
                }),
                Spec::Pod(p) => workloads.push(WorkloadView {
                    resource: r,
                    labels: &r.metadata.labels,
                    labels_path: "metadata.labels",
                    ports: pod_ports(&p.spec),
                    injected: !opted_out(&r.metadata),
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
                    injected: true,
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
                    injected: true,
                }),
                _ => {}
            }
        }
        let mut services_by_host = HostIndex::default();
        for (i, s) in services.iter().enumerate() {
            services_by_host.insert(s.host.clone(), i);
        }
        let rules: Vec<_> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(dr) => Some((r, dr.as_ref())),
                _ => None,
            })
            .collect();
        let mut rules_by_host = HostIndex::default();
        for (i, (r, dr)) in rules.iter().enumerate() {
            rules_by_host.insert(resolve_host(&dr.host, r.namespace()), i);
        }
        let mut workloads_by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            workloads_by_namespace
                .entry(w.resource.namespace())
                .or_default()
                .push(i);
        }
        Mesh {
            resources,
            settings: settings.clone(),
            services,
            gateways,
            virtual_services_by_name,
            workloads,
            services_by_host,
            rules,
            rules_by_host,
            workloads_by_namespace,
        }
    }

    /// Services whose host covers `host` (exact, or a wildcard ServiceEntry host).
    pub fn services_for(&self, host: &str) -> impl Iterator<Item = &ServiceHost<'a>> {
        self.services_by_host
            .lookup(host)
            .into_iter()
            .map(|i| &self.services[i])
    }

    /// Whether `service` is visible from `namespace` (its `exportTo`, or the mesh default).
    pub fn service_visible(&self, service: &ServiceHost<'_>, namespace: &str) -> bool {
        let export = or_default(&service.export_to, &self.settings.default_service_export_to);
        exported_to(export, service.resource.namespace(), namespace)
    }

    /// The namespaces a VirtualService applies in, by its `exportTo` (or the mesh default):
    /// `None` for every namespace.
    pub fn virtual_service_scope(&self, r: &Resource, vs: &VirtualService) -> Option<Vec<String>> {
        export_scope(
            or_default(
                &vs.export_to,
                &self.settings.default_virtual_service_export_to,
            ),
            r.namespace(),
        )
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = (&'a Resource, &'a VirtualService)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
    }

    /// The VirtualService `namespace/name`, if one is defined.
    pub fn virtual_service(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(&'a Resource, &'a VirtualService)> {
        self.virtual_services_by_name
            .get(&(namespace, name))
            .copied()
    }

    pub fn destination_rules(
        &self,
    ) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> + '_ {
        self.rules.iter().copied()
    }

    /// DestinationRules whose host covers `host` (resolved against each rule's namespace).
    pub fn rules_for(
        &self,
        host: &str,
    ) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> + '_ {
        self.rules_by_host
            .lookup(host)
            .into_iter()
            .map(|i| self.rules[i])
    }

    /// Indexes into `workloads` of those in `namespace` selected by a label selector (an empty
    /// selector selects none, as a Service without selector has no endpoints).
    pub fn selected(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<usize> {
        if selector.is_empty() {
            return Vec::new();
        }
        self.workloads_by_namespace
            .get(namespace)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|&i| selector_matches(selector, self.workloads[i].labels))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The namespaces an `exportTo` list reaches, `.` resolved to `owner`: `None` for every
/// namespace (an empty list or `*`).
pub fn export_scope(export_to: &[String], owner: &str) -> Option<Vec<String>> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return None;
    }
    let mut out: Vec<String> = export_to
        .iter()
        .filter(|e| *e != "~")
        .map(|e| {
            if e == "." {
                owner.to_owned()
            } else {
                e.clone()
            }
        })
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// Whether two scopes (see [`export_scope`]) share a namespace.
pub fn scopes_meet(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (None, Some(s)) | (Some(s), None) => !s.is_empty(),
        (Some(a), Some(b)) => a.iter().any(|n| b.contains(n)),
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

    #[test]
    fn export_to_follows_istio() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: &[(&[&str], &str, bool)] = &[
            // (exportTo, client namespace, visible) for a resource in `own`
            (&[], "other", true),
            (&["*"], "other", true),
            (&["."], "own", true),
            (&["."], "other", false),
            (&["~"], "own", false),
            (&["other"], "other", true),
            (&["other"], "own", false),
            (&[".", "other"], "own", true),
        ];
        for (export, client, want) in cases {
            assert_eq!(
                exported_to(&list(export), "own", client),
                *want,
                "{export:?} from {client}"
            );
        }
    }
}
