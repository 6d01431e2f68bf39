//! Findings about DestinationRules on their own hosts: a host that matches no service, and
//! subsets that select no workload of it (Istio's IST0174 and IST0173).

use std::collections::{BTreeMap, BTreeSet};

use super::finding;
use super::mesh::{Mesh, ServiceHost, resolve_host};
use crate::common::selector_matches;
use crate::diag::{Diagnostic, Severity, code};
use crate::host::matches;
use crate::networking::DestinationRule;
use crate::resource::{Resource, Spec};

/// Labels a proxy derives from where the workload runs (its node), not from the workload's
/// own labels; `weft analyze` does not know nodes, so a subset may name any value of them.
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
    "topology.istio.io/network",
    "topology.istio.io/cluster",
    "kubernetes.io/hostname",
];

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    // (host, subset) pairs some route sends requests to.
    let mut routed: BTreeSet<(String, String)> = BTreeSet::new();
    for (r, vs) in mesh.virtual_services() {
        for (_, d) in super::routes::destinations(vs) {
            if !d.subset.is_empty() {
                routed.insert((resolve_host(&d.host, r.namespace()), d.subset.clone()));
            }
        }
    }
    for (r, dr) in mesh.destination_rules() {
        let host = resolve_host(&dr.host, r.namespace());
        let services: Vec<&ServiceHost<'_>> = if host.starts_with('*') {
            mesh.services
                .iter()
                .filter(|s| matches(&host, &s.host))
                .collect()
        } else {
            mesh.services_for(&host).collect()
        };
        let visible: Vec<&ServiceHost<'_>> = services
            .iter()
            .copied()
            .filter(|s| mesh.service_visible(s, r.namespace()))
            .collect();
        if visible.is_empty() {
            out.push(finding(
                r,
                "spec.host",
                Severity::Warning,
                code::DESTINATION_RULE_HOST_NOT_FOUND,
                format!(
                    "host {host} matches no Service or ServiceEntry visible from namespace {}, so the rule applies to nothing",
                    r.namespace()
                ),
            ));
            continue;
        }
        subsets(mesh, r, dr, &visible, &routed, out);
    }
}

/// Each subset a route sends requests to must select some workload of the rule's service:
/// the service's selector and the subset's labels together. Checked only when the
/// configuration holds workloads of the service at all (otherwise they are defined
/// elsewhere); a subset no route uses is harmless (bookinfo defines `v2` of services that have
/// only `v1` until a task deploys it).
fn subsets(
    mesh: &Mesh<'_>,
    r: &Resource,
    dr: &DestinationRule,
    services: &[&ServiceHost<'_>],
    routed: &BTreeSet<(String, String)>,
    out: &mut Vec<Diagnostic>,
) {
    let host = resolve_host(&dr.host, r.namespace());
    // The label sets of the workloads behind the services.
    let mut candidates: Vec<&BTreeMap<String, String>> = Vec::new();
    for s in services {
        match &s.resource.spec {
            Spec::Service(svc) if !svc.spec.selector.is_empty() => {
                for i in mesh.selected(s.resource.namespace(), &svc.spec.selector) {
                    candidates.push(mesh.workloads[i].labels);
                }
            }
            Spec::ServiceEntry(se) => match &se.workload_selector {
                Some(sel) if !sel.labels.is_empty() => {
                    for i in mesh.selected(s.resource.namespace(), &sel.labels) {
                        candidates.push(mesh.workloads[i].labels);
                    }
                }
                _ => candidates.extend(se.endpoints.iter().map(|e| &e.labels)),
            },
            _ => {}
        }
    }
    if candidates.is_empty() {
        return;
    }
    for (i, subset) in dr.subsets.iter().enumerate() {
        if !routed.contains(&(host.clone(), subset.name.clone())) {
            continue;
        }
        let own: BTreeMap<String, String> = subset
            .labels
            .iter()
            .filter(|(k, v)| !TOPOLOGY_LABELS.contains(&k.as_str()) || v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if candidates.iter().any(|l| selector_matches(&own, l)) {
            continue;
        }
        out.push(finding(
            r,
            &format!("spec.subsets[{i}].labels"),
            Severity::Warning,
            code::DESTINATION_RULE_SUBSET_NO_WORKLOAD,
            format!(
                "subset {:?} selects none of the workloads of {} in this configuration; requests routed to it would fail (503, no healthy upstream)",
                subset.name, host
            ),
        ));
    }
}
