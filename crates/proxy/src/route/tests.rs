//! Route table behaviour end to end: config in the proto's YAML form, requests in, decisions out.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use weft_xds::proto;

use super::*;

fn parse(yaml: &str) -> proto::RouteConfiguration {
    yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("test config does not parse: {e}\n{yaml}"))
}

fn build_with(yaml: &str, node: &NodeInfo) -> Result<RouteTable, ConfigError> {
    RouteTable::build(&parse(yaml), node)
}

fn table(yaml: &str) -> RouteTable {
    build_with(yaml, &NodeInfo::default())
        .unwrap_or_else(|e| panic!("test config is rejected: {e}"))
}

/// A request under test; `view()` borrows it as the data path would.
struct Req {
    method: Method,
    scheme: &'static str,
    authority: String,
    path: String,
    headers: HeaderMap,
    port: u16,
    labels: BTreeMap<String, String>,
}

impl Req {
    fn get(path: &str) -> Req {
        Req {
            method: Method::GET,
            scheme: "http",
            authority: "reviews".into(),
            path: path.into(),
            headers: HeaderMap::new(),
            port: 9080,
            labels: BTreeMap::new(),
        }
    }

    fn at(mut self, authority: &str) -> Req {
        self.authority = authority.into();
        self
    }

    fn method(mut self, m: Method) -> Req {
        self.method = m;
        self
    }

    fn scheme(mut self, s: &'static str) -> Req {
        self.scheme = s;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    fn port(mut self, p: u16) -> Req {
        self.port = p;
        self
    }

    fn label(mut self, k: &str, v: &str) -> Req {
        self.labels.insert(k.into(), v.into());
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: self.scheme,
            authority: &self.authority,
            path_and_query: &self.path,
            headers: &self.headers,
            port: self.port,
            source_labels: &self.labels,
        }
    }
}

/// One virtual host for every authority whose only route has `matches` (a YAML flow list).
fn one_route(matches: &str) -> RouteTable {
    table(&format!(
        "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - name: hit\n    matches: {matches}\n    directResponse: {{status: 200}}\n"
    ))
}

#[test]
#[rustfmt::skip]
fn every_match_condition_and_combinations() {
    let cases: Vec<(&str, &str, Req, bool)> = vec![
        // uri: path only, query and fragment ignored.
        ("exact", "[{uri: {exact: /a}}]", Req::get("/a"), true),
        ("exact ignores query", "[{uri: {exact: /a}}]", Req::get("/a?x=1"), true),
        ("exact is exact", "[{uri: {exact: /a}}]", Req::get("/a/"), false),
        ("exact is case-sensitive", "[{uri: {exact: /a}}]", Req::get("/A"), false),
        ("exact ignoreUriCase", "[{uri: {exact: /a/B}, ignoreUriCase: true}]", Req::get("/A/b"), true),
        ("prefix", "[{uri: {prefix: /api}}]", Req::get("/api/v1"), true),
        ("prefix is a string prefix", "[{uri: {prefix: /api}}]", Req::get("/apix"), true),
        ("prefix too short", "[{uri: {prefix: /api}}]", Req::get("/ap"), false),
        ("prefix not in query", "[{uri: {prefix: /a?x}}]", Req::get("/a?x=1"), false),
        ("prefix case", "[{uri: {prefix: /api}}]", Req::get("/API/v1"), false),
        ("prefix ignoreUriCase", "[{uri: {prefix: /api}, ignoreUriCase: true}]", Req::get("/API/v1"), true),
        ("prefix ignoreUriCase non-ASCII path", "[{uri: {prefix: /ab}, ignoreUriCase: true}]", Req::get("/é"), false),
        ("regex", "[{uri: {regex: '/v[0-9]+/.*'}}]", Req::get("/v1/x?y=1"), true),
        ("regex is anchored at start", "[{uri: {regex: '/v[0-9]+/.*'}}]", Req::get("/x/v1/x"), false),
        ("regex is anchored at end", "[{uri: {regex: '/v[0-9]+'}}]", Req::get("/v1/x"), false),
        // Envoy ignores case_sensitive for regexes; (?i) is how to ask.
        ("regex ignores ignoreUriCase", "[{uri: {regex: '/v1'}, ignoreUriCase: true}]", Req::get("/V1"), false),
        ("regex (?i)", "[{uri: {regex: '(?i)/v1'}}]", Req::get("/V1"), true),
        ("uri presence", "[{uri: {}}]", Req::get("/anything"), true),
        // method, scheme, authority
        ("method", "[{method: {exact: POST}}]", Req::get("/").method(Method::POST), true),
        ("method mismatch", "[{method: {exact: POST}}]", Req::get("/"), false),
        ("method regex", "[{method: {regex: 'GET|HEAD'}}]", Req::get("/").method(Method::HEAD), true),
        ("scheme", "[{scheme: {exact: https}}]", Req::get("/").scheme("https"), true),
        ("scheme mismatch", "[{scheme: {exact: https}}]", Req::get("/"), false),
        ("authority has its port", "[{authority: {exact: reviews}}]", Req::get("/").at("reviews:9080"), false),
        ("authority prefix", "[{authority: {prefix: reviews}}]", Req::get("/").at("reviews:9080"), true),
        // headers
        ("header exact", "[{headers: {end-user: {exact: jason}}}]", Req::get("/").header("end-user", "jason"), true),
        ("header exact mismatch", "[{headers: {end-user: {exact: jason}}}]", Req::get("/").header("end-user", "json"), false),
        ("header absent", "[{headers: {end-user: {exact: jason}}}]", Req::get("/"), false),
        ("header name any case", "[{headers: {End-User: {exact: jason}}}]", Req::get("/").header("end-user", "jason"), true),
        ("header prefix", "[{headers: {x-v: {prefix: v1}}}]", Req::get("/").header("x-v", "v1.2"), true),
        ("header regex", "[{headers: {x-v: {regex: 'v[12]'}}}]", Req::get("/").header("x-v", "v2"), true),
        ("header regex whole value", "[{headers: {x-v: {regex: 'v[12]'}}}]", Req::get("/").header("x-v", "v22"), false),
        ("header presence", "[{headers: {x-v: {}}}]", Req::get("/").header("x-v", ""), true),
        ("header presence absent", "[{headers: {x-v: {}}}]", Req::get("/"), false),
        ("header regex * is presence", "[{headers: {x-v: {regex: '*'}}}]", Req::get("/").header("x-v", "a"), true),
        ("header values joined", "[{headers: {x-v: {exact: 'a,b'}}}]", Req::get("/").header("x-v", "a").header("x-v", "b"), true),
        ("header first value alone does not match", "[{headers: {x-v: {exact: a}}}]", Req::get("/").header("x-v", "a").header("x-v", "b"), false),
        ("pseudo-header :path", "[{headers: {':path': {prefix: '/a?'}}}]", Req::get("/a?x"), true),
        ("pseudo-header :method", "[{headers: {':method': {exact: GET}}}]", Req::get("/"), true),
        ("host is the authority", "[{headers: {host: {exact: 'r:1'}}}]", Req::get("/").at("r:1"), true),
        (":status is never on a request", "[{headers: {':status': {}}}]", Req::get("/"), false),
        // withoutHeaders
        ("without presence: absent", "[{withoutHeaders: {x-skip: {}}}]", Req::get("/"), true),
        ("without presence: present", "[{withoutHeaders: {x-skip: {}}}]", Req::get("/").header("x-skip", "1"), false),
        ("without exact: absent", "[{withoutHeaders: {x-v: {exact: a}}}]", Req::get("/"), true),
        ("without exact: other", "[{withoutHeaders: {x-v: {exact: a}}}]", Req::get("/").header("x-v", "b"), true),
        ("without exact: same", "[{withoutHeaders: {x-v: {exact: a}}}]", Req::get("/").header("x-v", "a"), false),
        // Missing is matched as "" and inverted: `.*` matches "", so the condition fails.
        ("without regex: absent is empty", "[{withoutHeaders: {x-v: {regex: '.*'}}}]", Req::get("/"), false),
        ("without regex *: absent", "[{withoutHeaders: {x-v: {regex: '*'}}}]", Req::get("/"), true),
        // queryParams: raw values, first occurrence.
        ("query exact", "[{queryParams: {b: {exact: '2'}}}]", Req::get("/p?a=1&b=2"), true),
        ("query first wins", "[{queryParams: {b: {exact: '2'}}}]", Req::get("/p?b=3&b=2"), false),
        ("query raw", "[{queryParams: {q: {exact: 'a%20b'}}}]", Req::get("/p?q=a%20b"), true),
        ("query prefix", "[{queryParams: {q: {prefix: ab}}}]", Req::get("/p?q=abc"), true),
        ("query regex", "[{queryParams: {q: {regex: '[0-9]+'}}}]", Req::get("/p?q=12"), true),
        ("query presence without =", "[{queryParams: {flag: {}}}]", Req::get("/p?flag"), true),
        ("query without = is empty", "[{queryParams: {flag: {exact: ''}}}]", Req::get("/p?flag"), true),
        ("query absent", "[{queryParams: {flag: {}}}]", Req::get("/p?other=1"), false),
        ("query name is not a value", "[{queryParams: {a: {}}}]", Req::get("/p?x=a"), false),
        // port and source labels
        ("port", "[{port: 9080}]", Req::get("/").port(9080), true),
        ("port mismatch", "[{port: 9080}]", Req::get("/").port(80), false),
        ("labels subset", "[{sourceLabels: {app: web}}]", Req::get("/").label("app", "web").label("v", "1"), true),
        ("labels value differs", "[{sourceLabels: {app: web}}]", Req::get("/").label("app", "api"), false),
        ("labels missing", "[{sourceLabels: {app: web}}]", Req::get("/"), false),
        // All conditions of one match; any of the matches.
        (
            "all of a match",
            "[{uri: {prefix: /a}, method: {exact: GET}, headers: {x-v: {exact: '1'}}, queryParams: {q: {}}, port: 9080}]",
            Req::get("/a/b?q").header("x-v", "1"),
            true,
        ),
        (
            "one condition fails",
            "[{uri: {prefix: /a}, method: {exact: GET}, headers: {x-v: {exact: '1'}}}]",
            Req::get("/a/b").header("x-v", "2"),
            false,
        ),
        ("any of the matches", "[{uri: {exact: /a}}, {uri: {exact: /b}}]", Req::get("/b"), true),
        ("none of the matches", "[{uri: {exact: /a}}, {uri: {exact: /b}}]", Req::get("/c"), false),
        ("empty match holds", "[{}]", Req::get("/c"), true),
    ];
    for (name, matches, req, want) in &cases {
        let t = one_route(matches);
        assert_eq!(t.route(&req.view()).is_some(), *want, "{name}: {matches} vs {}", req.path);
    }
}

#[test]
fn first_matching_route_wins() {
    let t = table(
        r#"
name: t
virtualHosts:
- name: reviews
  domains: ["*"]
  routes:
  - name: jason
    matches: [{headers: {end-user: {exact: jason}}}, {queryParams: {user: {exact: jason}}}]
    route: {clusters: [{cluster: v2}]}
  - name: api
    matches: [{uri: {prefix: /api}}]
    route: {clusters: [{cluster: api}]}
  - name: rest
    route: {clusters: [{cluster: v1}]}
  - name: never
    route: {clusters: [{cluster: v3}]}
"#,
    );
    let cases = [
        (Req::get("/api/x").header("end-user", "jason"), "jason"),
        (Req::get("/x?user=jason"), "jason"),
        (Req::get("/api/x"), "api"),
        (Req::get("/x"), "rest"),
    ];
    for (req, want) in &cases {
        let m = t.route(&req.view()).expect("a route matches");
        assert_eq!(m.route_name(), *want, "{}", req.path);
        assert_eq!(m.virtual_host_name(), "reviews");
    }
    // A virtual host whose routes all miss is "no route".
    let t = one_route("[{uri: {exact: /only}}]");
    assert!(t.route(&Req::get("/other").view()).is_none());
}

const HOSTS: &str = r#"
name: hosts
virtualHosts:
- {name: reviews, domains: ["reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080"], routes: [{directResponse: {status: 200}}]}
- {name: pp-port-only, domains: ["productpage.default.svc.cluster.local:9080"], routes: [{directResponse: {status: 200}}]}
- {name: other-ns, domains: ["details.prod.svc.cluster.local"], routes: [{directResponse: {status: 200}}]}
- {name: ported, domains: ["ratings.example.com:8080"], routes: [{directResponse: {status: 200}}]}
- {name: plain, domains: ["Ratings.Example.com"], routes: [{directResponse: {status: 200}}]}
- {name: wild-long, domains: ["*.api.example.com"], routes: [{directResponse: {status: 200}}]}
- {name: wild-short, domains: ["*.example.com"], routes: [{directResponse: {status: 200}}]}
- {name: wild-dash, domains: ["*-canary.example.org"], routes: [{directResponse: {status: 200}}]}
- {name: prefix-long, domains: ["www.example.*"], routes: [{directResponse: {status: 200}}]}
- {name: prefix, domains: ["www.*"], routes: [{directResponse: {status: 200}}]}
- {name: any, domains: ["*"], routes: [{directResponse: {status: 200}}]}
"#;

#[test]
#[rustfmt::skip]
fn virtual_hosts_by_authority() {
    let t = table(HOSTS);
    let cases = [
        ("reviews.default.svc.cluster.local", "reviews"),
        ("Reviews.Default.SVC.cluster.local", "reviews"),
        ("reviews.default.svc.cluster.local:9080", "reviews"),
        ("reviews.default.svc.cluster.local:1234", "reviews"),
        // Kubernetes short names, resolved against the node's namespace and cluster domain.
        ("reviews", "reviews"),
        ("reviews:9080", "reviews"),
        ("REVIEWS:9080", "reviews"),
        ("reviews.default", "reviews"),
        ("reviews.default.svc", "reviews"),
        ("reviews.default.svc:9080", "reviews"),
        ("productpage:9080", "pp-port-only"),
        ("productpage", "any"),
        ("productpage:9090", "any"),
        ("details", "any"),
        ("details.prod", "other-ns"),
        ("details.prod.svc:80", "other-ns"),
        // A domain with a port matches that port only; without a port, any port.
        ("ratings.example.com:8080", "ported"),
        ("ratings.example.com:9090", "plain"),
        ("ratings.example.com", "plain"),
        ("RATINGS.example.com", "plain"),
        // Longest suffix wildcard; a wildcard matches at least one character.
        ("v1.api.example.com", "wild-long"),
        ("v1.api.example.com:443", "wild-long"),
        ("api.example.com", "wild-short"),
        ("a.b.example.com", "wild-short"),
        ("example.com", "any"),
        ("x-canary.example.org", "wild-dash"),
        ("-canary.example.org", "any"),
        // Suffix wildcards before prefix wildcards, the longest prefix first.
        ("www.example.com", "wild-short"),
        ("www.example.net", "prefix-long"),
        ("www.foo.org", "prefix"),
        ("www.", "any"),
        ("[::1]:8080", "any"),
        ("", "any"),
    ];
    for (authority, want) in cases {
        let req = Req::get("/").at(authority);
        let m = t.route(&req.view()).expect("* catches everything");
        assert_eq!(m.virtual_host_name(), want, "{authority:?}");
    }
    let long = format!("{}.example.com", "A".repeat(300));
    let req = Req::get("/").at(&long);
    assert_eq!(t.route(&req.view()).map(|m| m.virtual_host_name()), Some("wild-short"));
}

#[test]
fn short_names_follow_the_node() {
    let node = NodeInfo {
        namespace: "prod".into(),
        cluster_domain: "corp.internal".into(),
        ..NodeInfo::default()
    };
    let t = build_with(
        r#"
name: t
virtualHosts:
- {name: details, domains: ["details.prod.svc.corp.internal"], routes: [{directResponse: {status: 200}}]}
- {name: reviews, domains: ["reviews.default.svc.corp.internal"], routes: [{directResponse: {status: 200}}]}
- {name: foreign, domains: ["ratings.default.svc.cluster.local"], routes: [{directResponse: {status: 200}}]}
"#,
        &node,
    )
    .expect("valid");
    let cases = [
        ("details", Some("details")),
        ("details.prod:9080", Some("details")),
        ("reviews", None),
        ("reviews.default", Some("reviews")),
        ("ratings.default", None),
        ("nothing", None),
    ];
    for (authority, want) in cases {
        let req = Req::get("/").at(authority);
        assert_eq!(
            t.route(&req.view()).map(|m| m.virtual_host_name()),
            want,
            "{authority:?}"
        );
    }
}

/// The only route of a catch-all virtual host forwarding to `clusters` (a YAML flow list).
fn forward(clusters: &str) -> RouteTable {
    table(&format!(
        "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - route: {{clusters: {clusters}}}\n"
    ))
}

fn forward_of(t: &RouteTable) -> &Forward {
    let req = Req::get("/");
    match t.route(&req.view()).map(|m| m.action()) {
        Some(Action::Forward(f)) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// How many of `n` evenly spread random values pick each cluster, in first-seen order.
fn spread(f: &Forward, n: u64) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for k in 0..n {
        // Rounded up, so that value k scales to exactly k * total / n.
        let random = u32::try_from((k << 32).div_ceil(n)).expect("below 2^32");
        let cluster = f.pick(random).cluster.to_string();
        match counts.iter_mut().find(|(c, _)| *c == cluster) {
            Some((_, count)) => *count += 1,
            None => counts.push((cluster, 1)),
        }
    }
    counts
}

#[test]
#[rustfmt::skip]
fn weighted_picks_follow_weights() {
    let owned = |v: &[(&str, u64)]| v.iter().map(|(c, n)| (c.to_string(), *n)).collect::<Vec<_>>();
    let cases = [
        ("90/10", "[{cluster: v1, weight: 90}, {cluster: v3, weight: 10}]", vec![("v1", 90), ("v3", 10)]),
        ("relative weights", "[{cluster: a, weight: 1}, {cluster: b, weight: 3}]", vec![("a", 25), ("b", 75)]),
        ("zero weight never picked", "[{cluster: a, weight: 50}, {cluster: z}, {cluster: b, weight: 50}]", vec![("a", 50), ("b", 50)]),
        ("single weight 0 takes all", "[{cluster: only}]", vec![("only", 100)]),
        ("all zero: the first", "[{cluster: a}, {cluster: b}]", vec![("a", 100)]),
        ("huge weights", "[{cluster: a, weight: 4294967295}, {cluster: b, weight: 4294967295}]", vec![("a", 50), ("b", 50)]),
    ];
    for (name, clusters, want) in cases {
        let t = forward(clusters);
        assert_eq!(spread(forward_of(&t), 100), owned(&want), "{name}");
    }
    let t = forward("[{cluster: v1, weight: 90}, {cluster: v3, weight: 10}]");
    let f = forward_of(&t);
    assert_eq!(&*f.pick(0).cluster, "v1");
    assert_eq!(&*f.pick(u32::MAX).cluster, "v3");
    assert_eq!(f.destinations().len(), 2);
}

#[test]
fn destinations_carry_their_header_operations() {
    let t = forward(
        "[{cluster: a, weight: 1, requestHeaders: {set: {x-dest: a}}, responseHeaders: {add: {x-from: a}}}]",
    );
    let d = forward_of(&t).pick(7);
    let mut headers = HeaderMap::new();
    d.request_headers.apply(&mut headers);
    assert_eq!(headers.get("x-dest").map(|v| v.as_bytes()), Some(&b"a"[..]));
    assert!(!d.response_headers.is_empty());
}

#[test]
#[rustfmt::skip]
fn path_rewrites() {
    // (matches, rewrite, request, rewritten)
    let cases: Vec<(&str, &str, &str, Option<&str>)> = vec![
        ("[{uri: {prefix: /api}}]", "{uri: /v2}", "/api/users?x=1", Some("/v2/users?x=1")),
        ("[{uri: {prefix: /api/}}]", "{uri: /}", "/api/users", Some("/users")),
        ("[{uri: {prefix: /api}, ignoreUriCase: true}]", "{uri: /v2}", "/API/users", Some("/v2/users")),
        ("[{uri: {exact: /login}}]", "{uri: /auth/login}", "/login?next=/", Some("/auth/login?next=/")),
        ("[{uri: {regex: '/old/.*'}}]", "{uri: /new}", "/old/a/b?q", Some("/new?q")),
        // No uri match is Envoy's `prefix: /`: only the leading slash is replaced.
        ("[{headers: {x: {}}}]", "{uri: /v2/}", "/foo", Some("/v2/foo")),
        ("[]", "{uri: /v2/}", "/foo?a", Some("/v2/foo?a")),
        // The match that held decides what is replaced.
        ("[{uri: {prefix: /a}}, {uri: {prefix: /bb}}]", "{uri: /x}", "/bb/c", Some("/x/c")),
        // uriRegex: every match in the path, groups in RE2 or $ form; the query is kept.
        (
            "[]",
            r#"{uriRegex: {pattern: '^/service/([^/]+)(/.*)$', substitution: '\2/instance/\1'}}"#,
            "/service/foo/v1/api?q=1",
            Some("/v1/api/instance/foo?q=1"),
        ),
        ("[]", "{uriRegex: {pattern: '/+', substitution: /}}", "//a///b?x=//", Some("/a/b?x=//")),
        ("[]", "{uriRegex: {pattern: '^/v(\\d+)/', substitution: '/version-$1/'}}", "/v12/x", Some("/version-12/x")),
        ("[]", "{uriRegex: {pattern: nomatch, substitution: x}}", "/a", Some("/a")),
        ("[]", "{authority: example.com}", "/a", None),
    ];
    for (matches, rewrite, path, want) in cases {
        let t = table(&format!(
            "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - matches: {matches}\n    route: {{clusters: [{{cluster: c}}], rewrite: {rewrite}}}\n"
        ));
        let req = Req::get(path).header("x", "1");
        let m = t.route(&req.view()).expect("matches");
        assert_eq!(m.rewritten_path(&req.view()).as_deref(), want, "{matches} {rewrite} {path}");
    }
}

#[test]
fn authority_rewrite_and_non_forward_actions() {
    let t = forward("[{cluster: c}]");
    assert!(forward_of(&t).authority_rewrite().is_none());
    let t = table(
        "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - route: {clusters: [{cluster: c}], rewrite: {authority: 'Reviews.prod:9080'}}\n",
    );
    let got = forward_of(&t).authority_rewrite().map(|v| v.as_bytes());
    assert_eq!(got, Some(&b"Reviews.prod:9080"[..]));

    let t = table(
        "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - directResponse: {status: 503, body: 'try later'}\n",
    );
    let req = Req::get("/");
    let m = t.route(&req.view()).expect("matches");
    assert!(m.rewritten_path(&req.view()).is_none());
    assert!(m.redirect(&req.view()).is_none());
    match m.action() {
        Action::Direct(d) => {
            assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(&d.body[..], b"try later");
        }
        other => panic!("expected a direct response, got {other:?}"),
    }
}

#[test]
#[rustfmt::skip]
fn redirect_locations() {
    // (redirect, scheme, authority, path, status, Location)
    let cases = [
        ("{uri: /new}", "http", "a.com", "/old?x=1", 301, "http://a.com/new?x=1"),
        ("{uri: '/new?y=2'}", "http", "a.com", "/old?x=1", 301, "http://a.com/new?y=2"),
        ("{uri: new}", "http", "a.com", "/old", 301, "http://a.com/new"),
        ("{authority: b.com}", "http", "a.com:8080", "/p?q", 301, "http://b.com/p?q"),
        ("{authority: b.com, port: 82}", "http", "a.com:8080", "/p", 301, "http://b.com:82/p"),
        ("{scheme: https}", "http", "a.com:80", "/p", 301, "https://a.com/p"),
        ("{scheme: https}", "http", "a.com:8080", "/p", 301, "https://a.com:8080/p"),
        ("{scheme: HTTPS}", "http", "a.com", "/p", 301, "https://a.com/p"),
        ("{scheme: http}", "https", "a.com:443", "/p", 301, "http://a.com/p"),
        ("{scheme: https}", "https", "a.com:443", "/p", 301, "https://a.com:443/p"),
        ("{port: 8443}", "http", "a.com:8080", "/p", 301, "http://a.com:8443/p"),
        ("{port: 80}", "http", "a.com:8080", "/p", 301, "http://a.com/p"),
        ("{scheme: https, port: 443}", "http", "a.com:8080", "/p", 301, "https://a.com/p"),
        ("{scheme: https}", "http", "[::1]:80", "/p", 301, "https://[::1]/p"),
        ("{port: 9000}", "http", "[::1]:80", "/p", 301, "http://[::1]:9000/p"),
        ("{uri: /x, code: 302}", "http", "a.com", "/", 302, "http://a.com/x"),
        ("{uri: /x, code: 303}", "http", "a.com", "/", 303, "http://a.com/x"),
        ("{uri: /x, code: 307}", "http", "a.com", "/", 307, "http://a.com/x"),
        ("{uri: /x, code: 308}", "http", "a.com", "/", 308, "http://a.com/x"),
        ("{code: 302}", "https", "a.com", "/keep?q=1", 302, "https://a.com/keep?q=1"),
    ];
    for (redirect, scheme, authority, path, status, location) in cases {
        let t = table(&format!(
            "name: t\nvirtualHosts:\n- name: all\n  domains: ['*']\n  routes:\n  - redirect: {redirect}\n"
        ));
        let req = Req::get(path).scheme(scheme).at(authority);
        let m = t.route(&req.view()).expect("matches");
        let got = m.redirect(&req.view()).expect("a redirect");
        assert_eq!(got, (StatusCode::from_u16(status).expect("valid"), location.to_string()), "{redirect} {authority}{path}");
        assert!(m.rewritten_path(&req.view()).is_none());
        assert!(HeaderValue::try_from(got.1).is_ok(), "Location is a valid header value");
    }
}

#[test]
fn header_operations_remove_then_set_then_add() {
    let t = table(
        r#"
name: t
virtualHosts:
- name: all
  domains: ["*"]
  routes:
  - route: {clusters: [{cluster: c}]}
    requestHeaders:
      remove: [x-gone, X-Both]
      set: {x-set: new, x-both: set, X-Case: v}
      add: {x-add: new, x-both: added}
    responseHeaders: {set: {x-served-by: weft}}
"#,
    );
    let req = Req::get("/");
    let m = t.route(&req.view()).expect("matches");
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("x-gone", "1"),
        ("x-set", "old1"),
        ("x-set", "old2"),
        ("x-add", "old"),
        ("x-both", "old"),
        ("x-keep", "k"),
    ] {
        headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    m.request_headers().apply(&mut headers);
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("x-gone"), Vec::<String>::new());
    assert_eq!(values("x-set"), ["new"]);
    assert_eq!(values("x-add"), ["old", "new"]);
    // Removed, then set, then appended to.
    assert_eq!(values("x-both"), ["set", "added"]);
    assert_eq!(values("x-case"), ["v"]);
    assert_eq!(values("x-keep"), ["k"]);
    assert!(!m.response_headers().is_empty());
    assert!(HeaderOps::default().is_empty());
}

#[test]
#[rustfmt::skip]
fn build_errors_name_the_field() {
    let route = "route: {clusters: [{cluster: c}]}";
    let vh = |routes: &str| format!("name: t\nvirtualHosts:\n- name: v\n  domains: ['*']\n  routes: {routes}\n");
    let in_match = |m: &str| vh(&format!("[{{{route}}}, {{{route}}}, {{matches: [{m}], {route}}}]"));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("bad uri regex", in_match("{uri: {regex: '/(a'}}"), "virtualHosts[0].routes[2].matches[0].uri.regex", "invalid regex \"/(a\""),
        ("empty uri regex", in_match("{uri: {regex: ''}}"), "virtualHosts[0].routes[2].matches[0].uri.regex", "must not be empty"),
        ("regex escaping its anchors", in_match("{uri: {regex: 'a)|(b'}}"), "virtualHosts[0].routes[2].matches[0].uri.regex", "invalid regex"),
        ("bad method regex", in_match("{method: {regex: '['}}"), "virtualHosts[0].routes[2].matches[0].method.regex", "invalid regex"),
        ("bad header name", in_match("{headers: {'bad name': {}}}"), "virtualHosts[0].routes[2].matches[0].headers[bad name]", "not a valid header name"),
        ("unknown pseudo-header", in_match("{headers: {':protocol': {}}}"), "virtualHosts[0].routes[2].matches[0].headers[:protocol]", "not a valid header name"),
        ("bad header regex", in_match("{headers: {x-a: {regex: '(('}}}"), "virtualHosts[0].routes[2].matches[0].headers[x-a].regex", "invalid regex"),
        ("bad withoutHeaders regex", in_match("{withoutHeaders: {x-a: {regex: '(('}}}"), "virtualHosts[0].routes[2].matches[0].withoutHeaders[x-a].regex", "invalid regex"),
        ("bad query regex", in_match("{queryParams: {q: {regex: '['}}}"), "virtualHosts[0].routes[2].matches[0].queryParams[q].regex", "invalid regex"),
        ("empty query name", in_match("{queryParams: {'': {}}}"), "virtualHosts[0].routes[2].matches[0].queryParams[]", "cannot be empty"),
        ("match port", in_match("{port: 70000}"), "virtualHosts[0].routes[2].matches[0].port", "not in 1-65535"),
        ("missing action", vh("[{name: x}]"), "virtualHosts[0].routes[0]", "one of route, redirect or directResponse"),
        ("no destinations", vh("[{route: {}}]"), "virtualHosts[0].routes[0].route.clusters", "at least one destination"),
        ("empty cluster", vh("[{route: {clusters: [{cluster: a}, {weight: 1}]}}]"), "virtualHosts[0].routes[0].route.clusters[1].cluster", "required"),
        ("bad redirect code", vh("[{redirect: {uri: /x, code: 300}}]"), "virtualHosts[0].routes[0].redirect.code", "301, 302, 303, 307, 308"),
        ("bad redirect scheme", vh("[{redirect: {scheme: 'ht tp'}}]"), "virtualHosts[0].routes[0].redirect.scheme", "not a URI scheme"),
        ("bad redirect port", vh("[{redirect: {port: 65536}}]"), "virtualHosts[0].routes[0].redirect.port", "not in 1-65535"),
        ("bad redirect authority", vh("[{redirect: {authority: 'a b'}}]"), "virtualHosts[0].routes[0].redirect.authority", "not a valid authority"),
        ("bad redirect uri", vh("[{redirect: {uri: \"/a\\nb\"}}]"), "virtualHosts[0].routes[0].redirect.uri", "not a valid path"),
        ("direct status", vh("[{directResponse: {status: 600}}]"), "virtualHosts[0].routes[0].directResponse.status", "not in 200-599"),
        ("direct status 0", vh("[{directResponse: {}}]"), "virtualHosts[0].routes[0].directResponse.status", "not in 200-599"),
        ("route header name", vh(&format!("[{{{route}, requestHeaders: {{set: {{'bad name': x}}}}}}]")), "virtualHosts[0].routes[0].requestHeaders.set[bad name]", "not a valid header name"),
        ("route header value", vh(&format!("[{{{route}, responseHeaders: {{add: {{x-a: \"a\\nb\"}}}}}}]")), "virtualHosts[0].routes[0].responseHeaders.add[x-a]", "control character"),
        ("host header op", vh(&format!("[{{{route}, requestHeaders: {{set: {{Host: x}}}}}}]")), "virtualHosts[0].routes[0].requestHeaders.set[Host]", "rewrite.authority"),
        ("pseudo-header op", vh(&format!("[{{{route}, requestHeaders: {{remove: [x-ok, ':path']}}}}]")), "virtualHosts[0].routes[0].requestHeaders.remove[1]", "pseudo-headers"),
        (
            "destination header op",
            vh("[{route: {clusters: [{cluster: a}, {cluster: b, requestHeaders: {add: {'x y': v}}}]}}]"),
            "virtualHosts[0].routes[0].route.clusters[1].requestHeaders.add[x y]",
            "not a valid header name",
        ),
        ("uri and uriRegex", vh("[{route: {clusters: [{cluster: a}], rewrite: {uri: /a, uriRegex: {pattern: a}}}}]"), "virtualHosts[0].routes[0].route.rewrite.uriRegex", "only one of uri or uriRegex"),
        ("bad rewrite regex", vh("[{route: {clusters: [{cluster: a}], rewrite: {uriRegex: {pattern: '(a'}}}}]"), "virtualHosts[0].routes[0].route.rewrite.uriRegex.pattern", "invalid regex"),
        ("missing rewrite pattern", vh("[{route: {clusters: [{cluster: a}], rewrite: {uriRegex: {substitution: a}}}}]"), "virtualHosts[0].routes[0].route.rewrite.uriRegex.pattern", "required"),
        ("bad substitution", vh(r"[{route: {clusters: [{cluster: a}], rewrite: {uriRegex: {pattern: '(a)', substitution: '\2'}}}}]"), "virtualHosts[0].routes[0].route.rewrite.uriRegex.substitution", "refers to group 2"),
        ("bad rewrite uri", vh("[{route: {clusters: [{cluster: a}], rewrite: {uri: \"/a\\nb\"}}}]"), "virtualHosts[0].routes[0].route.rewrite.uri", "not a valid path"),
        ("bad authority rewrite", vh("[{route: {clusters: [{cluster: a}], rewrite: {authority: 'a b'}}}]"), "virtualHosts[0].routes[0].route.rewrite.authority", "not a valid authority"),
        (
            "duplicate domain",
            "name: t\nvirtualHosts:\n- {name: a, domains: [x.com], routes: []}\n- {name: b, domains: [X.com], routes: []}\n".into(),
            "virtualHosts[1].domains[0]",
            "already served by virtualHosts[0]",
        ),
        ("two catch-alls", "name: t\nvirtualHosts:\n- {name: a, domains: ['*']}\n- {name: b, domains: [y, '*']}\n".into(), "virtualHosts[1].domains[1]", "already served"),
        ("wildcard in the middle", "name: t\nvirtualHosts:\n- {name: a, domains: ['a.*.com']}\n".into(), "virtualHosts[0].domains[0]", "may only start or end"),
        ("no domains", "name: t\nvirtualHosts:\n- {name: a, routes: []}\n".into(), "virtualHosts[0].domains", "at least one domain"),
    ];
    for (name, yaml, field, reason) in &cases {
        let err = build_with(yaml, &NodeInfo::default()).expect_err(name);
        assert_eq!(err.resource, "route_config \"t\"", "{name}");
        assert_eq!(err.field, *field, "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
    }
}

#[test]
fn tables_are_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<RouteTable>();
    shared::<Matched<'static>>();
    let t = table("name: outbound\nvirtualHosts: []\n");
    assert_eq!(t.name(), "outbound");
    assert!(t.route(&Req::get("/").view()).is_none());
}
