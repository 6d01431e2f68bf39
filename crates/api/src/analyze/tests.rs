//! Analyzer behaviour across findings: what one problem must not hide, and what the mesh
//! config changes.

use super::{MeshSettings, analyze_paths_with};
use crate::diag::code;

/// Writes `yaml` to a file of its own and analyzes it.
fn analyze_yaml(name: &str, yaml: &str, settings: &MeshSettings) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!("weft-analyze-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, yaml).expect("write");
    let report = analyze_paths_with(&[&path], settings);
    let _ = std::fs::remove_dir_all(&dir);
    report
        .diagnostics
        .into_iter()
        .map(|d| {
            let r = d.resource.map(|r| r.to_string()).unwrap_or_default();
            (d.code.to_owned(), r)
        })
        .collect()
}

fn has(found: &[(String, String)], code: &str, resource: &str) -> bool {
    found.iter().any(|(c, r)| c == code && r == resource)
}

#[test]
fn a_schema_error_does_not_hide_cross_resource_findings() {
    let found = analyze_yaml(
        "schema",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cart}\n\
         spec:\n  hosts: [cart]\n  http:\n  - route:\n    - destination: {host: carts, subset: v1}\n      weigth: 100\n",
        &MeshSettings::default(),
    );
    let vs = "VirtualService default/cart";
    assert!(has(&found, code::SCHEMA, vs), "{found:?}");
    assert!(has(&found, code::HOST_NOT_FOUND, vs), "{found:?}");
    // The subset is checked although the host is missing.
    assert!(has(&found, code::SUBSET_NOT_FOUND, vs), "{found:?}");
}

const TWO_TEAMS: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pay, namespace: team-a}
spec:
  hosts: [pay.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pay, namespace: team-a}
spec:
  hosts: [pay.example.com]
  http: [{route: [{destination: {host: pay.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pay, namespace: team-b}
spec:
  hosts: [pay.example.com]
  http: [{route: [{destination: {host: pay.example.com}}]}]
";

#[test]
fn the_mesh_configs_default_export_to_decides_conflicts() {
    let found = analyze_yaml("export-default", TWO_TEAMS, &MeshSettings::default());
    assert!(
        has(
            &found,
            code::CONFLICTING_VIRTUAL_SERVICES,
            "VirtualService team-a/pay"
        ) && has(
            &found,
            code::CONFLICTING_VIRTUAL_SERVICES,
            "VirtualService team-b/pay"
        ),
        "{found:?}"
    );
    let private = MeshSettings::from_yaml("defaultVirtualServiceExportTo: [\".\"]").unwrap();
    let found = analyze_yaml("export-private", TWO_TEAMS, &private);
    assert!(
        !found
            .iter()
            .any(|(c, _)| c == code::CONFLICTING_VIRTUAL_SERVICES),
        "{found:?}"
    );
}

#[test]
fn the_mesh_configs_default_service_export_to_hides_destinations() {
    let private = MeshSettings::from_yaml("defaultServiceExportTo: [\".\"]").unwrap();
    let found = analyze_yaml("service-export", TWO_TEAMS, &private);
    // team-b cannot see team-a's ServiceEntry any more; team-a still can.
    assert!(
        has(&found, code::HOST_NOT_FOUND, "VirtualService team-b/pay"),
        "{found:?}"
    );
    assert!(
        !has(&found, code::HOST_NOT_FOUND, "VirtualService team-a/pay"),
        "{found:?}"
    );
}

#[test]
fn virtual_services_on_one_gateway_with_one_host_are_merged_not_refused() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: v1
kind: Service
metadata: {name: cart}
spec: {selector: {app: cart}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-cart}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http: [{match: [{uri: {prefix: /cart}}], route: [{destination: {host: cart}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-home}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http: [{route: [{destination: {host: cart}}]}]
";
    let found = analyze_yaml("gateway-merge", yaml, &MeshSettings::default());
    assert!(found.is_empty(), "{found:?}");
}

/// The security findings: never silent about what is not enforced (WA0139), policies that
/// select nothing (WA0140), conflicting PeerAuthentications (WA0141), peer identities where
/// mutual TLS is disabled (WA0142), JWT rules without keys (WA0143).
#[test]
fn security_policies_findings() {
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec:
  command: ["weft", "example", "reviews"]
  ports: [{name: http, port: 9080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-a, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-b, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-off, namespace: default}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-too, namespace: default}
spec: {selector: {matchLabels: {version: v1}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {namespaces: [default]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-nowhere, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  jwtRules:
  - issuer: https://accounts.example.com
"#;
    let found = analyze_yaml("security", yaml, &MeshSettings::default());
    // PeerAuthentication is enforced (mesh mTLS): not reported as ignored.
    assert!(!has(
        &found,
        code::NOT_ENFORCED,
        "PeerAuthentication istio-system/mesh-a"
    ));
    for (code, resource) in [
        (code::NOT_ENFORCED, "AuthorizationPolicy default/ext"),
        (
            code::POLICY_SELECTS_NOTHING,
            "RequestAuthentication default/jwt-nowhere",
        ),
        (
            code::CONFLICTING_PEER_AUTHENTICATIONS,
            "PeerAuthentication istio-system/mesh-a",
        ),
        (
            code::CONFLICTING_PEER_AUTHENTICATIONS,
            "PeerAuthentication istio-system/mesh-b",
        ),
        (
            code::CONFLICTING_PEER_AUTHENTICATIONS,
            "PeerAuthentication default/reviews-off",
        ),
        (
            code::CONFLICTING_PEER_AUTHENTICATIONS,
            "PeerAuthentication default/reviews-too",
        ),
        (
            code::PRINCIPALS_WITHOUT_MTLS,
            "AuthorizationPolicy default/from-productpage",
        ),
        (
            code::JWT_RULE_WITHOUT_KEYS,
            "RequestAuthentication default/jwt-nowhere",
        ),
    ] {
        assert!(has(&found, code, resource), "{code} {resource}: {found:?}");
    }
    // A policy that selects a workload is not reported as selecting nothing.
    assert!(!has(
        &found,
        code::POLICY_SELECTS_NOTHING,
        "PeerAuthentication default/reviews-off"
    ));
    assert!(!has(
        &found,
        code::NOT_ENFORCED,
        "AuthorizationPolicy default/from-productpage"
    ));
}

#[test]
fn identities_with_mutual_tls_on_are_not_reported() {
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec:
  command: ["weft", "example", "reviews"]
  ports: [{name: http, port: 9080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: off, namespace: default}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-strict, namespace: default}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-default, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/x"]}}]
"#;
    let found = analyze_yaml("mtls-on", yaml, &MeshSettings::default());
    assert!(
        !has(
            &found,
            code::PRINCIPALS_WITHOUT_MTLS,
            "AuthorizationPolicy default/from-default"
        ),
        "the workload's own STRICT wins over the namespace's DISABLE: {found:?}"
    );
}

/// Telemetry findings: unknown providers (WA0144, fields named), competing Telemetries
/// (WA0145), selectors that select nothing (WA0140), what is not applied (WA0139).
#[test]
fn telemetry_findings() {
    let yaml = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: a, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}, {name: file-log}]}]
  tracing: [{providers: [{name: zipkn}]}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: b, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: otel}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: nobody, namespace: default}
spec:
  selector: {matchLabels: {app: nobody}}
  accessLogging: [{disabled: true}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews, namespace: default, labels: {app: reviews}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.0.0.1}
"#;
    let settings = MeshSettings::from_yaml(
        "extensionProviders:\n- name: file-log\n  envoyFileAccessLog: {path: /tmp/x}\n- name: otel\n  opentelemetry: {service: o, port: 4317}\n",
    )
    .expect("mesh settings");
    let found = analyze_yaml("telemetry", yaml, &settings);
    let a = "Telemetry istio-system/a";
    assert!(
        has(&found, code::TELEMETRY_UNKNOWN_PROVIDER, a),
        "{found:?}"
    );
    assert_eq!(
        found
            .iter()
            .filter(|(c, _)| c == code::TELEMETRY_UNKNOWN_PROVIDER)
            .count(),
        1,
        "only zipkn is unknown: {found:?}"
    );
    assert!(has(&found, code::NOT_ENFORCED, a), "tracing: {found:?}");
    assert!(
        has(
            &found,
            code::CONFLICTING_TELEMETRIES,
            "Telemetry istio-system/b"
        ),
        "{found:?}"
    );
    assert!(
        has(&found, code::NOT_ENFORCED, "Telemetry istio-system/b"),
        "otel: {found:?}"
    );
    assert!(
        has(
            &found,
            code::POLICY_SELECTS_NOTHING,
            "Telemetry default/nobody"
        ),
        "{found:?}"
    );
    // Without the mesh config, the extension providers are unknown.
    let bare = analyze_yaml("telemetry-bare", yaml, &MeshSettings::default());
    assert!(
        has(
            &bare,
            code::TELEMETRY_UNKNOWN_PROVIDER,
            "Telemetry istio-system/b"
        ),
        "{bare:?}"
    );
}
