//! The semantics table: Istio's AuthorizationPolicy behaviour, case by case, on the engine.

use super::*;
use crate::jwt::Identity;

/// A request as a case describes it; `tcp` drops the HTTP attributes.
struct Req {
    peer: &'static str,
    client: &'static str,
    port: u16,
    principal: Option<&'static str>,
    sni: Option<&'static str>,
    host: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    jwt: Option<serde_json::Value>,
    tcp: bool,
}

fn req() -> Req {
    Req {
        peer: "10.0.0.5",
        client: "10.0.0.5",
        port: 9080,
        principal: None,
        sni: None,
        host: "productpage.default.svc.cluster.local:9080",
        method: "GET",
        path: "/productpage",
        headers: Vec::new(),
        jwt: None,
        tcp: false,
    }
}

fn rbac(policies: serde_json::Value) -> Rbac {
    let proto: proto::Rbac = serde_json::from_value(serde_json::json!({ "policies": policies }))
        .unwrap_or_else(|e| panic!("proto: {e}"));
    Rbac::build(&proto, "listener \"test\"", "http.rbac").expect("builds")
}

fn decide(r: &Rbac, q: &Req) -> bool {
    let mut headers = HeaderMap::new();
    for (k, v) in &q.headers {
        headers.append(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    let identity = q.jwt.clone().map(Identity::for_tests);
    let at = Attributes {
        source_ip: q.peer.parse().unwrap(),
        remote_ip: q.client.parse().unwrap(),
        destination_ip: "10.0.0.9".parse().unwrap(),
        destination_port: q.port,
        principal: q.principal,
        sni: q.sni,
        http: (!q.tcp).then_some(HttpAttributes {
            host: q.host,
            method: q.method,
            path: q.path,
            headers: &headers,
            auth: identity.as_ref(),
        }),
    };
    r.evaluate(&at) == Verdict::Allow
}

fn allow(rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{ "namespace": "default", "name": "allow", "action": "ALLOW", "rules": rules }])
}

fn deny(rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{ "namespace": "default", "name": "deny", "action": "DENY", "rules": rules }])
}

const BOOKINFO: &str = "cluster.local/ns/default/sa/bookinfo-productpage";

#[test]
fn semantics_table() {
    use serde_json::json;
    let jwt = |v: serde_json::Value| Some(v);
    // (case, policies, request, allowed)
    let cases: Vec<(&str, serde_json::Value, Req, bool)> = vec![
        ("no policy allows", json!([]), req(), true),
        (
            "empty ALLOW policy (no rules) allows nothing",
            allow(json!([])),
            req(),
            false,
        ),
        (
            "rules: [{}] allows everything",
            allow(json!([{}])),
            req(),
            true,
        ),
        (
            "DENY with rules: [{}] denies everything",
            deny(json!([{}])),
            req(),
            false,
        ),
        (
            "DENY with no rules denies nothing",
            deny(json!([])),
            req(),
            true,
        ),
        (
            "an empty to entry matches",
            allow(json!([{"to": [{}]}])),
            req(),
            true,
        ),
        (
            "ALLOW methods GET matches GET",
            allow(json!([{"to": [{"methods": ["GET"]}]}])),
            req(),
            true,
        ),
        (
            "ALLOW methods POST refuses GET",
            allow(json!([{"to": [{"methods": ["POST"]}]}])),
            req(),
            false,
        ),
        (
            "notMethods GET refuses GET",
            allow(json!([{"to": [{"notMethods": ["GET"]}]}])),
            req(),
            false,
        ),
        (
            "notMethods POST allows GET",
            allow(json!([{"to": [{"notMethods": ["POST"]}]}])),
            req(),
            true,
        ),
        (
            "exact path",
            allow(json!([{"to": [{"paths": ["/productpage"]}]}])),
            req(),
            true,
        ),
        (
            "exact path is not a prefix",
            allow(json!([{"to": [{"paths": ["/product"]}]}])),
            req(),
            false,
        ),
        (
            "prefix path",
            allow(json!([{"to": [{"paths": ["/prod*"]}]}])),
            req(),
            true,
        ),
        (
            "suffix path",
            allow(json!([{"to": [{"paths": ["*page"]}]}])),
            req(),
            true,
        ),
        (
            "suffix path no match",
            allow(json!([{"to": [{"paths": ["*.css"]}]}])),
            req(),
            false,
        ),
        (
            "path * matches any",
            allow(json!([{"to": [{"paths": ["*"]}]}])),
            req(),
            true,
        ),
        (
            "notPaths prefix excludes",
            allow(json!([{"to": [{"notPaths": ["/prod*"]}]}])),
            req(),
            false,
        ),
        (
            "paths and notPaths both",
            allow(json!([{"to": [{"paths": ["/*"], "notPaths": ["/admin*"]}]}])),
            req(),
            true,
        ),
        (
            "hosts exact without port matches host:port",
            allow(json!([{"to": [{"hosts": ["productpage.default.svc.cluster.local"]}]}])),
            req(),
            true,
        ),
        (
            "hosts case-insensitive",
            allow(json!([{"to": [{"hosts": ["ProductPage.default.svc.cluster.local"]}]}])),
            req(),
            true,
        ),
        (
            "hosts suffix",
            allow(json!([{"to": [{"hosts": ["*.svc.cluster.local"]}]}])),
            req(),
            true,
        ),
        (
            "notHosts",
            allow(json!([{"to": [{"notHosts": ["productpage*"]}]}])),
            req(),
            false,
        ),
        (
            "ports match",
            allow(json!([{"to": [{"ports": ["9080"]}]}])),
            req(),
            true,
        ),
        (
            "ports no match",
            allow(json!([{"to": [{"ports": ["8080"]}]}])),
            req(),
            false,
        ),
        (
            "notPorts",
            deny(json!([{"to": [{"notPorts": ["8080"]}]}])),
            req(),
            false,
        ),
        (
            "two to entries are ORed",
            allow(json!([{"to": [{"methods": ["POST"]}, {"paths": ["/productpage"]}]}])),
            req(),
            true,
        ),
        (
            "fields in one operation are ANDed",
            allow(json!([{"to": [{"methods": ["POST"], "paths": ["/productpage"]}]}])),
            req(),
            false,
        ),
        (
            "an empty from entry matches",
            allow(json!([{"from": [{}]}])),
            req(),
            true,
        ),
        (
            "principals match the peer identity",
            allow(json!([{"from": [{"principals": [BOOKINFO]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "principals without mTLS never match",
            allow(json!([{"from": [{"principals": ["*"]}]}])),
            req(),
            false,
        ),
        (
            "principals * needs an identity",
            allow(json!([{"from": [{"principals": ["*"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "notPrincipals * denies plaintext callers",
            deny(json!([{"from": [{"notPrincipals": ["*"]}]}])),
            req(),
            false,
        ),
        (
            "notPrincipals * passes mTLS callers",
            deny(json!([{"from": [{"notPrincipals": ["*"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "principals prefix",
            allow(json!([{"from": [{"principals": ["cluster.local/ns/default/*"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "namespaces from the principal",
            allow(json!([{"from": [{"namespaces": ["default"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "namespaces other",
            allow(json!([{"from": [{"namespaces": ["foo"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            false,
        ),
        (
            "notNamespaces",
            deny(json!([{"from": [{"notNamespaces": ["default"]}]}])),
            Req {
                principal: Some("cluster.local/ns/foo/sa/x"),
                ..req()
            },
            false,
        ),
        (
            "ipBlocks CIDR of the peer",
            allow(json!([{"from": [{"ipBlocks": ["10.0.0.0/24"]}]}])),
            req(),
            true,
        ),
        (
            "ipBlocks single address",
            allow(json!([{"from": [{"ipBlocks": ["10.0.0.6"]}]}])),
            req(),
            false,
        ),
        (
            "notIpBlocks",
            deny(json!([{"from": [{"notIpBlocks": ["192.168.0.0/16"]}]}])),
            req(),
            false,
        ),
        (
            "ipBlocks reads the peer, not x-forwarded-for",
            allow(json!([{"from": [{"ipBlocks": ["1.2.3.4"]}]}])),
            Req {
                client: "1.2.3.4",
                ..req()
            },
            false,
        ),
        (
            "remoteIpBlocks reads the client",
            allow(json!([{"from": [{"remoteIpBlocks": ["1.2.3.0/24"]}]}])),
            Req {
                client: "1.2.3.4",
                ..req()
            },
            true,
        ),
        (
            "notRemoteIpBlocks",
            deny(json!([{"from": [{"notRemoteIpBlocks": ["1.2.3.0/24"]}]}])),
            Req {
                client: "5.6.7.8",
                ..req()
            },
            false,
        ),
        (
            "requestPrincipals without a token",
            allow(json!([{"from": [{"requestPrincipals": ["*"]}]}])),
            req(),
            false,
        ),
        (
            "requestPrincipals with a token",
            allow(json!([{"from": [{"requestPrincipals": ["*"]}]}])),
            Req {
                jwt: jwt(json!({"iss": "https://issuer", "sub": "alice"})),
                ..req()
            },
            true,
        ),
        (
            "requestPrincipals exact iss/sub",
            allow(json!([{"from": [{"requestPrincipals": ["https://issuer/alice"]}]}])),
            Req {
                jwt: jwt(json!({"iss": "https://issuer", "sub": "bob"})),
                ..req()
            },
            false,
        ),
        (
            "notRequestPrincipals * denies anonymous",
            deny(json!([{"from": [{"notRequestPrincipals": ["*"]}]}])),
            req(),
            false,
        ),
        (
            "from entries are ORed",
            allow(json!([{"from": [{"namespaces": ["foo"]}, {"ipBlocks": ["10.0.0.0/8"]}]}])),
            req(),
            true,
        ),
        (
            "from and to are ANDed",
            allow(json!([{"from": [{"ipBlocks": ["10.0.0.0/8"]}], "to": [{"methods": ["POST"]}]}])),
            req(),
            false,
        ),
        (
            "when header value",
            allow(json!([{"when": [{"key": "request.headers[x-token]", "values": ["admin"]}]}])),
            Req {
                headers: vec![("x-token", "admin")],
                ..req()
            },
            true,
        ),
        (
            "when header absent",
            allow(json!([{"when": [{"key": "request.headers[x-token]", "values": ["*"]}]}])),
            req(),
            false,
        ),
        (
            "when header notValues",
            allow(json!([{"when": [{"key": "request.headers[x-token]", "notValues": ["guest"]}]}])),
            Req {
                headers: vec![("x-token", "guest")],
                ..req()
            },
            false,
        ),
        (
            "when source.ip",
            allow(json!([{"when": [{"key": "source.ip", "values": ["10.0.0.0/16"]}]}])),
            req(),
            true,
        ),
        (
            "when remote.ip",
            allow(json!([{"when": [{"key": "remote.ip", "values": ["10.0.0.0/16"]}]}])),
            Req {
                client: "8.8.8.8",
                ..req()
            },
            false,
        ),
        (
            "when source.namespace",
            allow(json!([{"when": [{"key": "source.namespace", "values": ["default"]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "when source.principal",
            allow(json!([{"when": [{"key": "source.principal", "values": [BOOKINFO]}]}])),
            Req {
                principal: Some(BOOKINFO),
                ..req()
            },
            true,
        ),
        (
            "when destination.port",
            allow(json!([{"when": [{"key": "destination.port", "values": ["9080"]}]}])),
            req(),
            true,
        ),
        (
            "when destination.ip",
            allow(json!([{"when": [{"key": "destination.ip", "values": ["10.0.0.10"]}]}])),
            req(),
            false,
        ),
        (
            "when connection.sni",
            allow(json!([{"when": [{"key": "connection.sni", "values": ["*.example.com"]}]}])),
            Req {
                sni: Some("a.example.com"),
                ..req()
            },
            true,
        ),
        (
            "when request.auth.principal",
            allow(
                json!([{"when": [{"key": "request.auth.principal", "values": ["https://issuer/alice"]}]}]),
            ),
            Req {
                jwt: jwt(json!({"iss": "https://issuer", "sub": "alice"})),
                ..req()
            },
            true,
        ),
        (
            "when request.auth.audiences",
            allow(json!([{"when": [{"key": "request.auth.audiences", "values": ["bookinfo"]}]}])),
            Req {
                jwt: jwt(json!({"iss": "i", "sub": "s", "aud": ["other", "bookinfo"]})),
                ..req()
            },
            true,
        ),
        (
            "when request.auth.audiences wrong",
            allow(json!([{"when": [{"key": "request.auth.audiences", "values": ["bookinfo"]}]}])),
            Req {
                jwt: jwt(json!({"iss": "i", "sub": "s", "aud": "other"})),
                ..req()
            },
            false,
        ),
        (
            "when request.auth.presenter",
            allow(json!([{"when": [{"key": "request.auth.presenter", "values": ["web"]}]}])),
            Req {
                jwt: jwt(json!({"iss": "i", "sub": "s", "azp": "web"})),
                ..req()
            },
            true,
        ),
        (
            "when request.auth.claims list",
            allow(
                json!([{"when": [{"key": "request.auth.claims[groups]", "values": ["group1"]}]}]),
            ),
            Req {
                jwt: jwt(json!({"iss": "i", "sub": "s", "groups": ["group1", "group2"]})),
                ..req()
            },
            true,
        ),
        (
            "when nested claim",
            allow(
                json!([{"when": [{"key": "request.auth.claims[nested][role]", "values": ["admin"]}]}]),
            ),
            Req {
                jwt: jwt(json!({"iss": "i", "sub": "s", "nested": {"role": "admin"}})),
                ..req()
            },
            true,
        ),
        (
            "when conditions are ANDed",
            allow(
                json!([{"when": [{"key": "source.ip", "values": ["10.0.0.0/8"]}, {"key": "request.headers[x-a]", "values": ["1"]}]}]),
            ),
            req(),
            false,
        ),
        (
            "DENY wins over ALLOW",
            json!([
            {"namespace": "default", "name": "a", "action": "ALLOW", "rules": [{}]},
            {"namespace": "default", "name": "d", "action": "DENY", "rules": [{"to": [{"methods": ["GET"]}]}]}]),
            req(),
            false,
        ),
        (
            "one of several ALLOW policies is enough",
            json!([
            {"namespace": "default", "name": "a", "action": "ALLOW", "rules": [{"to": [{"methods": ["POST"]}]}]},
            {"namespace": "istio-system", "name": "b", "action": "ALLOW", "rules": [{"to": [{"methods": ["GET"]}]}]}]),
            req(),
            true,
        ),
        (
            "AUDIT never changes the decision",
            json!([
            {"namespace": "default", "name": "audit", "action": "AUDIT", "rules": [{}]}]),
            req(),
            true,
        ),
        (
            "dry-run DENY is not enforced",
            json!([
            {"namespace": "default", "name": "d", "action": "DENY", "dryRun": true, "rules": [{}]}]),
            req(),
            true,
        ),
        (
            "dry-run ALLOW alone does not deny",
            json!([
            {"namespace": "default", "name": "a", "action": "ALLOW", "dryRun": true, "rules": [{"to": [{"methods": ["POST"]}]}]}]),
            req(),
            true,
        ),
        (
            "TCP: ALLOW with an HTTP-only field never matches",
            allow(json!([{"to": [{"methods": ["GET"]}]}])),
            Req { tcp: true, ..req() },
            false,
        ),
        (
            "TCP: ALLOW on ports alone matches",
            allow(json!([{"to": [{"ports": ["9080"]}]}])),
            Req { tcp: true, ..req() },
            true,
        ),
        (
            "TCP: DENY ignores HTTP-only fields and denies",
            deny(json!([{"to": [{"methods": ["GET"], "ports": ["9080"]}]}])),
            Req { tcp: true, ..req() },
            false,
        ),
        (
            "TCP: DENY with an HTTP-only when still denies",
            deny(json!([{"when": [{"key": "request.headers[x-a]", "values": ["1"]}]}])),
            Req { tcp: true, ..req() },
            false,
        ),
        (
            "TCP: DENY on another port passes",
            deny(json!([{"to": [{"methods": ["GET"], "ports": ["3306"]}]}])),
            Req { tcp: true, ..req() },
            true,
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failed = Vec::new();
    for (name, policies, q, want) in cases {
        let got = decide(&rbac(policies), &q);
        if got != want {
            failed.push(format!("{name}: want allowed={want}, got {got}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_denial_names_the_policy_and_rule() {
    let r = rbac(serde_json::json!([
        {"namespace": "foo", "name": "deny-get", "action": "DENY", "rules": [
            {"to": [{"methods": ["POST"]}]}, {"to": [{"methods": ["GET"]}]}]}]));
    let mut q = req();
    q.method = "GET";
    let headers = HeaderMap::new();
    let at = Attributes {
        source_ip: "10.0.0.1".parse().unwrap(),
        remote_ip: "10.0.0.1".parse().unwrap(),
        destination_ip: "10.0.0.9".parse().unwrap(),
        destination_port: 80,
        principal: None,
        sni: None,
        http: Some(HttpAttributes {
            host: "h",
            method: "GET",
            path: "/",
            headers: &headers,
            auth: None,
        }),
    };
    assert_eq!(
        r.evaluate(&at),
        Verdict::Deny("rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[1]]".into())
    );
    let allow_post = rbac(allow(serde_json::json!([{"to": [{"methods": ["POST"]}]}])));
    assert_eq!(
        allow_post.evaluate(&at),
        Verdict::Deny("rbac_access_denied_matched_policy[none]".into())
    );
}

#[test]
fn bad_forms_are_refused_naming_the_field() {
    let bad = |rules: serde_json::Value| {
        let proto: proto::Rbac = serde_json::from_value(serde_json::json!({
            "policies": [{"namespace": "ns", "name": "p", "action": "ALLOW", "rules": rules}]
        }))
        .unwrap();
        Rbac::build(&proto, "listener \"l\"", "http.rbac").expect_err("refused")
    };
    let e =
        bad(serde_json::json!([{"when": [{"key": "request.regex.headers[x]", "values": ["a"]}]}]));
    assert_eq!(e.field, "http.rbac.policies[0].rules[0].when[0].key");
    assert!(
        e.reason.contains("not a supported condition key"),
        "{}",
        e.reason
    );
    let e = bad(serde_json::json!([{"from": [{"ipBlocks": ["10.0.0.0/33"]}]}]));
    assert_eq!(e.field, "http.rbac.policies[0].rules[0].from[0].ipBlocks");
    let e = bad(serde_json::json!([{"to": [{"ports": ["http"]}]}]));
    assert_eq!(e.field, "http.rbac.policies[0].rules[0].to[0].ports");
    let e = bad(serde_json::json!([{"when": [{"key": "destination.port", "values": ["x"]}]}]));
    assert_eq!(e.field, "http.rbac.policies[0].rules[0].when[0]");
    let e = bad(serde_json::json!([{"when": [{"key": "source.ip"}]}]));
    assert!(e.reason.contains("values or notValues"), "{}", e.reason);
}

mod decoding {
    use super::*;
    use proptest::prelude::*;

    fn any_str() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9./*:\\[\\]-]{0,20}",
            Just("*".to_owned()),
            Just("10.0.0.0/8".to_owned()),
            Just("request.headers[x-a]".to_owned()),
            Just("request.auth.claims[a][b]".to_owned()),
            Just("source.ip".to_owned()),
            Just("destination.port".to_owned()),
            Just("80".to_owned()),
        ]
    }

    fn strs() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(any_str(), 0..3)
    }

    proptest! {
        /// Whatever a policy says, compiling it is an answer (built or a named error), never
        /// a panic, and a built one decides every request.
        #[test]
        fn any_policy_decodes_or_is_refused(
            action in 0i32..5,
            principals in strs(), ips in strs(), ports in strs(), paths in strs(),
            key in any_str(), values in strs(), not_values in strs(),
        ) {
            let rbac = proto::Rbac {
                destination_port: 0,
                policies: vec![proto::RbacPolicy {
                    namespace: "ns".into(),
                    name: "p".into(),
                    action,
                    dry_run: false,
                    rules: vec![proto::RbacRule {
                        from: vec![proto::RbacSource {
                            principals, ip_blocks: ips, ..Default::default()
                        }],
                        to: vec![proto::RbacOperation { ports, paths, ..Default::default() }],
                        when: vec![proto::RbacCondition { key, values, not_values }],
                    }],
                }],
            };
            match Rbac::build(&rbac, "listener \"l\"", "http.rbac") {
                Ok(r) => {
                    let headers = HeaderMap::new();
                    let _ = r.evaluate(&Attributes {
                        source_ip: "10.1.2.3".parse().unwrap(),
                        remote_ip: "::1".parse().unwrap(),
                        destination_ip: "10.0.0.9".parse().unwrap(),
                        destination_port: 80,
                        principal: Some("cluster.local/ns/a/sa/b"),
                        sni: None,
                        http: Some(HttpAttributes {
                            host: "h", method: "GET", path: "/", headers: &headers, auth: None,
                        }),
                    });
                }
                Err(e) => prop_assert!(e.field.starts_with("http.rbac.policies[0]"), "{e:?}"),
            }
        }
    }
}
