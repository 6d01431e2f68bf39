//! Findings about ServiceEntries: TCP ports that need an address (Istio's IST0134), and one
//! host and port given different protocols (IST0177).

use std::collections::{BTreeMap, BTreeSet};

use super::finding;
use super::mesh::{Mesh, export_scope, scopes_meet};
use crate::diag::{Diagnostic, Severity, code};
use crate::host::or_default;
use crate::networking::ServiceEntry;
use crate::resource::{Resource, Spec};

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let entries: Vec<(&Resource, &ServiceEntry)> = mesh
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ServiceEntry(se) => Some((r, se)),
            _ => None,
        })
        .collect();
    addresses_required(mesh, &entries, out);
    conflicting_protocols(mesh, &entries, out);
}

/// A TCP port (or one without protocol) of a ServiceEntry without `addresses`: the proxy can
/// only tell such connections apart by destination address, so without one (or one the
/// control plane allocated, `status.addresses`, or DNS capture with address auto-allocation in
/// the mesh config) the entry cannot be told from other TCP services on that port.
fn addresses_required(
    mesh: &Mesh<'_>,
    entries: &[(&Resource, &ServiceEntry)],
    out: &mut Vec<Diagnostic>,
) {
    if mesh.settings.auto_allocates_addresses() {
        return;
    }
    for (r, se) in entries {
        if !se.addresses.is_empty() || !se.allocated_addresses.is_empty() {
            continue;
        }
        for (i, port) in se.ports.iter().enumerate() {
            if port.protocol.is_empty() || port.protocol.eq_ignore_ascii_case("TCP") {
                out.push(finding(
                    r,
                    &format!("spec.ports[{i}]"),
                    Severity::Warning,
                    code::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                    format!(
                        "port {} serves TCP{}, and the ServiceEntry has no addresses: set `addresses` (or enable DNS capture with address auto-allocation, ISTIO_META_DNS_CAPTURE and ISTIO_META_DNS_AUTO_ALLOCATE) so that its connections can be told from other TCP services on port {}",
                        port.number,
                        if port.protocol.is_empty() { " (no protocol)" } else { "" },
                        port.number
                    ),
                ));
            }
        }
    }
}

/// Two ServiceEntries, visible together in some namespace, that give one host and port
/// different protocols: which protocol the proxy serves is undefined. Each is reported once.
fn conflicting_protocols(
    mesh: &Mesh<'_>,
    entries: &[(&Resource, &ServiceEntry)],
    out: &mut Vec<Diagnostic>,
) {
    // (host, port) -> (entry index, protocol, port index, scope)
    type Claim = (usize, String, usize, Option<Vec<String>>);
    let mut by_key: BTreeMap<(String, u32), Vec<Claim>> = BTreeMap::new();
    for (e, (r, se)) in entries.iter().enumerate() {
        let scope = export_scope(
            or_default(&se.export_to, &mesh.settings.default_service_export_to),
            r.namespace(),
        );
        for h in &se.hosts {
            for (pi, p) in se.ports.iter().enumerate() {
                by_key.entry((h.clone(), p.number)).or_default().push((
                    e,
                    p.protocol.to_ascii_uppercase(),
                    pi,
                    scope.clone(),
                ));
            }
        }
    }
    let mut reported: BTreeSet<usize> = BTreeSet::new();
    for ((host, port), claims) in &by_key {
        for (k, a) in claims.iter().enumerate() {
            let others: Vec<&Claim> = claims
                .iter()
                .enumerate()
                .filter(|(j, b)| {
                    *j != k
                        && b.0 != a.0
                        && b.1 != a.1
                        && entries[b.0].0.reference() != entries[a.0].0.reference()
                        && scopes_meet(&a.3, &b.3)
                })
                .map(|(_, b)| b)
                .collect();
            if others.is_empty() || !reported.insert(a.0) {
                continue;
            }
            let (r, _) = entries[a.0];
            let names: Vec<String> = others
                .iter()
                .map(|b| {
                    let o = entries[b.0].0;
                    format!("ServiceEntry {}/{} ({})", o.namespace(), o.name(), b.1)
                })
                .collect();
            out.push(finding(
                r,
                &format!("spec.ports[{}].protocol", a.2),
                Severity::Warning,
                code::CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                format!(
                    "host {host} port {port} is {} here but {} in {}; which protocol applies is undefined",
                    if a.1.is_empty() { "unset" } else { &a.1 },
                    others.iter().map(|b| b.1.as_str()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "),
                    names.join(", ")
                ),
            ));
        }
    }
}
