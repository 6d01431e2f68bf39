//! Host names and visibility as Istio computes them: exact names and `*.suffix` wildcards,
//! namespace-qualified hosts (`ns/host`), and `exportTo`.
//!
//! One model for the control plane's translation and for `weft analyze`, so that what the
//! analyzer accepts is what the control plane serves. Semantics follow istio/istio
//! `pkg/config/host` (`Name.Matches`, `Name.SubsetOf`, `Names.Intersection`,
//! `NamesForNamespace`) and Istio's `exportTo` rules.

use std::cmp::Ordering;

use crate::resource::Resource;

/// Kubernetes' default cluster domain; short hosts resolve to `name.namespace.svc.<domain>`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The annotation Istio reads a Kubernetes Service's visibility from (comma-separated, like a
/// ServiceEntry's `exportTo`).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Resolves a host as Istio does: a name without a dot is a Service short name in `namespace`;
/// anything else is taken as written.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// True when `pattern` (`*.example.com`, `*`, or an exact host) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len() || pattern == "*",
        None => pattern == host,
    }
}

/// Whether a resource in `owner_namespace` with `export_to` (its own list, or the mesh config's
/// default when that is empty) is visible from `client_namespace`: `*` everyone, `.` its own
/// namespace, `~` no one, or named namespaces. An empty list is everyone, as in Istio when
/// neither the resource nor the mesh config says otherwise.
pub fn exported_to(export_to: &[String], owner_namespace: &str, client_namespace: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner_namespace == client_namespace,
        "~" => false,
        ns => ns == client_namespace,
    })
}

/// A resource's own `exportTo`, or `default` (the mesh config's) when it sets none.
pub fn or_default<'a>(export_to: &'a [String], default: &'a [String]) -> &'a [String] {
    if export_to.is_empty() {
        default
    } else {
        export_to
    }
}

/// A Kubernetes Service's `exportTo`, from its `networking.istio.io/exportTo` annotation
/// (empty when unset: the mesh default).
pub fn service_export_to(service: &Resource) -> Vec<String> {
    service
        .metadata
        .annotations
        .get(EXPORT_TO_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn is_wildcard(h: &str) -> bool {
    h.starts_with('*')
}

/// True when every name `a` covers is also covered by `b` (`a.com` ⊆ `*.com`, `*.a.com` ⊆
/// `*.com`, anything ⊆ `*`).
pub fn subset_of(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// True when `a` and `b` share at least one name (either covers the other).
pub fn matches(a: &str, b: &str) -> bool {
    subset_of(a, b) || subset_of(b, a)
}

/// The names both lists cover, each the narrower of a matching pair, in `a`'s order, without
/// duplicates: `[foo.com, *.net] ∩ [*.com, bar.net] = [foo.com, bar.net]`.
pub fn intersection(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in a {
        for y in b {
            let narrower = if subset_of(x, y) {
                x
            } else if subset_of(y, x) {
                y
            } else {
                continue;
            };
            if !out.contains(narrower) {
                out.push(narrower.clone());
            }
        }
    }
    out
}

/// The hosts of a Gateway server that apply to resources in `namespace`: `ns/host` only for
/// that namespace (or `*/host`), plain hosts for every namespace; the `ns/` is stripped.
/// `./host` is the Gateway's own namespace (`gateway_namespace`).
pub fn names_for_namespace(
    hosts: &[String],
    namespace: &str,
    gateway_namespace: &str,
) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            Some((ns, name)) => {
                let ns = if ns == "." { gateway_namespace } else { ns };
                (ns == "*" || ns == namespace).then(|| name.to_owned())
            }
            None => Some(h.clone()),
        })
        .collect()
}

/// Istio's host order: exact names before wildcards, longer before shorter, then alphabetical.
pub fn more_specific_first(a: &str, b: &str) -> Ordering {
    is_wildcard(a)
        .cmp(&is_wildcard(b))
        .then_with(|| b.len().cmp(&a.len()))
        .then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn subset_and_match_follow_istio() {
        let cases = [
            // (a, b, a ⊆ b, a matches b)
            ("foo.com", "foo.com", true, true),
            ("foo.com", "bar.com", false, false),
            ("foo.com", "*.com", true, true),
            ("*.com", "foo.com", false, true),
            ("*.foo.com", "foo.com", false, false),
            ("*.foo.com", "*.com", true, true),
            ("*.com", "*.foo.com", false, true),
            ("foo.com", "*", true, true),
            ("*", "*.com", false, true),
            ("*.com", "*", true, true),
            ("*", "*", true, true),
        ];
        for (a, b, subset, matched) in cases {
            assert_eq!(subset_of(a, b), subset, "{a} ⊆ {b}");
            assert_eq!(matches(a, b), matched, "{a} ~ {b}");
        }
    }

    #[test]
    fn intersection_keeps_the_narrower_name() {
        let cases: [(&[&str], &[&str], &[&str]); 5] = [
            (&["foo.com", "bar.com"], &["*.com"], &["foo.com", "bar.com"]),
            (
                &["foo.com", "*.net"],
                &["*.com", "bar.net"],
                &["foo.com", "bar.net"],
            ),
            (&["foo.com", "*.net"], &["*.bar.net"], &["*.bar.net"]),
            (&["foo.com"], &["bar.com"], &[]),
            (
                &["*"],
                &["a.com", "*.b.com", "a.com"],
                &["a.com", "*.b.com"],
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                intersection(&names(a), &names(b)),
                names(want),
                "{a:?} ∩ {b:?}"
            );
        }
    }

    #[test]
    fn namespace_qualified_hosts() {
        let hosts = names(&["ns1/foo.com", "*/bar.com", "baz.com", "./gw.com"]);
        assert_eq!(
            names_for_namespace(&hosts, "ns1", "istio-system"),
            names(&["foo.com", "bar.com", "baz.com"])
        );
        assert_eq!(
            names_for_namespace(&hosts, "istio-system", "istio-system"),
            names(&["bar.com", "baz.com", "gw.com"])
        );
    }

    #[test]
    fn specificity_order() {
        let mut v = names(&["*", "*.a.com", "b.com", "*.com", "long.b.com", "a.com"]);
        v.sort_by(|a, b| more_specific_first(a, b));
        assert_eq!(
            v,
            names(&["long.b.com", "a.com", "b.com", "*.a.com", "*.com", "*"])
        );
    }
}
