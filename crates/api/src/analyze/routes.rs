//! Findings about routing: VirtualServices, their gateways and destinations, and
//! DestinationRules.

use std::collections::{BTreeMap, HashMap};

use super::finding;
use super::mesh::{Mesh, ServiceHost, resolve_host, scopes_meet};
use crate::diag::{Diagnostic, Severity, code};
use crate::host::matches;
use crate::networking::VirtualService;
use crate::networking::virtual_service::Destination;
use crate::resource::Resource;

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for (r, vs) in mesh.virtual_services() {
        gateways_exist(mesh, r, vs, out);
        for (path, dest) in destinations(vs) {
            destination(mesh, r, vs, &path, dest, out);
        }
    }
    conflicting_virtual_services(mesh, out);
    conflicting_destination_rules(mesh, out);
}

/// Every destination of a VirtualService with its field path: routes, mirrors.
pub(super) fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        for (j, rd) in http.route.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].route[{j}].destination"),
                &rd.destination,
            ));
        }
        if let Some(m) = &http.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in http.mirrors.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].mirrors[{j}].destination"),
                &m.destination,
            ));
        }
    }
    for (i, tls) in vs.tls.iter().enumerate() {
        for (j, rd) in tls.route.iter().enumerate() {
            out.push((
                format!("spec.tls[{i}].route[{j}].destination"),
                &rd.destination,
            ));
        }
    }
    for (i, tcp) in vs.tcp.iter().enumerate() {
        for (j, rd) in tcp.route.iter().enumerate() {
            out.push((
                format!("spec.tcp[{i}].route[{j}].destination"),
                &rd.destination,
            ));
        }
    }
    out
}

/// `name` or `namespace/name` of a gateway reference, resolved against the VirtualService's
/// namespace. `None` for the reserved `mesh`.
fn gateway_key<'s>(reference: &'s str, vs_namespace: &'s str) -> Option<(&'s str, &'s str)> {
    if reference == "mesh" {
        return None;
    }
    Some(
        reference
            .split_once('/')
            .unwrap_or((vs_namespace, reference)),
    )
}

fn gateways_exist(mesh: &Mesh<'_>, r: &Resource, vs: &VirtualService, out: &mut Vec<Diagnostic>) {
    let mut refs: Vec<(String, &str)> = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str()))
        .collect();
    for (i, http) in vs.http.iter().enumerate() {
        for (j, m) in http.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                refs.push((
                    format!("spec.http[{i}].match[{j}].gateways[{k}]"),
                    g.as_str(),
                ));
            }
        }
    }
    for (path, reference) in refs {
        let Some((ns, name)) = gateway_key(reference, r.namespace()) else {
            continue;
        };
        if !mesh.gateways.contains_key(&(ns, name)) {
            out.push(finding(
                r,
                &path,
                Severity::Error,
                code::GATEWAY_NOT_FOUND,
                format!("gateway {ns}/{name} is not defined by any Gateway"),
            ));
        }
    }
}

fn destination(
    mesh: &Mesh<'_>,
    r: &Resource,
    vs: &VirtualService,
    path: &str,
    dest: &Destination,
    out: &mut Vec<Diagnostic>,
) {
    let host = resolve_host(&dest.host, r.namespace());
    // The namespaces the VirtualService applies in: the destination must be visible from one.
    let clients = mesh
        .virtual_service_scope(r, vs)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec![r.namespace().to_owned()]);
    let all: Vec<_> = mesh.services_for(&host).collect();
    let services: Vec<_> = all
        .iter()
        .filter(|s| clients.iter().any(|c| mesh.service_visible(s, c)))
        .collect();
    if services.is_empty() {
        let why = if all.is_empty() {
            "matches no Service or ServiceEntry".to_owned()
        } else {
            format!(
                "is not exported to {} (exportTo of {})",
                clients.join(", "),
                all.iter()
                    .map(|s| s.resource.reference().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(finding(
            r,
            &format!("{path}.host"),
            Severity::Error,
            code::HOST_NOT_FOUND,
            format!("destination host {host} {why}"),
        ));
    } else {
        destination_port(r, path, &host, &services, dest, out);
    }
    // The subset is checked even when the host is missing: the DestinationRule may exist.
    let subset = dest.subset.as_str();
    if subset.is_empty() {
        return;
    }
    let defined = mesh
        .rules_for(&host)
        .any(|(_, dr)| dr.subsets.iter().any(|s| s.name == subset));
    if !defined {
        out.push(finding(
            r,
            &format!("{path}.subset"),
            Severity::Error,
            code::SUBSET_NOT_FOUND,
            format!("subset {subset:?} of {host} is not defined by any DestinationRule"),
        ));
    }
}

fn destination_port(
    r: &Resource,
    path: &str,
    host: &str,
    services: &[&&ServiceHost<'_>],
    dest: &Destination,
    out: &mut Vec<Diagnostic>,
) {
    let ports: Vec<u32> = {
        let mut p: Vec<u32> = services
            .iter()
            .flat_map(|s| s.ports.iter().copied())
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    match dest.port.as_ref().map(|p| p.number) {
        Some(number) if !ports.contains(&number) => out.push(finding(
            r,
            &format!("{path}.port.number"),
            Severity::Error,
            code::DESTINATION_PORT_NOT_FOUND,
            format!("port {number} is not exposed by {host} (ports: {})", list(&ports)),
        )),
        None if ports.len() > 1 => out.push(finding(
            r,
            path,
            Severity::Error,
            code::DESTINATION_PORT_REQUIRED,
            format!("{host} exposes several ports ({}); the destination must choose one with port.number", list(&ports)),
        )),
        _ => {}
    }
}

fn list(ports: &[u32]) -> String {
    ports
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Two VirtualServices bound to the mesh (sidecars) claiming overlapping hosts (`*.d` and
/// `*.productpage.d` overlap) in a namespace that sees both (their `exportTo`): which one
/// routes is undefined, so weft refuses both, and reports each, as Istio's IST0109 does.
/// VirtualServices bound to one Gateway with the same host are not a conflict: their routes
/// are merged, as in Istio (and in weft's gateway translation).
fn conflicting_virtual_services(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    struct Claim<'a> {
        resource: &'a Resource,
        path: String,
        host: String,
        scope: Option<Vec<String>>,
    }
    let mut claims: Vec<Claim<'_>> = Vec::new();
    for (r, vs) in mesh.virtual_services() {
        let on_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
        if !on_mesh {
            continue;
        }
        let scope = mesh.virtual_service_scope(r, vs);
        for (i, host) in vs.hosts.iter().enumerate() {
            claims.push(Claim {
                resource: r,
                path: format!("spec.hosts[{i}]"),
                host: resolve_host(host, r.namespace()),
                scope: scope.clone(),
            });
        }
    }
    // Exact hosts meet by equality (a map); the few wildcards are compared with every claim.
    let mut by_host: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut wildcards = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        if c.host.starts_with('*') {
            wildcards.push(i);
        }
        by_host.entry(c.host.as_str()).or_default().push(i);
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for ids in by_host.values() {
        for (k, &a) in ids.iter().enumerate() {
            for &b in &ids[k + 1..] {
                pairs.push((a, b));
            }
        }
    }
    for &w in &wildcards {
        for (i, c) in claims.iter().enumerate() {
            if i != w
                && c.host != claims[w].host
                && matches(&claims[w].host, &c.host)
                && (i > w || !claims[i].host.starts_with('*'))
            {
                pairs.push((w, i));
            }
        }
    }
    let mut others: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (a, b) in pairs {
        let (ca, cb) = (&claims[a], &claims[b]);
        // The same VirtualService, or one definition replacing another (WA0006).
        if ca.resource.reference() == cb.resource.reference() || !scopes_meet(&ca.scope, &cb.scope)
        {
            continue;
        }
        // Different hosts that overlap (`*.d`, `*.productpage.d`) both visible everywhere:
        // the most specific host wins for the names it covers, a common and well-defined
        // pattern, which Istio does not report either.
        if ca.host != cb.host && ca.scope.is_none() && cb.scope.is_none() {
            continue;
        }
        others.entry(a).or_default().push(b);
        others.entry(b).or_default().push(a);
    }
    // One finding per VirtualService (as Istio), at its first conflicting host, naming every
    // host and VirtualService it conflicts with.
    let mut per_resource: BTreeMap<String, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
    for (at, with) in others {
        per_resource
            .entry(claims[at].resource.reference().to_string())
            .or_default()
            .push((at, with));
    }
    for entries in per_resource.values() {
        let c = &claims[entries[0].0];
        // The same host claimed twice is undefined routing: an error. Overlapping wildcards
        // are resolved by the most specific host, but one VirtualService's exportTo scope
        // then changes which one routes a name: a warning.
        let identical = entries
            .iter()
            .any(|(at, with)| with.iter().any(|&o| claims[o].host == claims[*at].host));
        let severity = if identical {
            Severity::Error
        } else {
            Severity::Warning
        };
        let parts: Vec<String> = entries
            .iter()
            .map(|(at, with)| {
                let names: Vec<String> = with
                    .iter()
                    .map(|&o| {
                        let o = &claims[o];
                        let loc = o
                            .resource
                            .locate(&o.path)
                            .map(|l| format!(" at {l}"))
                            .unwrap_or_default();
                        format!(
                            "VirtualService {}/{} ({}{loc})",
                            o.resource.namespace(),
                            o.resource.name(),
                            o.host
                        )
                    })
                    .collect();
                format!(
                    "host {} is also claimed by {}",
                    claims[*at].host,
                    names.join(", ")
                )
            })
            .collect();
        out.push(finding(
            c.resource,
            &c.path,
            severity,
            code::CONFLICTING_VIRTUAL_SERVICES,
            format!(
                "on the mesh (sidecars), {}; which one routes is undefined: merge them, or give them exportTo scopes that do not meet",
                parts.join("; ")
            ),
        ));
    }
}

/// Two DestinationRules for one host (and the same workload selector): weft does not merge
/// them, so one would be ignored.
fn conflicting_destination_rules(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(String, BTreeMap<String, String>), &Resource> = HashMap::new();
    for (r, dr) in mesh.destination_rules() {
        let host = resolve_host(&dr.host, r.namespace());
        let selector = dr
            .workload_selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default();
        // A rule scoped by workloadSelector only conflicts within its namespace.
        let scope = if selector.is_empty() {
            host.clone()
        } else {
            format!("{}:{host}", r.namespace())
        };
        match seen.get(&(scope.clone(), selector.clone())) {
            // The same rule in two files: the later replaces the earlier (WA0006), no conflict.
            Some(first) if first.reference() == r.reference() => {}
            Some(first) => {
                let at = first
                    .locate("spec.host")
                    .map(|l| format!(" (at {l})"))
                    .unwrap_or_default();
                out.push(finding(
                    r,
                    "spec.host",
                    Severity::Error,
                    code::CONFLICTING_DESTINATION_RULES,
                    format!(
                        "host {host} already has DestinationRule {}/{}{at}; weft applies one DestinationRule per host, merge them",
                        first.namespace(),
                        first.name()
                    ),
                ));
            }
            None => {
                seen.insert((scope, selector), r);
            }
        }
    }
}
