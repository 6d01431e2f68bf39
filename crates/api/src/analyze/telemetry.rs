//! Findings about Telemetry resources: providers the mesh does not declare (WA0144), several
//! Telemetries competing for one scope (WA0145), selectors that select nothing (WA0140), and
//! what weft reads but does not apply yet (WA0139: tracing, metrics, targetRef, access log
//! providers it does not write).

use std::collections::BTreeMap;

use super::finding;
use super::mesh::Mesh;
use super::security::selects_nothing;
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::{Resource, Spec};
use crate::telemetry::{BUILTIN_PROVIDERS, ProviderRef, Telemetry};

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let mut scopes: BTreeMap<(String, Option<String>), Vec<&Resource>> = BTreeMap::new();
    for r in mesh.resources {
        let Spec::Telemetry(t) = &r.spec else {
            continue;
        };
        providers(mesh, r, t, out);
        not_applied(mesh, r, t, out);
        let targeted = t.target_ref.is_some() || !t.target_refs.is_empty();
        selects_nothing(mesh, r, t.selector.as_ref(), targeted, out);
        if !targeted {
            let selector = t.selector.as_ref().map(|s| format!("{:?}", s.match_labels));
            scopes
                .entry((r.namespace().to_owned(), selector))
                .or_default()
                .push(r);
        }
    }
    for ((ns, selector), mut rs) in scopes {
        if rs.len() < 2 {
            continue;
        }
        rs.sort_by(|a, b| a.name().cmp(b.name()));
        let what = match selector {
            None if ns == mesh.settings.root_namespace => "the mesh".to_owned(),
            None => format!("namespace {ns}"),
            Some(_) => "the same workloads".to_owned(),
        };
        for r in &rs[1..] {
            out.push(finding(
                r,
                "metadata.name",
                Severity::Warning,
                code::CONFLICTING_TELEMETRIES,
                format!(
                    "Telemetry {} also applies to {what}: only one Telemetry is used per scope \
                     (weft takes the first by name, {}; Istio the oldest), so this one is ignored",
                    rs[0].name(),
                    rs[0].name()
                ),
            ));
        }
    }
}

/// Every provider name a Telemetry uses must be declared or built in.
fn providers(mesh: &Mesh<'_>, r: &Resource, t: &Telemetry, out: &mut Vec<Diagnostic>) {
    let known = |name: &str| {
        BUILTIN_PROVIDERS.contains(&name)
            || mesh
                .settings
                .extension_providers
                .iter()
                .any(|p| p.name == name)
    };
    let mut check = |section: &str, i: usize, list: &[ProviderRef]| {
        for (j, p) in list.iter().enumerate() {
            if p.name.is_empty() || known(&p.name) {
                continue;
            }
            out.push(finding(
                r,
                &format!("spec.{section}[{i}].providers[{j}].name"),
                Severity::Error,
                code::TELEMETRY_UNKNOWN_PROVIDER,
                format!(
                    "provider {:?} is not in meshConfig.extensionProviders and is not a built-in \
                     provider ({})",
                    p.name,
                    BUILTIN_PROVIDERS.join(", ")
                ),
            ));
        }
    };
    for (i, a) in t.access_logging.iter().enumerate() {
        check("accessLogging", i, &a.providers);
    }
    for (i, a) in t.tracing.iter().enumerate() {
        check("tracing", i, &a.providers);
    }
    for (i, a) in t.metrics.iter().enumerate() {
        check("metrics", i, &a.providers);
    }
}

fn not_applied(mesh: &Mesh<'_>, r: &Resource, t: &Telemetry, out: &mut Vec<Diagnostic>) {
    let mut note = |field: String, message: String| {
        out.push(finding(
            r,
            &field,
            Severity::Warning,
            code::NOT_ENFORCED,
            message,
        ));
    };
    if t.target_ref.is_some() || !t.target_refs.is_empty() {
        let field = if t.target_ref.is_some() {
            "spec.targetRef"
        } else {
            "spec.targetRefs"
        };
        note(
            field.into(),
            "Telemetry with targetRef(s) is not applied by weft yet; use a selector".into(),
        );
    }
    // Tracing and metrics are applied, but for these fields.
    for (i, tr) in t.tracing.iter().enumerate() {
        if tr.use_request_id_for_trace_sampling.is_some() || tr.enable_istio_tags.is_some() {
            note(
                format!("spec.tracing[{i}]"),
                "useRequestIdForTraceSampling and enableIstioTags are not applied by weft".into(),
            );
        }
    }
    for (i, m) in t.metrics.iter().enumerate() {
        if m.reporting_interval.is_some() {
            note(
                format!("spec.metrics[{i}].reportingInterval"),
                "weft's metrics are read when scraped; reportingInterval is not applied".into(),
            );
        }
        for (j, o) in m.overrides.iter().enumerate() {
            let at = format!("spec.metrics[{i}].overrides[{j}]");
            let selector = o.match_.as_ref();
            if selector.is_some_and(|s| s.custom_metric.is_some()) {
                note(
                    format!("{at}.match.customMetric"),
                    "custom metrics are not supported by weft: the override is not applied".into(),
                );
            }
            if selector.and_then(|s| s.metric).is_some_and(|m| {
                matches!(
                    m,
                    crate::telemetry::IstioMetric::GrpcRequestMessages
                        | crate::telemetry::IstioMetric::GrpcResponseMessages
                )
            }) {
                note(
                    format!("{at}.match.metric"),
                    "weft reports no gRPC message counts: the override changes nothing".into(),
                );
            }
            for (tag, ov) in &o.tag_overrides {
                if ov.operation == crate::telemetry::TagOperation::Upsert {
                    note(
                        format!("{at}.tagOverrides.{tag}"),
                        "tag UPSERT (a CEL value) is not applied by weft; REMOVE is".into(),
                    );
                }
            }
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        if a.providers.len() > 1 {
            note(
                format!("spec.accessLogging[{i}].providers"),
                "a listener writes one access log in weft: only the first provider's is written"
                    .into(),
            );
        }
        for (j, p) in a.providers.iter().enumerate() {
            let decl = mesh
                .settings
                .extension_providers
                .iter()
                .find(|d| d.name == p.name);
            if let Some(d) = decl.filter(|d| d.kind() != "envoyFileAccessLog") {
                note(
                    format!("spec.accessLogging[{i}].providers[{j}].name"),
                    format!(
                        "provider {:?} is {}, which weft does not write access logs to (only \
                         envoyFileAccessLog and the built-in `envoy`)",
                        p.name,
                        d.kind()
                    ),
                );
            }
            if p.name == "prometheus" {
                note(
                    format!("spec.accessLogging[{i}].providers[{j}].name"),
                    "`prometheus` is a metrics provider, not an access log".into(),
                );
            }
        }
    }
}
