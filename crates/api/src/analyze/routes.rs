//! Findings about routing: VirtualServices, their gateways and destinations, and
//! DestinationRules.

use std::collections::{BTreeMap, HashMap};

use super::finding;
use super::mesh::{Mesh, resolve_host};
use crate::diag::{Diagnostic, Severity, code};
use crate::networking::VirtualService;
use crate::networking::virtual_service::Destination;
use crate::resource::Resource;

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for (r, vs) in mesh.virtual_services() {
        gateways_exist(mesh, r, vs, out);
        for (path, dest) in destinations(vs) {
            destination(mesh, r, &path, dest, out);
        }
    }
    conflicting_virtual_services(mesh, out);
    conflicting_destination_rules(mesh, out);
}

/// Every destination of a VirtualService with its field path: routes, mirrors.
fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
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
    path: &str,
    dest: &Destination,
    out: &mut Vec<Diagnostic>,
) {
    let host = resolve_host(&dest.host, r.namespace());
    let services: Vec<_> = mesh.services_for(&host).collect();
    if services.is_empty() {
        out.push(finding(
            r,
            &format!("{path}.host"),
            Severity::Error,
            code::HOST_NOT_FOUND,
            format!("destination host {host} matches no Service or ServiceEntry"),
        ));
        return;
    }
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

fn list(ports: &[u32]) -> String {
    ports
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Two VirtualServices claiming one host on one gateway (or the mesh): which one routes is
/// undefined, so weft refuses the pair.
fn conflicting_virtual_services(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let mut claims: HashMap<(String, String), (&Resource, String)> = HashMap::new();
    for (r, vs) in mesh.virtual_services() {
        let gateways: Vec<String> = if vs.gateways.is_empty() {
            vec!["mesh".to_owned()]
        } else {
            vs.gateways
                .iter()
                .map(|g| match gateway_key(g, r.namespace()) {
                    Some((ns, name)) => format!("{ns}/{name}"),
                    None => "mesh".to_owned(),
                })
                .collect()
        };
        for (i, host) in vs.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            let host = resolve_host(host, r.namespace());
            for gw in &gateways {
                let key = (gw.clone(), host.clone());
                match claims.get(&key) {
                    Some((first, first_path)) if first.reference() != r.reference() => {
                        let at = first
                            .locate(first_path)
                            .map(|l| format!(" (at {l})"))
                            .unwrap_or_default();
                        out.push(finding(
                            r,
                            &path,
                            Severity::Error,
                            code::CONFLICTING_VIRTUAL_SERVICES,
                            format!(
                                "host {host} on {gw} is also claimed by VirtualService {}/{}{at}; merge the two or bind them to different gateways",
                                first.namespace(),
                                first.name()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        claims.insert(key, (r, path.clone()));
                    }
                }
            }
        }
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
