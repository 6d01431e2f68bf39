use super::*;
use crate::{ConfigView, MeshConfig, ProxyNode, ProxyResources};
use weft_xds::proto;
use weft_xds::proto::string_match::MatchType;

fn sm(yaml: &str) -> StringMatch {
    yaml_serde::from_str(yaml).expect("a StringMatch")
}

fn request(yaml: &str) -> HttpMatchRequest {
    yaml_serde::from_str(yaml).expect("an HTTPMatchRequest")
}

fn route(yaml: &str) -> HttpRoute {
    yaml_serde::from_str(yaml).expect("an HTTPRoute")
}

#[test]
fn string_match_conflicts_follow_istio() {
    // (root, delegate, conflict)
    let cases = [
        (None, Some("{exact: /a}"), false),
        (Some("{prefix: /a}"), None, false),
        (Some("{exact: /a}"), Some("{exact: /a}"), false),
        (Some("{exact: /a}"), Some("{exact: /b}"), true),
        (Some("{exact: /a}"), Some("{prefix: /a}"), true),
        (Some("{prefix: /a}"), Some("{prefix: /a/b}"), false),
        (Some("{prefix: /a}"), Some("{prefix: /a}"), false),
        (Some("{prefix: /a/b}"), Some("{prefix: /a}"), true),
        (Some("{prefix: /a}"), Some("{exact: /a/x}"), false),
        (Some("{prefix: /a/b}"), Some("{exact: /a}"), true),
        // A regex on either side conflicts, even with the same regex.
        (Some("{regex: /a.*}"), Some("{regex: /a.*}"), true),
        (Some("{regex: /a.*}"), Some("{exact: /a}"), true),
        (Some("{prefix: /a}"), Some("{regex: /a.*}"), true),
        // A presence match (no kind) cannot be narrowed.
        (Some("{}"), Some("{exact: x}"), true),
        (Some("{prefix: /a}"), Some("{}"), true),
        // An empty value counts as unset, as Go's getters read it.
        (Some("{exact: ''}"), Some("{exact: x}"), true),
    ];
    for (root, leaf, want) in cases {
        let (r, l) = (root.map(sm), leaf.map(sm));
        assert_eq!(
            string_match_conflict(r.as_ref(), l.as_ref()),
            want,
            "root {root:?} delegate {leaf:?}"
        );
    }
}

#[test]
fn match_conflicts_follow_istio() {
    // (root, delegate, conflict)
    let cases = [
        ("{}", "{uri: {prefix: /x}}", false),
        ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}}", false),
        ("{uri: {prefix: /api}}", "{uri: {prefix: /web}}", true),
        ("{method: {exact: GET}}", "{method: {exact: POST}}", true),
        (
            "{headers: {a: {exact: '1'}}}",
            "{headers: {a: {exact: '2'}}}",
            true,
        ),
        (
            "{headers: {a: {exact: '1'}}}",
            "{headers: {b: {exact: '2'}}}",
            false,
        ),
        (
            "{queryParams: {q: {exact: '1'}}}",
            "{queryParams: {q: {prefix: '1'}}}",
            true,
        ),
        (
            "{withoutHeaders: {a: {exact: '1'}}}",
            "{withoutHeaders: {a: {exact: '2'}}}",
            true,
        ),
        ("{ignoreUriCase: true}", "{}", true),
        ("{port: 80}", "{port: 8080}", true),
        ("{port: 80}", "{}", false),
        ("{sourceNamespace: a}", "{}", true),
        ("{sourceNamespace: a}", "{sourceNamespace: a}", false),
        ("{}", "{sourceNamespace: a}", false),
        ("{sourceLabels: {app: a}}", "{sourceLabels: {app: b}}", true),
        (
            "{sourceLabels: {app: a}}",
            "{sourceLabels: {v: '1'}}",
            false,
        ),
        ("{gateways: [ns/a, ns/b]}", "{gateways: [ns/b]}", false),
        ("{gateways: [ns/a]}", "{gateways: [ns/a, ns/b]}", true),
        ("{gateways: [ns/a]}", "{gateways: [ns/c]}", true),
        ("{gateways: [ns/a]}", "{gateways: [ns/a, ns/a]}", true),
        ("{}", "{gateways: [ns/c]}", false),
    ];
    for (root, leaf, want) in cases {
        assert_eq!(
            has_conflict(&request(root), &request(leaf)),
            want,
            "root {root} delegate {leaf}"
        );
    }
}

#[test]
fn matches_are_anded() {
    let root = [
        request("{name: r0, uri: {prefix: /api}, headers: {x: {exact: '1'}}}"),
        request("{name: r1, uri: {prefix: /web}}"),
    ];
    let leaf = [request(
        "{name: d0, uri: {prefix: /api/v1}, headers: {x: {exact: '1'}, y: {exact: '2'}}}",
    )];
    let (merged, origins) = merge_matches(&root, &leaf).expect("no conflict");
    // d0 narrows r0 only: /web conflicts with /api/v1.
    assert_eq!(merged.len(), 1);
    assert_eq!(
        origins,
        [MatchOrigin {
            root: Some(0),
            delegate: Some(0)
        }]
    );
    let m = &merged[0];
    assert_eq!(m.name, "r0-d0");
    assert_eq!(m.uri, Some(sm("{prefix: /api/v1}")));
    assert_eq!(m.headers.len(), 2);

    // A delegate match without conditions of its own takes every root match's.
    let (merged, _) = merge_matches(&root, &[request("{method: {exact: GET}}")]).expect("ok");
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[1].uri, Some(sm("{prefix: /web}")));
    assert_eq!(merged[1].method, Some(sm("{exact: GET}")));
    assert_eq!(merged[1].name, "r1");

    // Either side without matches: the other side's.
    let (merged, origins) = merge_matches(&[], &leaf).expect("ok");
    assert_eq!(merged, leaf);
    assert_eq!(origins[0].root, None);
    let (merged, _) = merge_matches(&root, &[]).expect("ok");
    assert_eq!(merged, root);

    // One delegate match that fits no root match drops the route.
    let leaf = [
        request("{uri: {prefix: /api/v2}}"),
        request("{uri: {prefix: /other}}"),
    ];
    assert_eq!(merge_matches(&root, &leaf), Err(1));
}

#[test]
fn merged_match_takes_unset_conditions_from_the_root() {
    let root = request(
        "{uri: {prefix: /a}, scheme: {exact: https}, authority: {exact: a.example}, port: 80, \
         sourceLabels: {app: x, v: '1'}, sourceNamespace: ns, gateways: [ns/gw], \
         queryParams: {q: {exact: '1'}}, withoutHeaders: {h: {exact: '1'}}, statPrefix: root}",
    );
    let leaf = request("{uri: {exact: /a/b}, sourceLabels: {v: '2'}, statPrefix: leaf}");
    let m = merge_match(&root, &leaf);
    assert_eq!(m.uri, Some(sm("{exact: /a/b}")));
    assert_eq!(m.scheme, root.scheme);
    assert_eq!(m.authority, root.authority);
    assert_eq!(m.port, 80);
    assert_eq!(m.source_namespace, "ns");
    assert_eq!(m.gateways, ["ns/gw"]);
    assert_eq!(m.query_params, root.query_params);
    assert_eq!(m.without_headers, root.without_headers);
    assert_eq!(m.stat_prefix, "leaf");
    // Maps are joined; the delegate's value wins on a shared key.
    assert_eq!(m.source_labels.get("app").map(String::as_str), Some("x"));
    assert_eq!(m.source_labels.get("v").map(String::as_str), Some("2"));
}

#[test]
fn merged_route_takes_unset_fields_from_the_root() {
    let root = route(
        "{name: root, match: [{uri: {prefix: /r}}], delegate: {name: d}, timeout: 5s, \
         retries: {attempts: 1}, headers: {request: {set: {x-root: '1'}}}, \
         corsPolicy: {allowOrigins: [{exact: 'https://a'}]}, mirror: {host: m}, \
         mirrorPercentage: {value: 5}, rewrite: {uri: /}}",
    );
    let leaf = route(
        "{name: leaf, route: [{destination: {host: d}}], timeout: 1s, \
         fault: {abort: {httpStatus: 503, percentage: {value: 1}}}}",
    );
    let merged = merge_route(&root, leaf.clone()).expect("no conflict");
    let r = &merged.route;
    assert_eq!(r.name, "root-leaf");
    assert_eq!(r.matches, root.matches);
    assert_eq!(r.route, leaf.route);
    assert_eq!(r.delegate, None);
    assert_eq!(r.timeout, leaf.timeout);
    assert_eq!(r.fault, leaf.fault);
    assert_eq!(r.retries, root.retries);
    assert_eq!(r.headers, root.headers);
    assert_eq!(r.cors_policy, root.cors_policy);
    assert_eq!(r.mirror, root.mirror);
    assert_eq!(r.mirror_percentage, root.mirror_percentage);
    assert_eq!(r.rewrite, root.rewrite);
    assert_eq!(
        merged.inherited,
        [
            "rewrite",
            "retries",
            "mirror",
            "mirrorPercentage",
            "corsPolicy",
            "headers"
        ]
    );

    // Names: whichever is set.
    let unnamed = route("{delegate: {name: d}}");
    let merged = merge_route(&unnamed, leaf).expect("ok");
    assert_eq!(merged.route.name, "leaf");
    let merged = merge_route(&root, route("{route: [{destination: {host: d}}]}")).expect("ok");
    assert_eq!(merged.route.name, "root");
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: front}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: back}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: static, namespace: front}
spec:
  ports: [{name: http, port: 80}]
"#;

fn view(yaml: &str) -> ConfigView {
    let loaded = weft_api::load_str("test.yaml", &format!("{SERVICES}---\n{yaml}"));
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    ConfigView::new(loaded.resources, Vec::new())
}

fn sidecar(view: &ConfigView) -> ProxyResources {
    let node = ProxyNode::parse_id("sidecar~10.0.0.9~sleep-0.front~front.svc.cluster.local")
        .expect("node id");
    crate::translate(&node, &MeshConfig::default(), view)
}

/// The routes of the virtual host `name` in the `outbound` route configuration.
fn routes<'r>(res: &'r ProxyResources, name: &str) -> Option<&'r [proto::Route]> {
    res.route_configs
        .iter()
        .flat_map(|rc| &rc.virtual_hosts)
        .find(|vh| vh.name == name)
        .map(|vh| vh.routes.as_slice())
}

fn clusters(route: &proto::Route) -> Vec<&str> {
    match &route.action {
        Some(proto::route::Action::Route(a)) => {
            a.clusters.iter().map(|c| c.cluster.as_str()).collect()
        }
        _ => Vec::new(),
    }
}

fn uri(route: &proto::Route, i: usize) -> Option<&MatchType> {
    route.matches.get(i)?.uri.as_ref()?.match_type.as_ref()
}

const ROOT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: front}
spec:
  hosts: [web]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    delegate: {name: api, namespace: back}
    timeout: 3s
    mirror: {host: static}
  - name: static
    delegate: {name: static}
"#;

const DELEGATES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: back}
spec:
  exportTo: [front]
  http:
  - name: v1
    match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: api}}]
  - name: elsewhere
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: api}}]
  - name: rest
    route: [{destination: {host: api}}]
    timeout: 1s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: static, namespace: front}
spec:
  http:
  - route: [{destination: {host: static}}]
"#;

#[test]
fn a_root_takes_its_delegates_routes() {
    let v = view(&format!("{ROOT}---\n{DELEGATES}"));
    let res = sidecar(&v);
    let web = routes(&res, "web.front.svc.cluster.local:80").expect("web's virtual host");
    let names: Vec<&str> = web.iter().map(|r| r.name.as_str()).collect();
    // `elsewhere` conflicts with the root's /api and is left out.
    assert_eq!(names, ["api-v1", "api-rest", "static"]);
    // The delegate's short host resolves in the delegate's namespace.
    let api = "outbound|8080||api.back.svc.cluster.local";
    assert_eq!(clusters(&web[0]), [api]);
    assert_eq!(uri(&web[0], 0), Some(&MatchType::Prefix("/api/v1".into())));
    // No match of its own: the root's.
    assert_eq!(uri(&web[1], 0), Some(&MatchType::Prefix("/api".into())));
    assert_eq!(
        clusters(&web[2]),
        ["outbound|80||static.front.svc.cluster.local"]
    );
    assert!(web[2].matches.is_empty());
    // Timeouts: the root's where the delegate route sets none.
    let timeout = |r: &proto::Route| match &r.action {
        Some(proto::route::Action::Route(a)) => a.timeout.map(|d| d.seconds),
        _ => None,
    };
    assert_eq!(timeout(&web[0]), Some(3));
    assert_eq!(timeout(&web[1]), Some(1));
    // The root's mirror, its short host resolved in the root's namespace.
    let mirrors = |r: &proto::Route| match &r.action {
        Some(proto::route::Action::Route(a)) => {
            a.mirrors.iter().map(|m| m.cluster.clone()).collect()
        }
        _ => Vec::new(),
    };
    assert_eq!(
        mirrors(&web[0]),
        ["outbound|80||static.front.svc.cluster.local"]
    );
    let notes: Vec<String> = res.unsupported.iter().map(ToString::to_string).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("VirtualService back/api spec.http[1].match[0]:")),
        "{notes:?}"
    );
    // Delegates have no hosts: they add no virtual host of their own, and the api service
    // keeps its default route.
    let api_routes = routes(&res, "api.back.svc.cluster.local:8080").expect("api");
    assert_eq!(api_routes.len(), 1);
    assert_eq!(api_routes[0].name, "default");
}

#[test]
fn a_root_works_on_gateways() {
    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: front}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: front}
spec:
  hosts: [web.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}, gateways: [gw]}]
    delegate: {name: api, namespace: back}
"#;
    let v = view(&format!("{gateway}---\n{DELEGATES}"));
    let mut node =
        ProxyNode::parse_id("router~10.0.0.5~gw-0.front~front.svc.cluster.local").expect("id");
    node.labels
        .insert("istio".to_owned(), "ingressgateway".to_owned());
    let res = crate::translate(&node, &MeshConfig::default(), &v);
    let web = routes(&res, "web.example.com:8080").expect("the gateway's virtual host");
    let names: Vec<&str> = web.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["v1", "rest"]);
    assert_eq!(
        clusters(&web[0]),
        ["outbound|8080||api.back.svc.cluster.local"]
    );
}

#[test]
fn a_delegate_that_cannot_be_used_leaves_the_route_out() {
    let root = |delegate: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: web, namespace: front}}\n\
             spec:\n  hosts: [web]\n  http:\n  - delegate: {delegate}\n"
        )
    };
    let private = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: private, namespace: back}\n\
         spec: {exportTo: ['.'], http: [{route: [{destination: {host: api}}]}]}\n";
    let hosted = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: hosted, namespace: front}\n\
         spec: {hosts: [other], http: [{route: [{destination: {host: web}}]}]}\n";
    let cases = [
        ("{name: missing}", "front/missing does not exist"),
        (
            "{name: private, namespace: back}",
            "back/private is not exported to namespace front",
        ),
        ("{name: hosted}", "front/hosted has hosts"),
    ];
    for (delegate, why) in cases {
        let v = view(&format!("{}---\n{private}---\n{hosted}", root(delegate)));
        let res = sidecar(&v);
        // The root's only route is gone: the service keeps its default route.
        let web = routes(&res, "web.front.svc.cluster.local:80").expect("web");
        assert_eq!(web.len(), 1, "{delegate}");
        assert_eq!(web[0].name, "default", "{delegate}");
        let note = res
            .unsupported
            .iter()
            .find(|n| n.field == "spec.http[0].delegate")
            .unwrap_or_else(|| panic!("{delegate}: no note in {:?}", res.unsupported));
        assert_eq!(
            note.resource.as_ref().map(ToString::to_string).as_deref(),
            Some("VirtualService front/web")
        );
        assert!(note.reason.contains(why), "{}", note.reason);
    }
}

#[test]
fn notes_name_the_route_that_wrote_the_field() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: front}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /}, statPrefix: root}]
    delegate: {name: d}
    retries: {attempts: 1, retryOn: reset-before-request}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d, namespace: front}
spec:
  http:
  - match: [{uri: {prefix: /a}, statPrefix: leaf}]
    route:
    - destination: {host: static}
      weight: 50
      headers: {request: {set: {host: a.example}}}
    - destination: {host: web}
      weight: 50
  - route: [{destination: {host: static}}]
"#;
    let res = sidecar(&view(yaml));
    let notes: Vec<String> = res.unsupported.iter().map(ToString::to_string).collect();
    let has = |prefix: &str| notes.iter().any(|n| n.starts_with(prefix));
    // Inherited retries: the root's field.
    assert!(
        has("VirtualService front/web spec.http[0].retries.retryOn:"),
        "{notes:?}"
    );
    // The delegate's own fields and statPrefix.
    assert!(
        has("VirtualService front/d spec.http[0].route[0].headers:"),
        "{notes:?}"
    );
    assert!(
        has("VirtualService front/d spec.http[0].match[0].statPrefix:"),
        "{notes:?}"
    );
    // The second delegate route has no match: the root's, with the root's statPrefix.
    assert!(
        has("VirtualService front/web spec.http[0].match[0].statPrefix:"),
        "{notes:?}"
    );
}
