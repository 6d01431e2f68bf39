use super::*;
use crate::validate::test_support::{errors, warnings};

fn parse(yaml: &str) -> AuthorizationPolicy {
    crate::validate::test_support::parse(yaml)
}

#[test]
fn valid_examples() {
    let cases = [
        // Istio's docs (authorization for HTTP traffic): productpage may GET reviews.
        r#"
selector:
  matchLabels:
    app: reviews
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
  to:
  - operation:
      methods: ["GET"]
"#,
        // Allow nothing: an ALLOW policy without rules.
        "{}",
        // Deny requests without a JWT principal to non-health paths.
        r#"
action: DENY
rules:
- from:
  - source: {notRequestPrincipals: ["*"]}
  to:
  - operation: {notPaths: ["/healthz"], ports: ["8080"]}
"#,
        // TCP: allow the database from one namespace on its port.
        r#"
selector: {matchLabels: {app: mongodb}}
rules:
- from: [{source: {namespaces: [bookinfo]}}]
  to: [{operation: {ports: ["27017"]}}]
"#,
        r#"
action: CUSTOM
provider: {name: ext-authz}
rules:
- to: [{operation: {paths: ["/admin/*", "/api/{*}/items/{**}"]}}]
"#,
        r#"
targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}
rules:
- from: [{source: {serviceAccounts: [productpage, bookinfo/reviews], ipBlocks: ["10.0.0.0/8", "::1"]}}]
  when:
  - key: request.headers[version]
    values: ["v1", "v2"]
  - key: source.ip
    notValues: ["10.1.2.3"]
  - key: request.auth.claims[iss]
    values: ["https://accounts.google.com"]
  - key: destination.port
    values: ["9080"]
  - key: source.trustDomain
    values: ["*.example.com"]
"#,
        "targetRefs: [{kind: Service, name: reviews}, {group: core, kind: Service, name: ratings}]",
        "action: AUDIT\nrules: [{}]",
    ];
    for yaml in cases {
        assert_eq!(errors(&parse(yaml)), [], "{yaml}");
    }
}

#[test]
fn invalid_examples() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "action: CUSTOM\nprovider: {name: authz}",
            &[("spec.rules", "CUSTOM policy without rules")],
        ),
        (
            "action: CUSTOM\nrules: [{}]",
            &[("spec.provider", "needs `provider.name`")],
        ),
        (
            "action: CUSTOM\nprovider: {}\nrules: [{}]",
            &[("spec.provider.name", "extension provider")],
        ),
        (
            "provider: {name: authz}\nrules: [{}]",
            &[("spec.provider", "only allowed with action CUSTOM")],
        ),
        (
            "action: DENY",
            &[("spec.rules", "DENY policy without rules")],
        ),
        (
            "selector: {matchLabels: {app: a}}\ntargetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}",
            &[(
                "spec",
                "only one of `selector`, `targetRef` and `targetRefs`",
            )],
        ),
        (
            "targetRef: {kind: Deployment, group: apps, name: reviews, namespace: other}",
            &[
                ("spec.targetRef.namespace", "cross-namespace"),
                ("spec.targetRef", "cannot target apps/Deployment"),
            ],
        ),
        (
            "targetRefs: [{kind: Service, name: \"\"}]",
            &[("spec.targetRefs[0].name", "required")],
        ),
        (
            "rules: [{from: []}]",
            &[("spec.rules[0].from", "at least one source")],
        ),
        (
            "rules: [{to: []}]",
            &[("spec.rules[0].to", "at least one operation")],
        ),
        (
            "rules: [{from: [{}]}]",
            &[("spec.rules[0].from[0].source", "required")],
        ),
        (
            "rules: [{to: [{}]}]",
            &[("spec.rules[0].to[0].operation", "required")],
        ),
        (
            "rules: [{from: [{source: {}}]}]",
            &[("spec.rules[0].from[0].source", "at least one field")],
        ),
        (
            "rules: [{to: [{operation: {}}]}]",
            &[("spec.rules[0].to[0].operation", "at least one field")],
        ),
        (
            "rules: [{from: [{source: {principals: [a], serviceAccounts: [b]}}]}]",
            &[("spec.rules[0].from[0].source", "cannot be combined")],
        ),
        (
            "rules: [{from: [{source: {ipBlocks: [\"10.0.0.0/33\"], notRemoteIpBlocks: [\"1.2.3\"]}}]}]",
            &[
                ("spec.rules[0].from[0].source.ipBlocks[0]", "CIDR"),
                (
                    "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
                    "IP address",
                ),
            ],
        ),
        (
            "rules: [{from: [{source: {principals: [\"\"], namespaces: [\"\"]}}]}]",
            &[
                ("spec.rules[0].from[0].source.principals[0]", "empty value"),
                ("spec.rules[0].from[0].source.namespaces[0]", "empty value"),
            ],
        ),
        (
            "rules: [{from: [{source: {serviceAccounts: [\"ns/*\", \"a/b/c\", \"/b\"]}}]}]",
            &[
                (
                    "spec.rules[0].from[0].source.serviceAccounts[0]",
                    "wildcards",
                ),
                (
                    "spec.rules[0].from[0].source.serviceAccounts[1]",
                    "namespace/serviceAccount",
                ),
                (
                    "spec.rules[0].from[0].source.serviceAccounts[2]",
                    "namespace/serviceAccount",
                ),
            ],
        ),
        (
            "rules: [{from: [{source: {trustDomains: [\"a*b\", \"*a*\", \"td/x\"]}}]}]",
            &[
                (
                    "spec.rules[0].from[0].source.trustDomains[0]",
                    "start or end",
                ),
                (
                    "spec.rules[0].from[0].source.trustDomains[1]",
                    "at most one wildcard",
                ),
                (
                    "spec.rules[0].from[0].source.trustDomains[2]",
                    "must not contain '/'",
                ),
            ],
        ),
        (
            "rules: [{to: [{operation: {ports: [\"http\", \"70000\", \"+80\"], notPorts: [\"-1\"]}}]}]",
            &[
                ("spec.rules[0].to[0].operation.ports[0]", "must be a number"),
                ("spec.rules[0].to[0].operation.ports[1]", "1..65535"),
                ("spec.rules[0].to[0].operation.ports[2]", "must be a number"),
                (
                    "spec.rules[0].to[0].operation.notPorts[0]",
                    "must be a number",
                ),
            ],
        ),
        (
            "rules: [{to: [{operation: {paths: [\"/a/{**}/{*}\", \"/a/{x}\", \"/a/b c/{*}\"], methods: [\"\"]}}]}]",
            &[
                ("spec.rules[0].to[0].operation.methods[0]", "empty value"),
                ("spec.rules[0].to[0].operation.paths[0]", "last segment"),
                (
                    "spec.rules[0].to[0].operation.paths[1]",
                    "only allowed in the templates",
                ),
                (
                    "spec.rules[0].to[0].operation.paths[2]",
                    "not a valid literal",
                ),
            ],
        ),
        (
            "rules: [{when: [{key: \"\", values: [a]}]}]",
            &[("spec.rules[0].when[0].key", "required")],
        ),
        (
            "rules: [{when: [{key: source.ip}]}]",
            &[("spec.rules[0].when[0]", "needs `values` or `notValues`")],
        ),
        (
            "rules: [{when: [{key: source.ipp, values: [a]}]}]",
            &[("spec.rules[0].when[0].key", "did you mean \"source.ip\"")],
        ),
        (
            "rules: [{when: [{key: request.headers, values: [a]}, {key: \"request.auth.claims[]\", values: [a]}]}]",
            &[
                ("spec.rules[0].when[0].key", "entry in brackets"),
                ("spec.rules[0].when[1].key", "entry in brackets"),
            ],
        ),
        (
            "rules: [{when: [{key: destination.namespace, values: [a]}, {key: \"destination.labels[app]\", values: [a]}, {key: destination.user, values: [a]}]}]",
            &[
                ("spec.rules[0].when[0].key", "not supported"),
                ("spec.rules[0].when[1].key", "not supported"),
                ("spec.rules[0].when[2].key", "removed"),
            ],
        ),
        (
            "rules: [{when: [{key: source.ip, values: [\"1.2.3.4/40\"], notValues: [\"\"]}, {key: destination.port, values: [x]}, {key: source.serviceAccount, values: [\"a/b/c\"]}]}]",
            &[
                ("spec.rules[0].when[0].values[0]", "CIDR"),
                ("spec.rules[0].when[0].notValues[0]", "empty value"),
                ("spec.rules[0].when[1].values[0]", "must be a number"),
                (
                    "spec.rules[0].when[2].values[0]",
                    "namespace/serviceAccount",
                ),
            ],
        ),
        (
            "action: CUSTOM\nprovider: {name: authz}\nrules:\n- from: [{source: {principals: [a], ipBlocks: [\"1.2.3.4\"]}}]\n  when: [{key: \"request.auth.claims[iss]\", values: [a]}, {key: source.namespace, values: [a]}]",
            &[
                (
                    "spec.rules[0].from[0].source.principals",
                    "not supported with action CUSTOM",
                ),
                (
                    "spec.rules[0].when[0].key",
                    "not supported with action CUSTOM",
                ),
                (
                    "spec.rules[0].when[1].key",
                    "not supported with action CUSTOM",
                ),
            ],
        ),
    ];
    for (yaml, want) in cases {
        let got = errors(&parse(yaml));
        assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
        for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
            assert_eq!(path, want_path, "{yaml}: {msg}");
            assert!(msg.contains(want_msg), "{yaml}: {msg}");
        }
    }
}

#[test]
fn warnings_for_suspicious_policies() {
    let cases: &[(&str, &[&str])] = &[
        (
            "action: DENY\nrules: [{to: [{operation: {methods: [POST]}}]}]",
            &["spec.rules[0]"],
        ),
        (
            "action: DENY\nrules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]",
            &["spec.rules[0]"],
        ),
        (
            "action: DENY\nrules: [{to: [{operation: {methods: [POST], ports: [\"80\"]}}]}]",
            &[],
        ),
        (
            "action: DENY\nrules: [{from: [{source: {namespaces: [foo]}}]}]",
            &[],
        ),
        (
            "rules: [{to: [{operation: {ports: [\"0\"]}}]}]",
            &["spec.rules[0].to[0].operation.ports[0]"],
        ),
        ("selector: {}", &["spec.selector"]),
    ];
    for (yaml, want) in cases {
        let got: Vec<String> = warnings(&parse(yaml)).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, *want, "{yaml}");
    }
}

#[test]
fn schema_errors() {
    let cases = [
        ("action: allow", "unknown variant"),
        (
            "rules: [{from: [{source: {principal: [a]}}]}]",
            "unknown field",
        ),
        (
            "rules: [{to: [{operation: {port: [\"80\"]}}]}]",
            "unknown field",
        ),
        ("rule: []", "unknown field"),
    ];
    for (yaml, want) in cases {
        match yaml_serde::from_str::<AuthorizationPolicy>(yaml) {
            Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
        }
    }
}
