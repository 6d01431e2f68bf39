//! Findings about delegate VirtualServices (Istio's `delegate`): a root's HTTP route naming a
//! delegate that does not exist, has hosts, or is not exported to the root's namespace (the
//! control plane leaves such a route out, as istiod does), and delegates no root names.

use std::collections::HashSet;

use super::finding;
use super::mesh::{Mesh, exported_to};
use crate::diag::{Diagnostic, Severity, code};
use crate::resource::Resource;

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    // Every `namespace/name` some root names, usable or not: a delegate named by a root that
    // cannot use it is reported at the root, not again as unused.
    let mut named: HashSet<(&str, &str)> = HashSet::new();
    for (r, vs) in mesh.virtual_services() {
        for (i, http) in vs.http.iter().enumerate() {
            let Some(delegate) = &http.delegate else {
                continue;
            };
            let namespace = if delegate.namespace.is_empty() {
                r.namespace()
            } else {
                delegate.namespace.as_str()
            };
            named.insert((namespace, delegate.name.as_str()));
            let path = format!("spec.http[{i}].delegate");
            if let Some(d) = unusable(mesh, r, &path, namespace, &delegate.name) {
                out.push(d);
            }
        }
    }
    for (r, vs) in mesh.virtual_services() {
        if vs.is_delegate() && !named.contains(&(r.namespace(), r.name())) {
            out.push(finding(
                r,
                "metadata.name",
                Severity::Info,
                code::DELEGATE_NOT_REFERENCED,
                "no VirtualService names it in http[].delegate, and without hosts it routes \
                 nothing on its own (the root may be defined elsewhere)"
                    .to_owned(),
            ));
        }
    }
}

/// Why the root `r` cannot use the delegate `namespace/name` it names at `path`, as the
/// control plane decides (crates/control/src/translate/delegate.rs, `find_delegate`).
fn unusable(
    mesh: &Mesh<'_>,
    r: &Resource,
    path: &str,
    namespace: &str,
    name: &str,
) -> Option<Diagnostic> {
    let Some((dr, dvs)) = mesh.virtual_service(namespace, name) else {
        return Some(finding(
            r,
            path,
            Severity::Error,
            code::DELEGATE_NOT_FOUND,
            format!(
                "delegate {namespace}/{name} is not defined by any VirtualService; the route is \
                 left out"
            ),
        ));
    };
    if !dvs.is_delegate() {
        return Some(finding(
            r,
            path,
            Severity::Error,
            code::DELEGATE_HAS_HOSTS,
            format!(
                "VirtualService {namespace}/{name} has hosts [{}]{}, so it cannot be a \
                 delegate (a delegate has no hosts); the route is left out",
                dvs.hosts.join(", "),
                at(dr, "spec.hosts"),
            ),
        ));
    }
    // An empty exportTo is the mesh default, which is every namespace unless the mesh config
    // (`defaultVirtualServiceExportTo`, not read by `weft analyze`) says otherwise.
    if !exported_to(&dvs.export_to, namespace, r.namespace()) {
        return Some(finding(
            r,
            path,
            Severity::Error,
            code::DELEGATE_NOT_EXPORTED,
            format!(
                "delegate {namespace}/{name} is not exported to namespace {}: its exportTo is \
                 [{}]{}; the route is left out",
                r.namespace(),
                dvs.export_to.join(", "),
                at(dr, "spec.exportTo"),
            ),
        ));
    }
    None
}

/// ` (at file:line:column)` of `path` in `r`, when it came from a file.
fn at(r: &Resource, path: &str) -> String {
    r.locate(path)
        .map(|l| format!(" (at {l})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;

    /// The findings for a root in namespace `default` with one route delegating as `delegate`
    /// says, a service for the delegates to route to, and `more`.
    fn analyze(delegate: &str, more: &str) -> Vec<Diagnostic> {
        run(&[("test.yaml", &root_text(delegate, more))])
    }

    fn root_text(delegate: &str, more: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: default}}
spec:
  hosts: [shop.example.com]
  http:
  - match: [{{uri: {{prefix: /cart}}}}]
    delegate: {delegate}
  - route: [{{destination: {{host: cart.default.svc.cluster.local}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: cart, namespace: default}}
spec:
  selector: {{app: cart}}
  ports: [{{name: http, port: 80}}]
---
{more}"
        )
    }

    /// The findings for files read in this order.
    fn run(files: &[(&str, &str)]) -> Vec<Diagnostic> {
        let mut resources = Vec::new();
        for (path, text) in files {
            let loaded = load_str(*path, text);
            assert!(
                loaded.diagnostics.is_empty(),
                "{path} does not load: {:?}",
                loaded.diagnostics
            );
            resources.extend(loaded.resources);
        }
        let mut out = Vec::new();
        check(&Mesh::new(&resources), &mut out);
        out
    }

    fn delegate_vs(namespace: &str, extra: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: {namespace}}}
spec:
{extra}  http:
  - route: [{{destination: {{host: cart.default.svc.cluster.local}}}}]
"
        )
    }

    /// An expected error: code, field, line, and a part of the message.
    type Want = Option<(&'static str, &'static str, usize, &'static str)>;

    #[test]
    fn delegates_checked_as_the_control_plane_uses_them() {
        let cases: Vec<(&str, &str, String, Want)> = vec![
            // (case, root's delegate, other documents, finding: code, field, line, message part)
            (
                "usable, same namespace",
                "{name: cart}",
                delegate_vs("default", ""),
                None,
            ),
            (
                "usable, other namespace, exported everywhere by default",
                "{name: cart, namespace: team}",
                delegate_vs("team", ""),
                None,
            ),
            (
                "usable, exported to the root's namespace",
                "{name: cart, namespace: team}",
                delegate_vs("team", "  exportTo: [default]\n"),
                None,
            ),
            (
                "usable, exported to its own namespace, the root's",
                "{name: cart}",
                delegate_vs("default", "  exportTo: [.]\n"),
                None,
            ),
            (
                "missing",
                "{name: kart}",
                delegate_vs("default", ""),
                Some((
                    code::DELEGATE_NOT_FOUND,
                    "spec.http[0].delegate",
                    8,
                    "delegate default/kart is not defined by any VirtualService",
                )),
            ),
            (
                "missing in the namespace named",
                "{name: cart, namespace: team}",
                delegate_vs("default", ""),
                Some((
                    code::DELEGATE_NOT_FOUND,
                    "spec.http[0].delegate",
                    8,
                    "delegate team/cart is not defined",
                )),
            ),
            (
                "has hosts",
                "{name: cart}",
                delegate_vs("default", "  hosts: [cart]\n"),
                Some((
                    code::DELEGATE_HAS_HOSTS,
                    "spec.http[0].delegate",
                    8,
                    "VirtualService default/cart has hosts [cart] (at test.yaml:22:3), so it \
                     cannot be a delegate",
                )),
            ),
            (
                "exported to its own namespace only",
                "{name: cart, namespace: team}",
                delegate_vs("team", "  exportTo: [.]\n"),
                Some((
                    code::DELEGATE_NOT_EXPORTED,
                    "spec.http[0].delegate",
                    8,
                    "delegate team/cart is not exported to namespace default: its exportTo is \
                     [.] (at test.yaml:22:3)",
                )),
            ),
            (
                "exported to another namespace",
                "{name: cart, namespace: team}",
                delegate_vs("team", "  exportTo: [team, ops]\n"),
                Some((
                    code::DELEGATE_NOT_EXPORTED,
                    "spec.http[0].delegate",
                    8,
                    "its exportTo is [team, ops]",
                )),
            ),
        ];
        for (case, delegate, more, want) in cases {
            let mut got = analyze(delegate, &more);
            // A delegate left unnamed by a wrong reference is noted too; tested below.
            got.retain(|d| d.code != code::DELEGATE_NOT_REFERENCED);
            match want {
                None => assert!(got.is_empty(), "{case}: {got:?}"),
                Some((code, field, line, message)) => {
                    assert_eq!(got.len(), 1, "{case}: {got:?}");
                    let d = &got[0];
                    assert_eq!(d.code, code, "{case}");
                    assert_eq!(d.severity, Severity::Error, "{case}");
                    assert_eq!(d.field.as_deref(), Some(field), "{case}");
                    assert_eq!(d.location.as_ref().map(|l| l.line), Some(line), "{case}");
                    assert!(
                        d.message.contains(message),
                        "{case}: {:?} lacks {message:?}",
                        d.message
                    );
                    assert!(d.message.ends_with("the route is left out"), "{case}");
                }
            }
        }
    }

    #[test]
    fn a_delegate_no_root_names_is_noted() {
        let unused = delegate_vs("team", "");
        let got = analyze(
            "{name: cart}",
            &format!("{}---\n{unused}", delegate_vs("default", "")),
        );
        assert_eq!(got.len(), 1, "{got:?}");
        let d = &got[0];
        assert_eq!(d.code, code::DELEGATE_NOT_REFERENCED);
        assert_eq!(d.severity, Severity::Info);
        assert_eq!(
            d.resource.as_ref().map(ToString::to_string).as_deref(),
            Some("VirtualService team/cart")
        );
        assert_eq!(d.field.as_deref(), Some("metadata.name"));

        // Named by a root that cannot use it: reported at the root only.
        let got = analyze(
            "{name: cart, namespace: team}",
            &delegate_vs("team", "  exportTo: [.]\n"),
        );
        let codes: Vec<_> = got.iter().map(|d| d.code).collect();
        assert_eq!(codes, [code::DELEGATE_NOT_EXPORTED]);
    }

    #[test]
    fn a_later_definition_replaces_an_earlier_one() {
        // kubectl apply semantics (WA0006): the delegate the root gets is the later one.
        let earlier = delegate_vs("default", "  hosts: [cart]\n");
        let later = delegate_vs("default", "");
        let got = analyze("{name: cart}", &earlier);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            run(&[
                ("a.yaml", &root_text("{name: cart}", &earlier)),
                ("b.yaml", &later)
            ])
            .is_empty()
        );
    }
}
