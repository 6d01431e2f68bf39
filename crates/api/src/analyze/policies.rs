//! Findings about AuthorizationPolicies: a policy that applies to no workload, namespaces in
//! its sources that match no namespace (Istio's IST0127 and IST0101), and principals naming a
//! service account the configuration does not have.

use std::collections::{BTreeMap, BTreeSet};

use super::finding;
use super::mesh::Mesh;
use crate::common::selector_matches;
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::Spec;

/// The service accounts the configuration shows per namespace: ServiceAccount resources and
/// the accounts its workloads run as. A namespace absent here is not known at all.
fn service_accounts<'a>(mesh: &Mesh<'a>) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut known: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in mesh.resources {
        let sa = match &r.spec {
            Spec::ServiceAccount(_) => r.name(),
            Spec::Deployment(d) => d.spec.template.spec.service_account(),
            Spec::Pod(p) => p.spec.service_account(),
            Spec::Workload(w) => w.service_account(),
            _ => continue,
        };
        known.entry(r.namespace()).or_default().insert(sa);
    }
    known
}

/// `<trust domain>/ns/<namespace>/sa/<name>` without wildcards: the namespace and account.
fn principal_account(principal: &str) -> Option<(&str, &str)> {
    if principal.contains('*') {
        return None;
    }
    let (_, rest) = principal.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains('/')).then_some((ns, sa))
}

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let accounts = service_accounts(mesh);
    // A namespace exists when a Namespace names it or a resource lives in it.
    let namespaces: BTreeSet<&str> = mesh
        .resources
        .iter()
        .map(|r| match &r.spec {
            Spec::Namespace(_) => r.name(),
            _ => r.namespace(),
        })
        .collect();
    for r in mesh.resources {
        let Spec::AuthorizationPolicy(ap) = &r.spec else {
            continue;
        };
        // A policy attached to a Gateway API resource (targetRef) has no workload selector.
        if ap.target_ref.is_some() || !ap.target_refs.is_empty() {
            continue;
        }
        let labels = ap.selector.as_ref().map(|s| &s.match_labels);
        let root = r.namespace() == mesh.settings.root_namespace;
        let found = match labels.filter(|l| !l.is_empty()) {
            // A mesh-wide policy without selector applies to every workload of the mesh.
            None if root => true,
            None => mesh
                .workloads
                .iter()
                .any(|w| w.resource.namespace() == r.namespace()),
            Some(l) if root => mesh.workloads.iter().any(|w| selector_matches(l, w.labels)),
            Some(l) => !mesh.selected(r.namespace(), l).is_empty(),
        };
        if !found {
            let what = match labels.filter(|l| !l.is_empty()) {
                Some(l) => format!(
                    "no workload has the labels {}",
                    l.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => format!("namespace {} has no workload", r.namespace()),
            };
            let field = if labels.is_some() {
                "spec.selector"
            } else {
                "metadata.namespace"
            };
            out.push(finding(
                r,
                field,
                Severity::Warning,
                code::AUTHORIZATION_POLICY_NO_WORKLOAD,
                format!("{what} in this configuration, so the policy applies to nothing"),
            ));
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(source) = &from.source else { continue };
                for (field, list) in [
                    ("principals", &source.principals),
                    ("notPrincipals", &source.not_principals),
                ] {
                    for (k, p) in list.iter().enumerate() {
                        let Some((ns, sa)) = principal_account(p) else {
                            continue;
                        };
                        // Only where the configuration shows the namespace's accounts.
                        let Some(known) = accounts.get(ns) else {
                            continue;
                        };
                        if known.contains(sa) {
                            continue;
                        }
                        out.push(finding(
                            r,
                            &format!("spec.rules[{i}].from[{j}].source.{field}[{k}]"),
                            Severity::Warning,
                            code::AUTHORIZATION_POLICY_PRINCIPAL_NOT_FOUND,
                            format!(
                                "{p:?}: namespace {ns} has no service account {sa:?} in this configuration (it has {})",
                                known.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
                for (field, list) in [
                    ("namespaces", &source.namespaces),
                    ("notNamespaces", &source.not_namespaces),
                ] {
                    for (k, ns) in list.iter().enumerate() {
                        if namespaces.iter().any(|n| namespace_matches(ns, n)) {
                            continue;
                        }
                        out.push(finding(
                            r,
                            &format!("spec.rules[{i}].from[{j}].source.{field}[{k}]"),
                            Severity::Warning,
                            code::AUTHORIZATION_POLICY_NAMESPACE_NOT_FOUND,
                            format!("{ns:?} matches no namespace of this configuration"),
                        ));
                    }
                }
            }
        }
    }
}

/// An AuthorizationPolicy namespace pattern: exact, `*`, `prefix*` or `*suffix`.
fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return namespace.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return namespace.starts_with(prefix);
    }
    pattern == namespace
}

#[cfg(test)]
mod tests {
    use super::namespace_matches;

    #[test]
    fn principals_name_a_namespace_and_account() {
        use super::principal_account;
        assert_eq!(
            principal_account("cluster.local/ns/shop/sa/cart"),
            Some(("shop", "cart"))
        );
        assert_eq!(principal_account("cluster.local/ns/shop/sa/*"), None);
        assert_eq!(principal_account("*"), None);
        assert_eq!(principal_account("spiffe-less"), None);
    }

    #[test]
    fn namespace_patterns() {
        assert!(namespace_matches("*", "a"));
        assert!(namespace_matches("prod-*", "prod-eu"));
        assert!(namespace_matches("*-test", "httpbin-test"));
        assert!(!namespace_matches("bogus-*", "prod-eu"));
        assert!(namespace_matches("a", "a"));
        assert!(!namespace_matches("a", "b"));
    }
}
