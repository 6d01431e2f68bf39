//! Findings about Sidecar resources: which one applies to a workload must be clear. In a
//! namespace, at most one Sidecar without `workloadSelector`, no workload selected by two
//! Sidecars, and a selector that selects something (Istio's IST0111, IST0110, IST0101).

use std::collections::{BTreeMap, BTreeSet};

use super::finding;
use super::mesh::Mesh;
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::{Resource, Spec};

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let mut defaults: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    // Workload index -> the Sidecars selecting it.
    let mut selecting: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
    for r in mesh.resources {
        let Spec::Sidecar(sc) = &r.spec else { continue };
        let labels = sc
            .workload_selector
            .as_ref()
            .map(|s| &s.labels)
            .filter(|l| !l.is_empty());
        let Some(labels) = labels else {
            defaults.entry(r.namespace()).or_default().push(r);
            continue;
        };
        let selected = mesh.selected(r.namespace(), labels);
        if selected.is_empty() {
            out.push(finding(
                r,
                "spec.workloadSelector.labels",
                Severity::Warning,
                code::SIDECAR_SELECTOR_NO_WORKLOAD,
                format!(
                    "selects no workload in namespace {} of this configuration (a Sidecar applies only to its own namespace)",
                    r.namespace()
                ),
            ));
        }
        for w in selected {
            selecting.entry(w).or_default().push(r);
        }
    }
    for sidecars in defaults.values() {
        let distinct: BTreeSet<_> = sidecars.iter().map(|r| r.reference()).collect();
        if distinct.len() < 2 {
            continue; // One Sidecar, maybe defined in two files (WA0006).
        }
        for r in sidecars {
            out.push(finding(
                r,
                "spec",
                Severity::Error,
                code::MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                format!(
                    "namespace {} has several Sidecars without workloadSelector ({}); which one applies is undefined",
                    r.namespace(),
                    names(&distinct)
                ),
            ));
        }
    }
    // Each Sidecar once, with every other Sidecar that selects one of its workloads.
    let mut clashes: BTreeMap<String, (&Resource, BTreeSet<crate::ResourceRef>)> = BTreeMap::new();
    for sidecars in selecting.values() {
        let distinct: BTreeSet<_> = sidecars.iter().map(|r| r.reference()).collect();
        if distinct.len() < 2 {
            continue;
        }
        for r in sidecars {
            let entry = clashes
                .entry(r.reference().to_string())
                .or_insert_with(|| (r, BTreeSet::new()));
            entry
                .1
                .extend(distinct.iter().filter(|o| **o != r.reference()).cloned());
        }
    }
    for (r, others) in clashes.into_values() {
        out.push(finding(
            r,
            "spec.workloadSelector",
            Severity::Error,
            code::CONFLICTING_SIDECAR_SELECTORS,
            format!(
                "selects workloads that {} also select(s); which Sidecar applies to them is undefined",
                names(&others)
            ),
        ));
    }
}

fn names(refs: &BTreeSet<crate::ResourceRef>) -> String {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect::<Vec<_>>()
        .join(", ")
}
