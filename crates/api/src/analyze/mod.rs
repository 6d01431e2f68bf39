//! Cross-resource analysis (`weft analyze`): findings that no single resource shows, in the
//! spirit of `istioctl analyze`. Each finding has a stable code documented in
//! docs/ANALYZE.md.
//!
//! The analyzers read a [`Mesh`]: an index of the loaded resources by host, gateway and
//! workload, built once.

mod delegates;
mod destination_rules;
mod gateways;
mod ingress;
mod mesh;
mod policies;
mod routes;
mod security;
mod service_entries;
mod settings;
mod sidecars;
mod telemetry;
mod workloads;

use std::path::Path;

pub use mesh::{CLUSTER_DOMAIN, Mesh, exported_to, host_matches, resolve_host};
pub use settings::MeshSettings;

use crate::diag::{Diagnostic, Severity};
use crate::resource::Resource;

/// Labels of the gateways every weft mesh runs (`weft up` and the default install profile),
/// as Istio's default profile does: a Gateway selecting them has a workload.
pub const BUILTIN_GATEWAY_LABELS: &[(&str, &str)] =
    &[("istio", "ingressgateway"), ("istio", "egressgateway")];

/// The result of `weft analyze`.
#[derive(Debug, Default)]
pub struct Report {
    /// Loader and analyzer findings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Resources that loaded (and so were analyzed).
    pub resources: usize,
    /// Resources read but not loaded: each broke its schema or a field rule (WA0003).
    pub rejected: usize,
    pub files: usize,
    /// Some input could not be read or parsed.
    pub unreadable: bool,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Loads `paths` and analyzes what loaded.
pub fn analyze_paths<P: AsRef<Path>>(paths: &[P]) -> Report {
    analyze_paths_with(paths, &MeshSettings::default())
}

/// Loads `paths` and analyzes what loaded, with the mesh-wide settings of `mesh` (`weft
/// analyze --mesh-config`). Resources that broke a field rule are analyzed too: their other
/// problems are reported, not hidden behind the first.
pub fn analyze_paths_with<P: AsRef<Path>>(paths: &[P], mesh: &MeshSettings) -> Report {
    let loaded = crate::load::load_paths(paths);
    let mut diagnostics = loaded.diagnostics.clone();
    let loaded_count = loaded.resources.len();
    let unreadable = loaded.unreadable();
    let mut all = loaded.resources;
    all.extend(loaded.rejected);
    diagnostics.extend(analyze_with(&all, mesh));
    sort(&mut diagnostics);
    let rejected: std::collections::BTreeSet<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && d.code == crate::diag::code::SCHEMA)
        .filter_map(|d| d.resource.as_ref().map(ToString::to_string))
        .collect();
    Report {
        unreadable,
        resources: loaded_count,
        rejected: rejected.len(),
        files: loaded.files,
        diagnostics,
    }
}

/// Cross-resource findings for a set of valid resources.
pub fn analyze(resources: &[Resource]) -> Vec<Diagnostic> {
    analyze_with(resources, &MeshSettings::default())
}

/// Cross-resource findings with the mesh-wide settings of `settings`.
pub fn analyze_with(resources: &[Resource], settings: &MeshSettings) -> Vec<Diagnostic> {
    let mesh = Mesh::with_settings(resources, settings);
    let mut out = Vec::new();
    routes::check(&mesh, &mut out);
    delegates::check(&mesh, &mut out);
    gateways::check(&mesh, &mut out);
    sidecars::check(&mesh, &mut out);
    policies::check(&mesh, &mut out);
    security::check(&mesh, &mut out);
    telemetry::check(&mesh, &mut out);
    service_entries::check(&mesh, &mut out);
    destination_rules::check(&mesh, &mut out);
    ingress::check(&mesh, &mut out);
    workloads::check(&mesh, &mut out);
    sort(&mut out);
    // Definitions replaced by a later file (WA0006) are analyzed too, and can repeat a finding
    // word for word; say it once.
    out.dedup();
    out
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        let key = |d: &Diagnostic| {
            d.location
                .as_ref()
                .map(|l| (l.file.clone(), l.document, l.line, l.column))
        };
        key(a).cmp(&key(b)).then_with(|| a.code.cmp(b.code))
    });
}

/// A finding about `resource` at `field`.
fn finding(
    resource: &Resource,
    field: &str,
    severity: Severity,
    code: &'static str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        message,
        location: resource.locate(field),
        resource: Some(resource.reference()),
        field: Some(field.to_owned()),
    }
}

#[cfg(test)]
mod tests;
