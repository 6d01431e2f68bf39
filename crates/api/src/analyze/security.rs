//! Findings about the security policies: what weft reads but does not enforce (never silent),
//! RequestAuthentications and PeerAuthentications that select no workload, conflicting
//! PeerAuthentications, AuthorizationPolicies that rely on peer identities where mutual TLS
//! is disabled, and JWT rules without keys.

use std::collections::BTreeMap;

use super::finding;
use super::mesh::{Mesh, WorkloadView};
use crate::common::{WorkloadSelector, selector_matches};
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::{Resource, Spec};
use crate::security::authorization_policy::{Action, AuthorizationPolicy};
use crate::security::peer_authentication::{MtlsMode, PeerAuthentication};
use crate::security::request_authentication::{JwtPresence, RequestAuthentication};

/// The `when` keys weft evaluates (besides `request.headers[...]`, `request.auth.claims[...]`
/// and `source.serviceAccount`, which it rewrites).
const ENFORCED_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for r in mesh.resources {
        match &r.spec {
            Spec::AuthorizationPolicy(ap) => {
                authorization_not_enforced(r, ap, out);
                principals_without_mtls(mesh, r, ap, out);
            }
            Spec::RequestAuthentication(ra) => {
                request_authentication(r, ra, out);
                selects_nothing(mesh, r, ra.selector.as_ref(), targeted_ra(ra), out);
            }
            Spec::PeerAuthentication(pa) => {
                selects_nothing(mesh, r, pa.selector.as_ref(), false, out);
            }
            _ => {}
        }
    }
    conflicting_peer_authentications(mesh, out);
}

fn not_enforced(r: &Resource, field: &str, message: String) -> Diagnostic {
    finding(r, field, Severity::Warning, code::NOT_ENFORCED, message)
}

fn targeted_ra(ra: &RequestAuthentication) -> bool {
    ra.target_ref.is_some() || !ra.target_refs.is_empty()
}

/// What of an AuthorizationPolicy weft does not enforce: it fails closed, and says so.
fn authorization_not_enforced(r: &Resource, ap: &AuthorizationPolicy, out: &mut Vec<Diagnostic>) {
    if ap.target_ref.is_some() || !ap.target_refs.is_empty() {
        let field = if ap.target_ref.is_some() {
            "spec.targetRef"
        } else {
            "spec.targetRefs"
        };
        out.push(not_enforced(
            r,
            field,
            "policies attached by targetRef (Gateway API) are not supported by weft: the policy \
             applies to nothing"
                .into(),
        ));
    }
    if ap.action == Action::Custom {
        out.push(not_enforced(
            r,
            "spec.action",
            "CUSTOM (ext_authz) is not supported by weft: requests this policy matches are \
             denied (fail closed)"
                .into(),
        ));
    }
    let consequence = if ap.action == Action::Allow {
        "the rule is left out, it allows nothing"
    } else {
        "the policy denies every request (fail closed)"
    };
    for (i, rule) in ap.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(s) = &from.source else { continue };
            if !s.trust_domains.is_empty() || !s.not_trust_domains.is_empty() {
                out.push(not_enforced(
                    r,
                    &format!("spec.rules[{i}].from[{j}].source.trustDomains"),
                    format!("trustDomains is not supported by weft yet; {consequence}"),
                ));
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let key = c.key.as_str();
            let enforced = ENFORCED_KEYS.contains(&key)
                || key.starts_with("request.headers[")
                || key.starts_with("request.auth.claims[");
            if !enforced {
                out.push(not_enforced(
                    r,
                    &format!("spec.rules[{i}].when[{j}].key"),
                    format!("the condition key {key:?} is not supported by weft; {consequence}"),
                ));
            }
        }
    }
}

fn request_authentication(r: &Resource, ra: &RequestAuthentication, out: &mut Vec<Diagnostic>) {
    if targeted_ra(ra) {
        out.push(not_enforced(
            r,
            if ra.target_ref.is_some() {
                "spec.targetRef"
            } else {
                "spec.targetRefs"
            },
            "policies attached by targetRef (Gateway API) are not supported by weft: the policy \
             applies to nothing"
                .into(),
        ));
    }
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let at = |f: &str| format!("spec.jwtRules[{i}].{f}");
        if rule.presence == Some(JwtPresence::Required) {
            out.push(not_enforced(
                r,
                &at("presence"),
                "presence REQUIRED is not supported by weft yet: a request without a token \
                 passes (require one with an AuthorizationPolicy's requestPrincipals)"
                    .into(),
            ));
        }
        if rule.issuer.is_empty() {
            out.push(not_enforced(
                r,
                &at("issuer"),
                "a rule without an issuer is not supported by weft: it is left out".into(),
            ));
        }
        if rule.jwks.is_empty() && rule.jwks_uri.is_empty() {
            out.push(finding(
                r,
                &at("issuer"),
                Severity::Warning,
                code::JWT_RULE_WITHOUT_KEYS,
                format!(
                    "issuer {:?} has neither jwks nor jwksUri: weft does not discover keys \
                     (OpenID discovery), so every token of this issuer is refused (401)",
                    rule.issuer
                ),
            ));
        }
    }
}

/// The workloads a policy in `r`'s namespace with `selector` applies to.
fn selected<'m, 'a>(
    mesh: &'m Mesh<'a>,
    r: &Resource,
    selector: Option<&WorkloadSelector>,
) -> Vec<&'m WorkloadView<'a>> {
    let labels = selector.map(|s| &s.match_labels).filter(|l| !l.is_empty());
    let root = r.namespace() == mesh.settings.root_namespace;
    mesh.workloads
        .iter()
        .filter(|w| root || w.resource.namespace() == r.namespace())
        .filter(|w| labels.is_none_or(|l| selector_matches(l, w.labels)))
        .collect()
}

/// A RequestAuthentication or PeerAuthentication that applies to no workload of the
/// configuration (AuthorizationPolicies: WA0128).
pub(super) fn selects_nothing(
    mesh: &Mesh<'_>,
    r: &Resource,
    selector: Option<&WorkloadSelector>,
    targeted: bool,
    out: &mut Vec<Diagnostic>,
) {
    if targeted || mesh.workloads.is_empty() || !selected(mesh, r, selector).is_empty() {
        return;
    }
    let (field, what) = match selector.map(|s| &s.match_labels).filter(|l| !l.is_empty()) {
        Some(l) => (
            "spec.selector",
            format!(
                "no workload has the labels {}",
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        None => (
            "metadata.namespace",
            format!("namespace {} has no workload", r.namespace()),
        ),
    };
    out.push(finding(
        r,
        field,
        Severity::Warning,
        code::POLICY_SELECTS_NOTHING,
        format!("{what} in this configuration, so the policy applies to nothing"),
    ));
}

fn peer_authentications<'a>(mesh: &Mesh<'a>) -> Vec<(&'a Resource, &'a PeerAuthentication)> {
    mesh.resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::PeerAuthentication(pa) => Some((r, pa)),
            _ => None,
        })
        .collect()
}

fn has_selector(pa: &PeerAuthentication) -> bool {
    pa.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// Two mesh-wide PeerAuthentications (root namespace, no selector), two namespace-wide ones
/// in one namespace, or two with selectors picking the same workload: which one applies is
/// undefined (Istio takes the oldest).
fn conflicting_peer_authentications(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let all = peer_authentications(mesh);
    let mut wide: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for (r, pa) in &all {
        if !has_selector(pa) {
            wide.entry(r.namespace()).or_default().push(r);
        }
    }
    for (ns, rs) in &wide {
        if rs.len() < 2 {
            continue;
        }
        let scope = if *ns == mesh.settings.root_namespace {
            "mesh-wide".to_owned()
        } else {
            format!("namespace-wide in {ns}")
        };
        for r in rs {
            let others = names(rs.iter().filter(|o| o.name() != r.name()).copied());
            out.push(finding(
                r,
                "metadata.name",
                Severity::Warning,
                code::CONFLICTING_PEER_AUTHENTICATIONS,
                format!(
                    "{} {scope} PeerAuthentications ({others} too): which one applies is \
                     undefined; keep one",
                    rs.len()
                ),
            ));
        }
    }
    for w in &mesh.workloads {
        let on: Vec<&Resource> = all
            .iter()
            .filter(|(r, pa)| {
                has_selector(pa)
                    && r.namespace() == w.resource.namespace()
                    && pa
                        .selector
                        .as_ref()
                        .is_some_and(|s| selector_matches(&s.match_labels, w.labels))
            })
            .map(|(r, _)| *r)
            .collect();
        if on.len() < 2 {
            continue;
        }
        for r in &on {
            let others = names(on.iter().filter(|o| o.name() != r.name()).copied());
            out.push(finding(
                r,
                "spec.selector",
                Severity::Warning,
                code::CONFLICTING_PEER_AUTHENTICATIONS,
                format!(
                    "{} {} is selected by this PeerAuthentication and {others}: which one \
                     applies is undefined; keep one",
                    w.resource.kind(),
                    w.resource.name()
                ),
            ));
        }
    }
}

fn names<'a>(rs: impl Iterator<Item = &'a Resource>) -> String {
    rs.map(|r| format!("{}/{}", r.namespace(), r.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mutual TLS mode that applies to workload `w`: its own PeerAuthentication's, else its
/// namespace's, else the mesh-wide one's; PERMISSIVE when none says.
fn effective_mode(mesh: &Mesh<'_>, w: &WorkloadView<'_>) -> MtlsMode {
    let all = peer_authentications(mesh);
    let ns = w.resource.namespace();
    let mode_of = |pa: &PeerAuthentication| pa.mtls.map_or(MtlsMode::Unset, |m| m.mode);
    let workload = all.iter().find(|(r, pa)| {
        r.namespace() == ns
            && has_selector(pa)
            && pa
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(&s.match_labels, w.labels))
    });
    let namespace = all
        .iter()
        .find(|(r, pa)| r.namespace() == ns && !has_selector(pa));
    let root = all
        .iter()
        .find(|(r, pa)| r.namespace() == mesh.settings.root_namespace && !has_selector(pa));
    [workload, namespace, root]
        .into_iter()
        .flatten()
        .map(|(_, pa)| mode_of(pa))
        .find(|m| *m != MtlsMode::Unset)
        .unwrap_or(MtlsMode::Permissive)
}

/// The first field of `ap` that reads the peer's identity (which only mutual TLS gives).
fn identity_field(ap: &AuthorizationPolicy) -> Option<String> {
    for (i, rule) in ap.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(s) = &from.source else { continue };
            for (name, list) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                if !list.is_empty() {
                    return Some(format!("spec.rules[{i}].from[{j}].source.{name}"));
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            if matches!(
                c.key.as_str(),
                "source.principal" | "source.namespace" | "source.serviceAccount"
            ) {
                return Some(format!("spec.rules[{i}].when[{j}].key"));
            }
        }
    }
    None
}

/// An AuthorizationPolicy that matches on peer identities, for workloads whose mutual TLS is
/// DISABLE: they never see an identity, so such a rule never matches.
fn principals_without_mtls(
    mesh: &Mesh<'_>,
    r: &Resource,
    ap: &AuthorizationPolicy,
    out: &mut Vec<Diagnostic>,
) {
    if ap.target_ref.is_some() || !ap.target_refs.is_empty() {
        return;
    }
    let Some(field) = identity_field(ap) else {
        return;
    };
    let disabled: Vec<String> = selected(mesh, r, ap.selector.as_ref())
        .into_iter()
        .filter(|w| effective_mode(mesh, w) == MtlsMode::Disable)
        .map(|w| format!("{}/{}", w.resource.namespace(), w.resource.name()))
        .collect();
    if disabled.is_empty() {
        return;
    }
    out.push(finding(
        r,
        &field,
        Severity::Warning,
        code::PRINCIPALS_WITHOUT_MTLS,
        format!(
            "the policy matches on peer identities, but mutual TLS is DISABLE for {} \
             (PeerAuthentication): no request there carries one, so what this matches on \
             is never there",
            disabled.join(", "),
        ),
    ));
}
