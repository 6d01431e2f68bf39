//! Findings about VirtualServices bound to gateways: routing on JWT claims without a
//! RequestAuthentication to validate the token (Istio's IST0149), and mesh route rules that
//! ingress traffic does not follow (IST0140).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::finding;
use super::mesh::{Mesh, resolve_host};
use super::routes::destinations;
use crate::common::selector_matches;
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::{Resource, Spec};

/// The prefix of a header match that Istio reads as a JWT claim.
const CLAIM_PREFIX: &str = "@request.auth.claims.";

/// Labels and namespace of the ingress gateway every weft mesh runs, for Gateways selecting
/// it when the configuration holds no workload of it.
const BUILTIN_INGRESS: (&str, &[(&str, &str)]) = (
    "istio-system",
    &[("app", "istio-ingressgateway"), ("istio", "ingressgateway")],
);

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    jwt_claim_routes(mesh, out);
    ingress_subsets(mesh, out);
}

/// A VirtualService on a Gateway matching `@request.auth.claims.*` headers, for gateway
/// workloads no RequestAuthentication (in the root namespace, or the workload's) applies to:
/// the claims are never validated nor set, so the match never matches.
fn jwt_claim_routes(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let authentications: Vec<(&Resource, BTreeMap<String, String>)> = mesh
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::RequestAuthentication(ra) => Some((
                r,
                ra.selector
                    .as_ref()
                    .map(|s| s.match_labels.clone())
                    .unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    let covered = |namespace: &str, labels: &BTreeMap<String, String>| {
        authentications.iter().any(|(r, sel)| {
            (r.namespace() == namespace || r.namespace() == mesh.settings.root_namespace)
                && selector_matches(sel, labels)
        })
    };
    for (r, vs) in mesh.virtual_services() {
        let claim = vs.http.iter().enumerate().find_map(|(i, h)| {
            h.matches.iter().enumerate().find_map(|(j, m)| {
                m.headers
                    .keys()
                    .map(|k| ("headers", k))
                    .chain(m.without_headers.keys().map(|k| ("withoutHeaders", k)))
                    .find(|(_, k)| k.starts_with(CLAIM_PREFIX))
                    .map(|(field, k)| (format!("spec.http[{i}].match[{j}].{field}[{k}]"), k))
            })
        });
        let Some((path, key)) = claim else { continue };
        for reference in &vs.gateways {
            if reference == "mesh" {
                continue;
            }
            let (ns, name) = reference
                .split_once('/')
                .unwrap_or((r.namespace(), reference.as_str()));
            let Some(gw_resource) = mesh.gateways.get(&(ns, name)) else {
                continue;
            };
            let Spec::Gateway(gw) = &gw_resource.spec else {
                continue;
            };
            let mut pods: Vec<(String, String, BTreeMap<String, String>)> = mesh
                .workloads
                .iter()
                .filter(|w| !gw.selector.is_empty() && selector_matches(&gw.selector, w.labels))
                .map(|w| {
                    (
                        w.resource.namespace().to_owned(),
                        w.resource.name().to_owned(),
                        w.labels.clone(),
                    )
                })
                .collect();
            let builtin: BTreeMap<String, String> = BUILTIN_INGRESS
                .1
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            if pods.is_empty()
                && !gw.selector.is_empty()
                && selector_matches(&gw.selector, &builtin)
            {
                pods.push((
                    BUILTIN_INGRESS.0.to_owned(),
                    "istio-ingressgateway".to_owned(),
                    builtin,
                ));
            }
            for (pod_ns, pod, labels) in pods {
                if covered(&pod_ns, &labels) {
                    continue;
                }
                out.push(finding(
                    r,
                    &path,
                    Severity::Warning,
                    code::JWT_CLAIM_ROUTE_WITHOUT_REQUEST_AUTHENTICATION,
                    format!(
                        "routes on the JWT claim {key:?}, but no RequestAuthentication applies to the gateway workload {pod_ns}/{pod} of Gateway {ns}/{name}: the token is not validated, the claim is never set, and the match never matches"
                    ),
                ));
            }
        }
    }
}

/// Whether the subsets `subsets` of `host` (by its DestinationRules) together select every
/// workload of the host known to the configuration (at least one): then going around them
/// reaches the same workloads, and the mesh rules' split is all that differs (bookinfo's
/// gateway routes to productpage, whose only version is the `v1` subset).
fn subsets_cover_all(mesh: &Mesh<'_>, host: &str, subsets: &BTreeSet<String>) -> bool {
    let mut workloads: Vec<&BTreeMap<String, String>> = Vec::new();
    for s in mesh.services_for(host) {
        if let Spec::Service(svc) = &s.resource.spec {
            for i in mesh.selected(s.resource.namespace(), &svc.spec.selector) {
                workloads.push(mesh.workloads[i].labels);
            }
        }
    }
    let labels: Vec<&BTreeMap<String, String>> = mesh
        .rules_for(host)
        .flat_map(|(_, dr)| dr.subsets.iter())
        .filter(|s| subsets.contains(&s.name))
        .map(|s| &s.labels)
        .collect();
    !workloads.is_empty()
        && workloads
            .iter()
            .all(|w| labels.iter().any(|l| selector_matches(l, w)))
}

/// Whether DestinationRules of `host` define every one of `subsets`; when not, the mesh rules
/// are broken themselves (WA0103 says so) and comparing them with ingress says nothing more.
fn subsets_defined(mesh: &Mesh<'_>, host: &str, subsets: &BTreeSet<String>) -> bool {
    subsets.iter().all(|name| {
        mesh.rules_for(host)
            .any(|(_, dr)| dr.subsets.iter().any(|s| &s.name == name))
    })
}

/// A VirtualService on a Gateway routing to a host without subset while a mesh VirtualService
/// for that host splits it by subsets: requests from the gateway go straight to the
/// destination and do not follow the mesh VirtualService's rules. Not reported when those
/// subsets select every workload of the host in the configuration.
fn ingress_subsets(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    // Host -> mesh VirtualServices that route that host of theirs to subsets, and the
    // subsets they use.
    let mut split: HashMap<String, Vec<&Resource>> = HashMap::new();
    let mut used: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (r, vs) in mesh.virtual_services() {
        let on_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
        if !on_mesh {
            continue;
        }
        let hosts: Vec<String> = vs
            .hosts
            .iter()
            .map(|h| resolve_host(h, r.namespace()))
            .collect();
        for (_, d) in destinations(vs) {
            let host = resolve_host(&d.host, r.namespace());
            if !d.subset.is_empty() && hosts.contains(&host) {
                used.entry(host.clone())
                    .or_default()
                    .insert(d.subset.clone());
                let list = split.entry(host).or_default();
                if !list.iter().any(|o| o.reference() == r.reference()) {
                    list.push(r);
                }
            }
        }
    }
    if split.is_empty() {
        return;
    }
    for (r, vs) in mesh.virtual_services() {
        if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") {
            continue;
        }
        for (i, http) in vs.http.iter().enumerate() {
            for (j, rd) in http.route.iter().enumerate() {
                if !rd.destination.subset.is_empty() {
                    continue;
                }
                let host = resolve_host(&rd.destination.host, r.namespace());
                let Some(others) = split.get(&host) else {
                    continue;
                };
                if subsets_cover_all(mesh, &host, &used[&host])
                    || !subsets_defined(mesh, &host, &used[&host])
                {
                    continue;
                }
                let others: Vec<String> = others
                    .iter()
                    .filter(|o| o.reference() != r.reference())
                    .map(|o| format!("{}/{}", o.namespace(), o.name()))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                out.push(finding(
                    r,
                    &format!("spec.http[{i}].route[{j}].destination"),
                    Severity::Warning,
                    code::INGRESS_ROUTE_RULES_NOT_AFFECTED,
                    format!(
                        "routes {host} without a subset, while VirtualService {} splits {host} by subsets for the mesh: requests from the gateway go straight to {host} and do not follow those rules; name the subset here",
                        others.join(", ")
                    ),
                ));
            }
        }
    }
}
