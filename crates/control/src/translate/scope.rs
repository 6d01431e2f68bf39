//! What one proxy may see: the services and VirtualServices its Sidecar resource imports
//! (egress `hosts`) and their `exportTo` lets through, and the DestinationRule that applies to
//! each service. Istio's `SidecarScope` (pilot/pkg/model/sidecar.go) and
//! `PushContext.destinationRule`.

use std::collections::HashMap;

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::networking::destination_rule::Subset;
use weft_api::networking::{DestinationRule, Sidecar, VirtualService};

use super::Notes;
use crate::host::{exported_to, matches, resolve_host, subset_of};
use crate::mesh_config::{MeshConfig, Mode};
use crate::node::ProxyNode;
use crate::registry::{Service, ServiceOrigin};
use crate::view::ConfigView;

/// An imported host: services (and VirtualServices) in `namespace` (`*`: any) whose host falls
/// under `host`.
#[derive(Debug, Clone)]
struct Import {
    namespace: String,
    host: String,
}

/// The proxy's view of the mesh.
pub(crate) struct Scope<'v> {
    /// The proxy's config namespace.
    pub namespace: &'v str,
    pub mode: Mode,
    /// Visible services, one per host, ordered by host.
    pub services: Vec<&'v Service>,
    by_host: HashMap<&'v str, usize>,
    /// VirtualServices bound to `mesh` and imported, in Istio's precedence order.
    pub virtual_services: Vec<(&'v Resource, &'v VirtualService)>,
}

/// A DestinationRule as it applies to one service: the rule whose traffic policy applies, and
/// the subsets of every rule for the same host (Istio merges them).
pub(crate) struct Rule<'v> {
    pub resource: &'v Resource,
    pub rule: &'v DestinationRule,
    pub subsets: Vec<(&'v Resource, usize, &'v Subset)>,
}

impl<'v> Scope<'v> {
    /// A sidecar's scope: its Sidecar resource (by workload selector in its namespace, else
    /// the namespace's default, else the root namespace's), or everything (`*/*`).
    pub fn for_sidecar(
        node: &'v ProxyNode,
        mesh: &'v MeshConfig,
        view: &'v ConfigView,
        notes: &mut Notes,
    ) -> Scope<'v> {
        let sidecar = select_sidecar(node, mesh, view);
        let mut mode = mesh.outbound_traffic_policy.mode;
        let imports = match sidecar {
            Some((r, sc)) => {
                if let Some(p) = &sc.outbound_traffic_policy {
                    mode = p.mode.into();
                    if p.egress_proxy.is_some() {
                        notes.add(
                            Some(r),
                            "spec.outboundTrafficPolicy.egressProxy",
                            "an egress proxy for unknown hosts is not supported",
                        );
                    }
                }
                sidecar_imports(r, sc, &node.namespace, notes)
            }
            None => vec![everything()],
        };
        Scope::build(&node.namespace, mode, &imports, mesh, view, true)
    }

    /// A gateway's scope: every service exported to its namespace (Sidecar resources do not
    /// apply to gateways). Its VirtualServices are chosen per Gateway, not here.
    pub fn for_gateway(
        node: &'v ProxyNode,
        mesh: &'v MeshConfig,
        view: &'v ConfigView,
    ) -> Scope<'v> {
        Scope::build(
            &node.namespace,
            mesh.outbound_traffic_policy.mode,
            &[everything()],
            mesh,
            view,
            false,
        )
    }

    fn build(
        namespace: &'v str,
        mode: Mode,
        imports: &[Import],
        mesh: &'v MeshConfig,
        view: &'v ConfigView,
        with_virtual_services: bool,
    ) -> Scope<'v> {
        let mut services: Vec<&Service> = Vec::new();
        let mut by_host: HashMap<&str, usize> = HashMap::new();
        for s in view.registry().services() {
            let export = if s.export_to.is_empty() {
                &mesh.default_service_export_to
            } else {
                &s.export_to
            };
            if !exported_to(export, &s.namespace, namespace) {
                continue;
            }
            let imported = imports.iter().any(|i| {
                (i.namespace == "*" || i.namespace == s.namespace)
                    && subset_of(&s.hostname, &i.host)
            });
            if !imported {
                continue;
            }
            // One service per host: the proxy's own namespace first, then a Kubernetes
            // Service over a ServiceEntry, then the first namespace (Istio's
            // UnifiedSidecarScoping).
            match by_host.get(s.hostname.as_str()) {
                None => {
                    by_host.insert(&s.hostname, services.len());
                    services.push(s);
                }
                Some(&at) => {
                    let current = services[at];
                    let better = (s.namespace == namespace && current.namespace != namespace)
                        || (current.namespace != namespace
                            && current.origin == ServiceOrigin::ServiceEntry
                            && s.origin == ServiceOrigin::Kubernetes);
                    if better {
                        services[at] = s;
                    }
                }
            }
        }

        let mut virtual_services = Vec::new();
        if with_virtual_services {
            // Istio's order: private to the proxy's namespace, then exported to it by name,
            // then public; input order within each.
            let mut ranked: Vec<(u8, &Resource, &VirtualService)> = Vec::new();
            for (r, vs) in view.virtual_services() {
                if !vs.applies_to_mesh() || vs.is_delegate() {
                    continue;
                }
                let export = if vs.export_to.is_empty() {
                    &mesh.default_virtual_service_export_to
                } else {
                    &vs.export_to
                };
                if !exported_to(export, r.namespace(), namespace) {
                    continue;
                }
                let imported = vs.hosts.iter().any(|h| {
                    let h = resolve_host(h, r.namespace());
                    imports.iter().any(|i| {
                        (i.namespace == "*" || i.namespace == r.namespace()) && matches(&h, &i.host)
                    })
                });
                if !imported {
                    continue;
                }
                let public = export.is_empty() || export.iter().any(|e| e == "*");
                let rank = if public {
                    2
                } else if r.namespace() == namespace {
                    0
                } else {
                    1
                };
                ranked.push((rank, r, vs));
            }
            ranked.sort_by_key(|(rank, ..)| *rank);
            virtual_services = ranked.into_iter().map(|(_, r, vs)| (r, vs)).collect();
        }

        Scope {
            namespace,
            mode,
            services,
            by_host,
            virtual_services,
        }
    }

    /// The visible service with exactly this host.
    pub fn service(&self, host: &str) -> Option<&'v Service> {
        self.by_host
            .get(host)
            .and_then(|&i| self.services.get(i).copied())
    }
}

fn everything() -> Import {
    Import {
        namespace: "*".into(),
        host: "*".into(),
    }
}

/// The egress hosts of a Sidecar, `ns/host` each: `.` is the proxy's namespace, `*` any, `~`
/// none. A port-specific egress listener is merged into the one outbound listener.
fn sidecar_imports(r: &Resource, sc: &Sidecar, namespace: &str, notes: &mut Notes) -> Vec<Import> {
    if sc.egress.is_empty() {
        return vec![everything()];
    }
    let mut out = Vec::new();
    for (i, l) in sc.egress.iter().enumerate() {
        if l.port.is_some() {
            notes.add(
                Some(r),
                format!("spec.egress[{i}].port"),
                "port-specific egress listeners are not supported: the hosts apply to the one \
                 outbound listener on every port",
            );
        }
        if !l.bind.is_empty() {
            notes.add(
                Some(r),
                format!("spec.egress[{i}].bind"),
                "egress listeners bind the proxy's address; bind is ignored",
            );
        }
        for h in &l.hosts {
            let Some((ns, host)) = h.split_once('/') else {
                continue;
            };
            let ns = match ns {
                "." => namespace,
                "~" => continue,
                ns => ns,
            };
            out.push(Import {
                namespace: ns.to_owned(),
                host: host.to_owned(),
            });
        }
    }
    out
}

/// The Sidecar resource for a proxy: one in its namespace whose selector matches its labels,
/// else its namespace's one without selector, else the root namespace's one without selector.
pub(crate) fn select_sidecar<'v>(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &'v ConfigView,
) -> Option<(&'v Resource, &'v Sidecar)> {
    let in_ns = |ns: &str| -> Vec<(&'v Resource, &'v Sidecar)> {
        view.sidecars()
            .filter(|(r, _)| r.namespace() == ns)
            .collect()
    };
    in_ns(&node.namespace)
        .into_iter()
        .find(|(_, sc)| {
            sc.workload_selector
                .as_ref()
                .is_some_and(|s| !s.labels.is_empty() && selector_matches(&s.labels, &node.labels))
        })
        .or_else(|| {
            in_ns(&node.namespace)
                .into_iter()
                .find(|(_, sc)| sc.workload_selector.is_none())
        })
        .or_else(|| {
            in_ns(&mesh.root_namespace)
                .into_iter()
                .find(|(_, sc)| sc.workload_selector.is_none())
        })
}

/// The DestinationRule for `service` as seen from a proxy in `namespace` with `labels`:
/// the proxy's namespace first, then the service's, then the root namespace; in each, the most
/// specific host (exact before the longest wildcard). Rules for the same host merge: the first
/// one's traffic policy, everyone's subsets (first definition of a name wins).
pub(crate) fn destination_rule<'v>(
    view: &'v ConfigView,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
    service: &Service,
) -> Option<Rule<'v>> {
    let candidates = |owner: &str| -> Vec<(&'v Resource, &'v DestinationRule, String)> {
        view.destination_rules()
            .filter(|(r, _)| r.namespace() == owner)
            .filter(|(r, dr)| {
                let export = if dr.export_to.is_empty() {
                    &mesh.default_destination_rule_export_to
                } else {
                    &dr.export_to
                };
                exported_to(export, r.namespace(), namespace)
            })
            .filter(|(r, dr)| match &dr.workload_selector {
                // A rule with a selector applies only to the workloads it selects, in its namespace.
                Some(sel) => {
                    r.namespace() == namespace && selector_matches(&sel.match_labels, labels)
                }
                None => true,
            })
            .map(|(r, dr)| (r, dr, resolve_host(&dr.host, r.namespace())))
            .filter(|(_, _, host)| subset_of(&service.hostname, host))
            .collect()
    };
    let order = [
        namespace,
        service.namespace.as_str(),
        mesh.root_namespace.as_str(),
    ];
    for (i, owner) in order.iter().enumerate() {
        if order[..i].contains(owner) {
            continue;
        }
        let found = candidates(owner);
        let Some(best) = found
            .iter()
            .map(|(_, _, h)| h.as_str())
            .min_by(|a, b| crate::host::more_specific_first(a, b))
            .map(str::to_owned)
        else {
            continue;
        };
        let mut rules = found.into_iter().filter(|(_, _, h)| *h == best);
        let (resource, rule, _) = rules.next()?;
        let mut subsets: Vec<(&Resource, usize, &Subset)> = rule
            .subsets
            .iter()
            .enumerate()
            .map(|(j, s)| (resource, j, s))
            .collect();
        for (r, dr, _) in rules {
            for (j, s) in dr.subsets.iter().enumerate() {
                if !subsets.iter().any(|(_, _, have)| have.name == s.name) {
                    subsets.push((r, j, s));
                }
            }
        }
        return Some(Rule {
            resource,
            rule,
            subsets,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ProxyKind;

    const RULES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-ns, namespace: bookinfo}
spec: {host: reviews, subsets: [{name: from-service-ns, labels: {v: "1"}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: client}
spec: {host: "*.bookinfo.svc.cluster.local", subsets: [{name: from-wildcard, labels: {v: "1"}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: exact, namespace: client}
spec: {host: reviews.bookinfo.svc.cluster.local, subsets: [{name: from-client-ns, labels: {v: "1"}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: root, namespace: istio-system}
spec: {host: "*.svc.cluster.local", subsets: [{name: from-root, labels: {v: "1"}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  exportTo: ["."]
  subsets: [{name: private, labels: {v: "1"}}]
"#;

    fn subset_for(view: &ConfigView, namespace: &str) -> Vec<String> {
        let mesh = MeshConfig::default();
        let svc = view
            .registry()
            .by_host("reviews.bookinfo.svc.cluster.local")
            .next()
            .expect("service");
        destination_rule(view, &mesh, namespace, &Default::default(), svc)
            .map(|r| r.subsets.iter().map(|(_, _, s)| s.name.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn destination_rule_precedence() {
        let loaded = weft_api::load_str("rules.yaml", RULES);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let view = ConfigView::new(loaded.resources, Vec::new());
        // The client's own namespace first, exact host over wildcard.
        assert_eq!(subset_for(&view, "client"), ["from-client-ns"]);
        // Then the service's namespace: its rules for the host merge (subsets of both).
        assert_eq!(
            subset_for(&view, "bookinfo"),
            ["from-service-ns", "private"]
        );
        // A private rule is not exported; the root namespace is the last resort.
        assert_eq!(subset_for(&view, "other"), ["from-service-ns"]);
    }

    #[test]
    fn sidecar_selection_prefers_the_workload_selector() {
        let text = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ns-default, namespace: prod}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: canary, namespace: prod}
spec:
  workloadSelector: {labels: {canary: "true"}}
  egress: [{hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: root, namespace: istio-system}
spec: {egress: [{hosts: ["istio-system/*"]}]}
"#;
        let loaded = weft_api::load_str("sidecars.yaml", text);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let view = ConfigView::new(loaded.resources, Vec::new());
        let mesh = MeshConfig::default();
        let node = |ns: &str, canary: bool| {
            let mut n =
                ProxyNode::parse_id(&format!("sidecar~10.0.0.1~a.{ns}~{ns}.svc.cluster.local"))
                    .expect("node");
            if canary {
                n.labels.insert("canary".into(), "true".into());
            }
            assert_eq!(n.kind, ProxyKind::Sidecar);
            n
        };
        let name =
            |n: &ProxyNode| select_sidecar(n, &mesh, &view).map(|(r, _)| r.name().to_owned());
        assert_eq!(name(&node("prod", true)).as_deref(), Some("canary"));
        assert_eq!(name(&node("prod", false)).as_deref(), Some("ns-default"));
        assert_eq!(name(&node("dev", false)).as_deref(), Some("root"));
    }
}
