//! Findings about Gateways: two Gateways claiming one host on one port of the same workloads,
//! server ports the gateway's Service does not expose, and VirtualService hosts a bound
//! Gateway does not serve.

use std::collections::{BTreeSet, HashMap};

use super::finding;
use super::mesh::Mesh;
use crate::common::selector_matches;
use crate::diag::{Diagnostic, Severity, code};
use crate::host::{matches, names_for_namespace};
use crate::kube::service::IntOrString;
use crate::networking::Gateway;
use crate::resource::{Resource, Spec};

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let gateways: Vec<(&Resource, &Gateway)> = mesh
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
        .collect();
    conflicting_gateways(mesh, &gateways, out);
    ports_on_service(mesh, &gateways, out);
    virtual_service_hosts(mesh, out);
}

fn selector_text(gw: &Gateway) -> String {
    gw.selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of the ingress gateway every weft mesh runs (`weft up`, Istio's default
/// profile).
const BUILTIN_INGRESS_LABELS: &[(&str, &str)] =
    &[("app", "istio-ingressgateway"), ("istio", "ingressgateway")];

/// The ports of the default ingress gateway Service, as Istio's analyzer assumes them (the
/// status port, HTTP 80, HTTPS 443, and the TCP (31400) and TLS (15443) ports of earlier
/// default profiles), and the target ports of weft's (80 -> 8080, 443 -> 8443).
const DEFAULT_INGRESS_PORTS: [u32; 7] = [15021, 80, 443, 31400, 15443, 8080, 8443];

/// Whether a Gateway's selector selects the built-in ingress gateway.
fn selects_builtin_ingress(gw: &Gateway) -> bool {
    gw.selector.iter().all(|(k, v)| {
        BUILTIN_INGRESS_LABELS
            .iter()
            .any(|(bk, bv)| bk == k && bv == v)
    })
}

/// Whether two Gateways configure the same gateway workloads: the same selector, or
/// selectors that both select one workload of the configuration.
fn same_workloads(mesh: &Mesh<'_>, a: &Gateway, b: &Gateway) -> bool {
    a.selector == b.selector
        || mesh.workloads.iter().any(|w| {
            selector_matches(&a.selector, w.labels) && selector_matches(&b.selector, w.labels)
        })
}

/// Two Gateways on the same workloads whose servers on one port claim the same host (and
/// bind address): only one of them can own that host there, as Istio's IST0145 says. Each
/// server is reported, naming the other Gateways.
fn conflicting_gateways(
    mesh: &Mesh<'_>,
    gateways: &[(&Resource, &Gateway)],
    out: &mut Vec<Diagnostic>,
) {
    for (i, (r, gw)) in gateways.iter().enumerate() {
        if gw.selector.is_empty() {
            continue;
        }
        for (si, server) in gw.servers.iter().enumerate() {
            let Some(port) = server.port.as_ref().map(|p| p.number) else {
                continue;
            };
            let mut with: BTreeSet<String> = BTreeSet::new();
            for (j, (other_r, other)) in gateways.iter().enumerate() {
                if i == j || other_r.reference() == r.reference() || other.selector.is_empty() {
                    continue;
                }
                let clash = other.servers.iter().any(|o| {
                    o.port.as_ref().map(|p| p.number) == Some(port)
                        && o.bind == server.bind
                        && o.hosts.iter().any(|h| server.hosts.contains(h))
                });
                if clash && same_workloads(mesh, gw, other) {
                    with.insert(format!("{}/{}", other_r.namespace(), other_r.name()));
                }
            }
            if with.is_empty() {
                continue;
            }
            out.push(finding(
                r,
                &format!("spec.servers[{si}]"),
                Severity::Error,
                code::CONFLICTING_GATEWAYS,
                format!(
                    "Gateway(s) {} also serve host(s) {} on port {port} of the workloads selected by {}; only one Gateway can own a host on a port",
                    with.into_iter().collect::<Vec<_>>().join(", "),
                    server.hosts.join(", "),
                    selector_text(gw)
                ),
            ));
        }
    }
}

/// A server port that no Service of the gateway's workloads exposes (as `port` or
/// `targetPort`): traffic sent to the gateway Service cannot reach it (Istio's IST0162).
/// Only checked when the configuration holds the gateway's workloads.
fn ports_on_service(
    mesh: &Mesh<'_>,
    gateways: &[(&Resource, &Gateway)],
    out: &mut Vec<Diagnostic>,
) {
    let mut services: HashMap<&str, Vec<&Resource>> = HashMap::new();
    for s in mesh.resources {
        if matches!(s.spec, Spec::Service(_)) {
            services.entry(s.namespace()).or_default().push(s);
        }
    }
    for (r, gw) in gateways {
        if gw.selector.is_empty() {
            continue;
        }
        let selected: Vec<usize> = (0..mesh.workloads.len())
            .filter(|&i| selector_matches(&gw.selector, mesh.workloads[i].labels))
            .collect();
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        if selected.is_empty() {
            if !selects_builtin_ingress(gw) {
                continue; // WA0106's business.
            }
            // The ingress gateway every mesh runs, with its default Service unless the
            // configuration defines one for it.
            let builtin: std::collections::BTreeMap<String, String> = BUILTIN_INGRESS_LABELS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let own: Vec<&Resource> = services
                .values()
                .flatten()
                .copied()
                .filter(|s| match &s.spec {
                    Spec::Service(svc) => {
                        !svc.spec.selector.is_empty()
                            && selector_matches(&svc.spec.selector, &builtin)
                    }
                    _ => false,
                })
                .collect();
            if own.is_empty() {
                ports.extend(DEFAULT_INGRESS_PORTS);
            }
            for s in own {
                if let Spec::Service(svc) = &s.spec {
                    for p in &svc.spec.ports {
                        ports.insert(p.port);
                        if let Some(IntOrString::Int(t)) = &p.target_port {
                            ports.insert(*t);
                        }
                    }
                }
            }
        }
        for &wi in &selected {
            let w = &mesh.workloads[wi];
            for s in services.get(w.resource.namespace()).into_iter().flatten() {
                let Spec::Service(svc) = &s.spec else {
                    continue;
                };
                if svc.spec.selector.is_empty() || !selector_matches(&svc.spec.selector, w.labels) {
                    continue;
                }
                for p in &svc.spec.ports {
                    if p.protocol
                        .as_deref()
                        .is_some_and(|p| !p.eq_ignore_ascii_case("TCP"))
                    {
                        continue;
                    }
                    ports.insert(p.port);
                    match &p.target_port {
                        Some(IntOrString::Int(t)) => {
                            ports.insert(*t);
                        }
                        Some(IntOrString::String(name)) => {
                            if let Some((_, t)) =
                                w.ports.iter().find(|(n, _)| *n == Some(name.as_str()))
                            {
                                ports.insert(*t);
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        for (si, server) in gw.servers.iter().enumerate() {
            let Some(port) = server.port.as_ref().map(|p| p.number) else {
                continue;
            };
            if !ports.contains(&port) {
                out.push(finding(
                    r,
                    &format!("spec.servers[{si}].port.number"),
                    Severity::Warning,
                    code::GATEWAY_PORT_NOT_ON_SERVICE,
                    format!(
                        "port {port} is not a port (or targetPort) of any Service of the gateway workloads selected by {}; it cannot be reached through the gateway's Service",
                        selector_text(gw)
                    ),
                ));
            }
        }
    }
}

/// A VirtualService bound to a Gateway none of whose server hosts (`host`, `ns/host`,
/// `./host`, `*/host`, read for the VirtualService's namespace) match any of its hosts: the
/// gateway serves none of its routes (Istio's IST0132).
fn virtual_service_hosts(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for (r, vs) in mesh.virtual_services() {
        for (i, reference) in vs.gateways.iter().enumerate() {
            if reference == "mesh" {
                continue;
            }
            let (ns, name) = reference
                .split_once('/')
                .unwrap_or((r.namespace(), reference.as_str()));
            let Some(gw_resource) = mesh.gateways.get(&(ns, name)) else {
                continue; // WA0101
            };
            let Spec::Gateway(gw) = &gw_resource.spec else {
                continue;
            };
            let hosts: Vec<String> = gw.servers.iter().flat_map(|s| s.hosts.clone()).collect();
            let served = names_for_namespace(&hosts, r.namespace(), gw_resource.namespace());
            let any = served
                .iter()
                .any(|g| vs.hosts.iter().any(|h| matches(g, h)));
            if !any {
                out.push(finding(
                    r,
                    &format!("spec.gateways[{i}]"),
                    Severity::Warning,
                    code::VIRTUAL_SERVICE_HOST_NOT_IN_GATEWAY,
                    format!(
                        "Gateway {ns}/{name} serves none of the hosts [{}] for namespace {} (its hosts: [{}]); the gateway does not route this VirtualService",
                        vs.hosts.join(", "),
                        r.namespace(),
                        hosts.join(", ")
                    ),
                ));
            }
        }
    }
}
