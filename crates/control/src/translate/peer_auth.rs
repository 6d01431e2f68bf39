//! PeerAuthentication: which mutual-TLS mode a workload's sidecar accepts on each port, with
//! Istio's precedence.
//!
//! Scopes, most specific last: mesh-wide (a policy without selector in the root namespace),
//! namespace (without selector), workload (a selector matching the workload's labels, in its
//! namespace), and a workload policy's `portLevelMtls` for one port. Each scope's mode
//! replaces the one before unless it is UNSET (inherit); with nothing set the mode is
//! PERMISSIVE, Istio's default. When several policies compete in one scope, Istio takes the
//! oldest; weft has no creation times and takes the first by name (documented).

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::resource::Spec;
use weft_api::security::peer_authentication::{MtlsMode, PeerAuthentication};

use crate::mesh_config::MeshConfig;
use crate::view::ConfigView;

/// The mode in force on a port: never UNSET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    Disable,
    Permissive,
    Strict,
}

/// A workload's policies, one per scope (the first by name where several compete).
#[derive(Debug, Default)]
pub struct WorkloadPolicies<'a> {
    pub mesh: Option<&'a PeerAuthentication>,
    pub namespace: Option<&'a PeerAuthentication>,
    pub workload: Option<&'a PeerAuthentication>,
}

fn policies(view: &ConfigView) -> impl Iterator<Item = (&Resource, &PeerAuthentication)> {
    view.resources().iter().filter_map(|r| match &r.spec {
        Spec::PeerAuthentication(p) => Some((r, p)),
        _ => None,
    })
}

/// The policies that apply to a workload in `namespace` with `labels`.
pub fn for_workload<'a>(
    view: &'a ConfigView,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> WorkloadPolicies<'a> {
    let mut out = WorkloadPolicies::default();
    let mut names: [Option<&str>; 3] = [None; 3];
    let mut take = |slot: usize,
                    r: &'a Resource,
                    p: &'a PeerAuthentication,
                    out: &mut WorkloadPolicies<'a>| {
        if names[slot].is_some_and(|n| n <= r.metadata.name.as_str()) {
            return;
        }
        names[slot] = Some(r.metadata.name.as_str());
        match slot {
            0 => out.mesh = Some(p),
            1 => out.namespace = Some(p),
            _ => out.workload = Some(p),
        }
    };
    for (r, p) in policies(view) {
        let ns = r.metadata.namespace();
        match &p.selector {
            None if ns == mesh.root_namespace => take(0, r, p, &mut out),
            None if ns == namespace => take(1, r, p, &mut out),
            Some(s) if ns == namespace && selector_matches(&s.match_labels, labels) => {
                take(2, r, p, &mut out)
            }
            _ => {}
        }
    }
    // A namespace-wide policy of the root namespace is the mesh's; for a workload in the
    // root namespace it is both.
    if namespace == mesh.root_namespace && out.namespace.is_none() {
        out.namespace = out.mesh;
    }
    out
}

impl WorkloadPolicies<'_> {
    /// The mode on workload port `port`.
    pub fn mode(&self, port: u32) -> PeerMode {
        let mut mode = PeerMode::Permissive;
        let mut apply = |m: Option<MtlsMode>| match m {
            Some(MtlsMode::Disable) => mode = PeerMode::Disable,
            Some(MtlsMode::Permissive) => mode = PeerMode::Permissive,
            Some(MtlsMode::Strict) => mode = PeerMode::Strict,
            Some(MtlsMode::Unset) | None => {}
        };
        let of = |p: Option<&PeerAuthentication>| p.and_then(|p| p.mtls).map(|m| m.mode);
        apply(of(self.mesh));
        apply(of(self.namespace));
        apply(of(self.workload));
        // Port-level settings count only on a policy with a selector (validation refuses
        // them elsewhere).
        if let Some(w) = self.workload.filter(|w| w.selector.is_some()) {
            apply(
                w.port_level_mtls
                    .as_ref()
                    .and_then(|ports| ports.get(&port))
                    .map(|m| m.mode),
            );
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(yaml: &str) -> ConfigView {
        let loaded = weft_api::load_str("pa.yaml", yaml);
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        ConfigView::new(loaded.resources, Vec::new())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn mode(v: &ConfigView, ns: &str, l: &[(&str, &str)], port: u32) -> PeerMode {
        for_workload(v, &MeshConfig::default(), ns, &labels(l)).mode(port)
    }

    const MESH_STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

    #[test]
    fn nothing_set_is_permissive() {
        let v = view("");
        assert_eq!(
            mode(&v, "default", &[("app", "a")], 80),
            PeerMode::Permissive
        );
    }

    #[test]
    fn mesh_then_namespace_then_workload_then_port() {
        let v = view(&format!(
            "{MESH_STRICT}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: legacy}}
spec: {{mtls: {{mode: PERMISSIVE}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: db, namespace: legacy}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls:
    5432: {{mode: DISABLE}}
    9000: {{mode: UNSET}}
"
        ));
        // The mesh's STRICT everywhere else.
        assert_eq!(mode(&v, "default", &[("app", "a")], 80), PeerMode::Strict);
        // The namespace's PERMISSIVE over the mesh's.
        assert_eq!(
            mode(&v, "legacy", &[("app", "web")], 80),
            PeerMode::Permissive
        );
        // The workload's STRICT over the namespace's; its port-level DISABLE on 5432; UNSET
        // on 9000 inherits the workload's.
        assert_eq!(mode(&v, "legacy", &[("app", "db")], 80), PeerMode::Strict);
        assert_eq!(
            mode(&v, "legacy", &[("app", "db")], 5432),
            PeerMode::Disable
        );
        assert_eq!(mode(&v, "legacy", &[("app", "db")], 9000), PeerMode::Strict);
    }

    #[test]
    fn unset_inherits_and_a_selector_elsewhere_does_not_apply() {
        let v = view(&format!(
            "{MESH_STRICT}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec: {{mtls: {{mode: UNSET}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: httpbin, namespace: bar}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: DISABLE}}
"
        ));
        assert_eq!(mode(&v, "foo", &[("app", "httpbin")], 80), PeerMode::Strict);
        assert_eq!(
            mode(&v, "bar", &[("app", "httpbin")], 80),
            PeerMode::Disable
        );
        assert_eq!(mode(&v, "bar", &[("app", "sleep")], 80), PeerMode::Strict);
    }

    #[test]
    fn of_two_policies_in_one_scope_the_first_by_name_wins() {
        let v = view(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: zzz, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: aaa, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
",
        );
        assert_eq!(mode(&v, "default", &[], 80), PeerMode::Strict);
    }
}
