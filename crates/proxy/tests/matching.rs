//! Route matching and route actions end to end: each match type and each action of a
//! RouteConfiguration, through the real weft-proxy binary, as a client sees them.
//!
//! Match tests mostly answer with a direct response naming the route that matched, so a
//! failure says which route won; action tests forward to echo backends and read what the
//! backend saw (`x-echo-<header>`, the path in the body) and what the client got.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use support::{Client, Got, Proxy, backend, client, free_port, get, send};

/// A proxy with clusters `a`, `b` and `c` (echo backends answering `a <path> ...` and so on),
/// node namespace `shop`, and the given listeners and virtual hosts (YAML list items, indented
/// as under `listeners:` and `virtualHosts:`). Listeners route with route config `main`.
struct Mesh {
    proxy: Proxy,
    addr: SocketAddr,
    client: Client,
}

const ONE_LISTENER: &str = r#"- {name: http, address: "127.0.0.1:0", http: {routeConfig: main}}"#;

async fn mesh(virtual_hosts: &str) -> Mesh {
    mesh_with(ONE_LISTENER, virtual_hosts).await
}

async fn mesh_with(listeners: &str, virtual_hosts: &str) -> Mesh {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: test, namespace: shop}}
listeners:
{listeners}
routeConfigs:
- name: main
  virtualHosts:
{virtual_hosts}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
- {{name: c, endpoints: [{{address: "{c}"}}]}}
"#
    ));
    // `http` when there is one; tests with several listeners address them by name.
    let addr = *proxy
        .listeners
        .get("http")
        .or_else(|| proxy.listeners.values().next())
        .expect("at least one listener");
    Mesh {
        addr,
        proxy,
        client: client(),
    }
}

impl Mesh {
    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        get(&self.client, self.addr, host, path, headers).await
    }

    /// Which route (direct response body) or backend (first word of its body) answered, or
    /// `status N` when the answer was not a 200.
    async fn who(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        who(&self.get(host, path, headers).await)
    }

    /// Like [`Mesh::who`], with a method.
    async fn who_method(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", "match.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        who(&send(&self.client, req).await)
    }

    /// Asserts each `(path, headers, expected who)` for requests to `host`.
    async fn expect_all(&self, host: &str, cases: &[(&str, Headers<'_>, &str)]) {
        for &(path, headers, want) in cases {
            let got = self.who(host, path, headers).await;
            assert_eq!(got, want, "{host}{path} with {headers:?}");
        }
    }
}

fn who(got: &Got) -> String {
    match got.status {
        200 => got.body.split(' ').next().unwrap_or_default().to_owned(),
        s => format!("status {s}"),
    }
}

/// Every value of `name` in the response, in order.
fn values(got: &Got, name: &str) -> Vec<String> {
    got.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
        .collect()
}

/// Request headers of a case.
type Headers<'a> = &'a [(&'a str, &'a str)];

const NONE: Headers<'static> = &[];

// ---- matches -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_exact_matches_the_whole_path_only() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: exact, matches: [{uri: {exact: /exact}}], route: {clusters: [{cluster: a}]}}
    - {name: rest, route: {clusters: [{cluster: c}]}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/exact", NONE, "a"),
            // The query is not part of the path.
            ("/exact?q=1", NONE, "a"),
            ("/exact/", NONE, "c"),
            ("/exactly", NONE, "c"),
            ("/Exact", NONE, "c"),
            ("/", NONE, "c"),
        ],
    )
    .await;
    // Forwarded unchanged, query included.
    let got = m.get("match.test", "/exact?q=1", NONE).await;
    assert!(
        got.body.starts_with("a /exact?q=1 HTTP/1.1"),
        "{}",
        got.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_prefix_is_a_string_prefix() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: api, matches: [{uri: {prefix: /api}}], directResponse: {status: 200, body: api}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/api", NONE, "api"),
            ("/api/", NONE, "api"),
            ("/api/users?id=1", NONE, "api"),
            // As Envoy: a prefix of the path string, not of path segments.
            ("/apiary", NONE, "api"),
            ("/ap", NONE, "rest"),
            ("/API/users", NONE, "rest"),
            ("/v1/api", NONE, "rest"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_regex_must_match_the_whole_path() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: items, matches: [{uri: {regex: "/items/[0-9]+"}}], directResponse: {status: 200, body: items}}
    - {name: lang, matches: [{uri: {regex: "/(en|de)/.*"}}], directResponse: {status: 200, body: lang}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/items/42", NONE, "items"),
            ("/items/42?sort=asc", NONE, "items"),
            ("/items/", NONE, "rest"),
            ("/items/42/reviews", NONE, "rest"),
            ("/shop/items/42", NONE, "rest"),
            ("/items/4x", NONE, "rest"),
            ("/en/", NONE, "lang"),
            ("/de/about/us", NONE, "lang"),
            ("/fr/about", NONE, "rest"),
            // `en|de` must not escape the anchors: `/english` is neither.
            ("/english", NONE, "rest"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_uri_case_applies_to_exact_and_prefix_not_regex() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: login, matches: [{uri: {exact: /Login}, ignoreUriCase: true}], directResponse: {status: 200, body: login}}
    - {name: static, matches: [{uri: {prefix: /Static/}, ignoreUriCase: true}], directResponse: {status: 200, body: static}}
    - {name: admin, matches: [{uri: {regex: "/admin"}, ignoreUriCase: true}], directResponse: {status: 200, body: admin}}
    - {name: case, matches: [{uri: {exact: /Case}}], directResponse: {status: 200, body: case}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/login", NONE, "login"),
            ("/LOGIN", NONE, "login"),
            ("/Login", NONE, "login"),
            ("/loginx", NONE, "rest"),
            ("/static/app.js", NONE, "static"),
            ("/STATIC/app.js", NONE, "static"),
            ("/statics/app.js", NONE, "rest"),
            // Istio: "the case will be ignored only in the case of exact and prefix".
            ("/admin", NONE, "admin"),
            ("/ADMIN", NONE, "rest"),
            // Without ignoreUriCase, matching is case-sensitive.
            ("/Case", NONE, "case"),
            ("/case", NONE, "rest"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_matches_exact_prefix_and_regex() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: get, matches: [{method: {exact: GET}}], directResponse: {status: 200, body: get}}
    - {name: write, matches: [{method: {regex: "PUT|PATCH"}}], directResponse: {status: 200, body: write}}
    - {name: delete, matches: [{method: {prefix: DEL}}], directResponse: {status: 200, body: delete}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    for (method, want) in [
        ("GET", "get"),
        ("PUT", "write"),
        ("PATCH", "write"),
        ("DELETE", "delete"),
        ("POST", "rest"),
        ("OPTIONS", "rest"),
        // Full match: a method that merely contains PATCH is not a write.
        ("PROPPATCH", "rest"),
    ] {
        assert_eq!(m.who_method(method, "/", NONE).await, want, "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_matches_the_host_with_its_port() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: exact, matches: [{authority: {exact: shop.example.com}}], directResponse: {status: 200, body: exact}}
    - {name: api, matches: [{authority: {prefix: "api."}}], directResponse: {status: 200, body: api}}
    - {name: internal, matches: [{authority: {regex: "[a-z]+\\.internal(:[0-9]+)?"}}], directResponse: {status: 200, body: internal}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    for (host, want) in [
        ("shop.example.com", "exact"),
        // :authority carries the port, and an exact match sees it.
        ("shop.example.com:8080", "rest"),
        ("api.example.com", "api"),
        ("api.example.com:9080", "api"),
        ("web.internal", "internal"),
        ("web.internal:81", "internal"),
        ("web.internal.example.com", "rest"),
        ("other.example.com", "rest"),
    ] {
        assert_eq!(m.who(host, "/", NONE).await, want, "Host: {host}");
    }
}

/// A self-signed certificate for `name` in a temporary directory, and a connector trusting it.
fn tls_material(name: &str) -> (support::TempDir, tokio_rustls::TlsConnector) {
    use std::sync::Arc;
    let dir = support::TempDir(std::env::temp_dir().join(format!(
        "weft-matching-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
    std::fs::write(dir.0.join("tls.crt"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.0.join("tls.key"), cert.signing_key.serialize_pem()).expect("write key");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert.der().to_vec(),
        ))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (dir, tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_is_https_on_a_tls_listener_and_http_otherwise() {
    let (dir, connector) = tls_material("secure.example.com");
    let d = dir.0.display();
    let m = mesh_with(
        &format!(
            r#"- {{name: plain, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
- name: tls
  address: 127.0.0.1:0
  http:
    routeConfig: main
    tls: {{certificates: [{{certFile: "{d}/tls.crt", keyFile: "{d}/tls.key"}}]}}"#
        ),
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: secure, matches: [{scheme: {exact: https}}], directResponse: {status: 200, body: secure}}
    - {name: plain, matches: [{scheme: {exact: http}}], directResponse: {status: 200, body: plain}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    let plain = get(
        &m.client,
        m.proxy.addr("plain"),
        "secure.example.com",
        "/",
        NONE,
    )
    .await;
    assert_eq!(who(&plain), "plain");

    let tcp = tokio::net::TcpStream::connect(m.proxy.addr("tls"))
        .await
        .expect("connect to the TLS listener");
    let name = rustls::pki_types::ServerName::try_from("secure.example.com").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 over TLS");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/")
        .header("host", "secure.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response over TLS");
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"secure"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_match_exact_prefix_regex_and_presence() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: exact, matches: [{headers: {x-exact: {exact: "yes"}}}], directResponse: {status: 200, body: exact}}
    - {name: prefix, matches: [{headers: {x-prefix: {prefix: pre}}}], directResponse: {status: 200, body: prefix}}
    - {name: regex, matches: [{headers: {x-regex: {regex: "v[0-9]+"}}}], directResponse: {status: 200, body: regex}}
    - {name: present, matches: [{headers: {x-present: {}}}], directResponse: {status: 200, body: present}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/", &[("x-exact", "yes")], "exact"),
            ("/", &[("x-exact", "Yes")], "rest"),
            ("/", &[("x-exact", "yes!")], "rest"),
            ("/", &[("x-prefix", "prefix-value")], "prefix"),
            ("/", &[("x-prefix", "pre")], "prefix"),
            ("/", &[("x-prefix", "xpre")], "rest"),
            ("/", &[("x-regex", "v12")], "regex"),
            ("/", &[("x-regex", "v12b")], "rest"),
            ("/", &[("x-regex", "av1")], "rest"),
            ("/", &[("x-present", "anything")], "present"),
            // Present with an empty value is present.
            ("/", &[("x-present", "")], "present"),
            ("/", &[("x-other", "yes")], "rest"),
            ("/", NONE, "rest"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_headers_holds_when_the_match_does_not() {
    let m = mesh(
        r#"
  - name: absent
    domains: [absent.test]
    routes:
    - {name: clean, matches: [{withoutHeaders: {x-debug: {}}}], directResponse: {status: 200, body: clean}}
    - {name: debug, directResponse: {status: 200, body: debug}}
  - name: not-prod
    domains: [notprod.test]
    routes:
    - {name: not-prod, matches: [{withoutHeaders: {x-env: {exact: prod}}}], directResponse: {status: 200, body: not-prod}}
    - {name: prod, directResponse: {status: 200, body: prod}}
"#,
    )
    .await;
    m.expect_all(
        "absent.test",
        &[
            ("/", NONE, "clean"),
            ("/", &[("x-other", "1")], "clean"),
            ("/", &[("x-debug", "1")], "debug"),
            ("/", &[("x-debug", "")], "debug"),
        ],
    )
    .await;
    m.expect_all(
        "notprod.test",
        &[
            // Istio: a missing header is not "prod", so the inverted match holds.
            ("/", NONE, "not-prod"),
            ("/", &[("x-env", "staging")], "not-prod"),
            ("/", &[("x-env", "production")], "not-prod"),
            ("/", &[("x-env", "prod")], "prod"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_params_match_exact_regex_and_presence() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: v2, matches: [{queryParams: {version: {exact: v2}}}], directResponse: {status: 200, body: v2}}
    - {name: numeric, matches: [{queryParams: {id: {regex: "[0-9]+"}}}], directResponse: {status: 200, body: numeric}}
    - {name: debug, matches: [{queryParams: {debug: {}}}], directResponse: {status: 200, body: debug}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/?version=v2", NONE, "v2"),
            ("/page?a=1&version=v2&b=2", NONE, "v2"),
            ("/?version=v2x", NONE, "rest"),
            ("/?version=V2", NONE, "rest"),
            // Parameter names are case-sensitive.
            ("/?Version=v2", NONE, "rest"),
            // The first value counts, as Envoy.
            ("/?version=v1&version=v2", NONE, "rest"),
            // A path that looks like a query is not one.
            ("/version=v2", NONE, "rest"),
            ("/?id=123", NONE, "numeric"),
            ("/p?version=v3&id=7", NONE, "numeric"),
            ("/?id=12a", NONE, "rest"),
            ("/?id=", NONE, "rest"),
            ("/?debug", NONE, "debug"),
            ("/?debug=0", NONE, "debug"),
            ("/?nodebug=1", NONE, "rest"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_is_the_listener_port_not_the_host_port() {
    let port = free_port();
    let m = mesh_with(
        &format!(
            r#"- {{name: fixed, address: "127.0.0.1:{port}", http: {{routeConfig: main}}}}
- {{name: other, address: "127.0.0.1:0", http: {{routeConfig: main}}}}"#
        ),
        &format!(
            r#"
  - name: all
    domains: ["*"]
    routes:
    - {{name: on-port, matches: [{{port: {port}}}], directResponse: {{status: 200, body: on-port}}}}
    - {{name: rest, directResponse: {{status: 200, body: rest}}}}
"#
        ),
    )
    .await;
    let fixed = m.proxy.addr("fixed");
    let other = m.proxy.addr("other");
    assert_eq!(fixed.port(), port);
    let on = get(&m.client, fixed, "match.test", "/", NONE).await;
    assert_eq!(who(&on), "on-port");
    let off = get(&m.client, other, "match.test", "/", NONE).await;
    assert_eq!(who(&off), "rest");
    // The port in Host is not the listener's.
    let host = format!("match.test:{port}");
    let spoofed = get(&m.client, other, &host, "/", NONE).await;
    assert_eq!(who(&spoofed), "rest");
}

/// The proxy passes no source labels to routing (`http.rs` builds `RequestView` with empty
/// labels), and here the node has none either: a route that requires source labels never
/// matches, whatever the request carries, and the request falls through to the next route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_are_unknown_so_such_routes_are_skipped() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: frontend, matches: [{sourceLabels: {app: frontend}}], directResponse: {status: 200, body: frontend}}
    - {name: no-labels, matches: [{sourceLabels: {}, uri: {prefix: /empty}}], directResponse: {status: 200, body: no-labels}}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            ("/", NONE, "rest"),
            ("/", &[("app", "frontend")], "rest"),
            // An empty label set constrains nothing.
            ("/empty", NONE, "no-labels"),
        ],
    )
    .await;
}

/// Istio evaluates `sourceLabels` against the labels of the workload whose proxy runs the
/// route (for a sidecar, the client of its outbound traffic; for a gateway, the gateway), which
/// a static bootstrap does carry, in `node.labels`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_match_the_proxys_own_workload() {
    let (a, c) = (backend("a").await, backend("c").await);
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: test, namespace: shop, labels: {{app: frontend, version: v1}}}}
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
    - {{name: backend-only, matches: [{{sourceLabels: {{app: backend}}}}], route: {{clusters: [{{cluster: c}}]}}}}
    - {{name: frontend, matches: [{{sourceLabels: {{app: frontend}}}}], route: {{clusters: [{{cluster: a}}]}}}}
    - {{name: rest, route: {{clusters: [{{cluster: c}}]}}}}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: c, endpoints: [{{address: "{c}"}}]}}
"#
    ));
    let got = get(&client(), proxy.addr("http"), "match.test", "/", NONE).await;
    assert_eq!(who(&got), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_are_ored_and_conditions_anded() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: or
      matches: [{uri: {prefix: /or}}, {headers: {x-or: {exact: "1"}}}]
      directResponse: {status: 200, body: or}
    - name: and
      matches:
      - {uri: {prefix: /and}, method: {exact: POST}, headers: {x-and: {}}, queryParams: {q: {exact: "1"}}}
      directResponse: {status: 200, body: and}
    - {name: rest, directResponse: {status: 200, body: rest}}
"#,
    )
    .await;
    let cases: &[(&str, &str, Headers<'_>, &str)] = &[
        ("GET", "/or", NONE, "or"),
        ("GET", "/elsewhere", &[("x-or", "1")], "or"),
        ("GET", "/or", &[("x-or", "1")], "or"),
        ("GET", "/elsewhere", &[("x-or", "2")], "rest"),
        ("POST", "/and?q=1", &[("x-and", "")], "and"),
        // Each condition missing in turn.
        ("POST", "/nope?q=1", &[("x-and", "")], "rest"),
        ("GET", "/and?q=1", &[("x-and", "")], "rest"),
        ("POST", "/and?q=1", NONE, "rest"),
        ("POST", "/and?q=2", &[("x-and", "")], "rest"),
        ("POST", "/and", &[("x-and", "")], "rest"),
    ];
    for &(method, path, headers, want) in cases {
        let got = m.who_method(method, path, headers).await;
        assert_eq!(got, want, "{method} {path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_route_wins() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: v1, matches: [{uri: {prefix: /api/v1}}], directResponse: {status: 200, body: v1}}
    - {name: api, matches: [{uri: {prefix: /api}}], directResponse: {status: 200, body: api}}
    - {name: special, matches: [{uri: {exact: /api/v1/special}}], directResponse: {status: 200, body: special}}
    - {name: catch-all, directResponse: {status: 200, body: catch-all}}
    - {name: after, matches: [{uri: {exact: /after}}], directResponse: {status: 200, body: after}}
"#,
    )
    .await;
    m.expect_all(
        "match.test",
        &[
            // More specific, but listed after a route that already matches.
            ("/api/v1/special", NONE, "v1"),
            ("/api/v2", NONE, "api"),
            ("/after", NONE, "catch-all"),
            ("/", NONE, "catch-all"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_by_exact_then_suffix_then_prefix_then_any() {
    let vh = |name: &str, domains: &str| {
        format!(
            "  - {{name: {name}, domains: {domains}, routes: [{{directResponse: {{status: 200, body: {name}}}}}]}}\n"
        )
    };
    let hosts = [
        vh("exact", r#"["www.example.com"]"#),
        vh("suffix", r#"["*.example.com"]"#),
        vh("longer-suffix", r#"["*.api.example.com"]"#),
        vh("prefix", r#"["www.*"]"#),
        vh("with-port", r#"["ports.example.com:9080"]"#),
        vh("any", r#"["*"]"#),
    ]
    .concat();
    let m = mesh(&hosts).await;
    for (host, want) in [
        ("www.example.com", "exact"),
        // A domain without a port matches the host on any port.
        ("www.example.com:8080", "exact"),
        ("WWW.Example.COM", "exact"),
        ("shop.example.com", "suffix"),
        ("a.b.example.com", "suffix"),
        ("v1.api.example.com", "longer-suffix"),
        // `*.api.example.com` needs something before `.api.example.com`.
        ("api.example.com", "suffix"),
        // `*.example.com` does not match the bare domain.
        ("example.com", "any"),
        ("www.example.org", "prefix"),
        // Suffix wildcards come before prefix wildcards.
        ("www.api.example.com", "longer-suffix"),
        ("ports.example.com:9080", "with-port"),
        // A domain with a port matches only that port.
        ("ports.example.com", "suffix"),
        ("ports.example.com:9081", "suffix"),
        ("elsewhere.test", "any"),
    ] {
        assert_eq!(m.who(host, "/", NONE).await, want, "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_short_names_resolve_in_the_node_namespace() {
    let m = mesh(
        r#"
  - name: reviews
    domains: ["reviews.shop.svc.cluster.local", "reviews.shop.svc.cluster.local:9080"]
    routes: [{route: {clusters: [{cluster: a}]}}]
  - name: ratings
    domains: ["ratings.other.svc.cluster.local"]
    routes: [{route: {clusters: [{cluster: b}]}}]
  - name: details
    domains: ["details.shop.svc.cluster.local:9080"]
    routes: [{route: {clusters: [{cluster: c}]}}]
"#,
    )
    .await;
    for (host, want) in [
        ("reviews", "a"),
        ("reviews:9080", "a"),
        ("reviews:1234", "a"),
        ("REVIEWS", "a"),
        ("reviews.shop", "a"),
        ("reviews.shop.svc", "a"),
        ("reviews.shop.svc.cluster.local", "a"),
        // Another namespace's service needs its namespace.
        ("ratings", "status 404"),
        ("ratings.other", "b"),
        ("ratings.other.svc:80", "b"),
        ("reviews.default", "status 404"),
        // A domain with a port: its short names carry the same port.
        ("details:9080", "c"),
        ("details", "status 404"),
        ("details:9081", "status 404"),
    ] {
        assert_eq!(m.who(host, "/", NONE).await, want, "Host: {host}");
    }
    let nr = m.get("ratings", "/", NONE).await;
    assert_eq!(nr.headers["x-weft-response-flags"], "NR");
    // The backend sees the Host as the client sent it.
    let got = m.get("reviews:9080", "/", NONE).await;
    assert_eq!(got.headers["x-echo-host"], "reviews:9080");
}

// ---- actions -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_destinations_split_and_apply_their_own_headers() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: split
      route:
        clusters:
        - cluster: a
          weight: 1
          requestHeaders: {set: {x-dest: a}, remove: [x-secret]}
          responseHeaders: {set: {x-dest-seen: a}}
        - cluster: b
          weight: 3
          requestHeaders: {set: {x-dest: b}, add: {x-tag: b-added}}
          responseHeaders: {set: {x-dest-seen: b}, add: {x-extra: b}}
        - {cluster: c, weight: 0}
"#,
    )
    .await;
    let (mut a, mut b) = (0, 0);
    let headers = [("x-secret", "s"), ("x-tag", "client")];
    for _ in 0..400 {
        let got = m.get("match.test", "/split", &headers).await;
        match who(&got).as_str() {
            "a" => {
                a += 1;
                assert_eq!(values(&got, "x-echo-x-dest"), ["a"]);
                assert_eq!(values(&got, "x-echo-x-secret"), Vec::<String>::new());
                assert_eq!(values(&got, "x-echo-x-tag"), ["client"]);
                assert_eq!(values(&got, "x-dest-seen"), ["a"]);
                assert_eq!(values(&got, "x-extra"), Vec::<String>::new());
            }
            "b" => {
                b += 1;
                assert_eq!(values(&got, "x-echo-x-dest"), ["b"]);
                assert_eq!(values(&got, "x-echo-x-secret"), ["s"]);
                assert_eq!(values(&got, "x-echo-x-tag"), ["client", "b-added"]);
                assert_eq!(values(&got, "x-dest-seen"), ["b"]);
                assert_eq!(values(&got, "x-extra"), ["b"]);
            }
            // Weight 0 next to non-zero weights: never chosen.
            other => panic!("unexpected answer {other}: {}", got.body),
        }
    }
    // a has 1/4: mean 100, sd 8.7; 6 sd either side.
    assert!((48..=152).contains(&a), "a got {a}, b got {b} of 400");
    assert_eq!(a + b, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_replace_uri_authority_port_scheme_with_their_code() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: uri, matches: [{uri: {prefix: /r/uri}}], redirect: {uri: /new/place}, responseHeaders: {set: {x-redirected: "yes"}}}
    - {name: authority, matches: [{uri: {prefix: /r/authority}}], redirect: {authority: other.example.com, code: 302}}
    - {name: port, matches: [{uri: {prefix: /r/port}}], redirect: {port: 8443, code: 307}}
    - {name: scheme, matches: [{uri: {prefix: /r/scheme}}], redirect: {scheme: https, code: 308}}
    - name: all
      matches: [{uri: {prefix: /r/all}}]
      redirect: {scheme: https, authority: secure.example.com, port: 443, uri: "/login?next=home", code: 303}
    - {name: rest, route: {clusters: [{cluster: a}]}}
"#,
    )
    .await;
    let cases = [
        // Code defaults to 301; the request's query is kept.
        (
            "redir.test",
            "/r/uri?q=1",
            301,
            "http://redir.test/new/place?q=1",
        ),
        (
            "redir.test:8080",
            "/r/authority/x",
            302,
            "http://other.example.com/r/authority/x",
        ),
        (
            "redir.test:8080",
            "/r/port",
            307,
            "http://redir.test:8443/r/port",
        ),
        // Changing scheme drops the old scheme's default port, and keeps any other.
        (
            "redir.test",
            "/r/scheme",
            308,
            "https://redir.test/r/scheme",
        ),
        (
            "redir.test:80",
            "/r/scheme",
            308,
            "https://redir.test/r/scheme",
        ),
        (
            "redir.test:8080",
            "/r/scheme?a=b",
            308,
            "https://redir.test:8080/r/scheme?a=b",
        ),
        // The new scheme's default port is left out; a uri with its own query replaces it.
        (
            "redir.test",
            "/r/all?x=1",
            303,
            "https://secure.example.com/login?next=home",
        ),
    ];
    for (host, path, code, location) in cases {
        let got = m.get(host, path, NONE).await;
        assert_eq!(got.status, code, "{host}{path}: {}", got.body);
        assert_eq!(got.headers["location"], location, "{host}{path}");
        // The proxy answers; no backend is involved.
        assert!(!got.headers.contains_key("x-echo-host"), "{host}{path}");
    }
    let got = m.get("redir.test", "/r/uri", NONE).await;
    assert_eq!(got.headers["x-redirected"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_rewrite_replaces_what_the_match_matched() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - {name: prefix, matches: [{uri: {prefix: /api/v1/}}], route: {clusters: [{cluster: a}], rewrite: {uri: /v2/}}}
    - {name: nocase, matches: [{uri: {prefix: /legacy/}, ignoreUriCase: true}], route: {clusters: [{cluster: a}], rewrite: {uri: /modern/}}}
    - {name: exact, matches: [{uri: {exact: /old}}], route: {clusters: [{cluster: a}], rewrite: {uri: /new}}}
    - {name: regex, matches: [{uri: {regex: "/v[0-9]+/health"}}], route: {clusters: [{cluster: a}], rewrite: {uri: /healthz}}}
    - {name: no-uri, matches: [{headers: {x-root: {}}}], route: {clusters: [{cluster: a}], rewrite: {uri: /base/}}}
    - {name: rest, route: {clusters: [{cluster: b}]}}
"#,
    )
    .await;
    // (request path, request headers, backend, path the backend saw)
    let cases: &[(&str, Headers<'_>, &str, &str)] = &[
        ("/api/v1/items?id=7", NONE, "a", "/v2/items?id=7"),
        ("/api/v1/", NONE, "a", "/v2/"),
        ("/LEGACY/page", NONE, "a", "/modern/page"),
        ("/old?x=1", NONE, "a", "/new?x=1"),
        ("/v3/health", NONE, "a", "/healthz"),
        // No uri match: the implicit `prefix: /` is what is replaced.
        ("/x/y?z=1", &[("x-root", "")], "a", "/base/x/y?z=1"),
        ("/api/v2/items", NONE, "b", "/api/v2/items"),
    ];
    for &(path, headers, backend, want) in cases {
        let got = m.get("rewrite.test", path, headers).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        assert!(
            got.body.starts_with(&format!("{backend} {want} HTTP/1.1")),
            "{path}: backend saw {:?}, want {backend} {want}",
            got.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_regex_rewrite_substitutes_every_match_in_the_path() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: groups
      matches: [{uri: {prefix: /users/}}]
      route: {clusters: [{cluster: a}], rewrite: {uriRegex: {pattern: '^/users/([0-9]+)/([a-z]+)$', substitution: '/\2/\1'}}}
    - name: global
      matches: [{uri: {prefix: /o/}}]
      route: {clusters: [{cluster: a}], rewrite: {uriRegex: {pattern: 'o', substitution: '0'}}}
    - name: dollar
      matches: [{uri: {prefix: /dollar/}}]
      route: {clusters: [{cluster: a}], rewrite: {uriRegex: {pattern: '^/dollar/(.*)$', substitution: '/d/$1'}}}
"#,
    )
    .await;
    for (path, want) in [
        // Groups swap; the query is not part of what is rewritten.
        ("/users/42/orders?x=1", "/orders/42?x=1"),
        // A path the pattern does not match is forwarded unchanged.
        ("/users/42/Orders", "/users/42/Orders"),
        ("/o/foo/boo", "/0/f00/b00"),
        ("/dollar/x/y?q=o", "/d/x/y?q=o"),
    ] {
        let got = m.get("rewrite.test", path, NONE).await;
        assert!(
            got.body.starts_with(&format!("a {want} HTTP/1.1")),
            "{path}: backend saw {:?}, want {want}",
            got.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_rewrite_changes_the_host_the_backend_sees() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: host-only
      matches: [{uri: {prefix: /host}}]
      route: {clusters: [{cluster: a}], rewrite: {authority: internal.svc:8080}}
    - name: both
      matches: [{uri: {prefix: /both/}}]
      route: {clusters: [{cluster: a}], rewrite: {uri: /, authority: backend.internal}}
    - {name: rest, route: {clusters: [{cluster: a}]}}
"#,
    )
    .await;
    let got = m.get("public.example.com", "/host/x", NONE).await;
    assert_eq!(got.headers["x-echo-host"], "internal.svc:8080");
    assert!(got.body.starts_with("a /host/x HTTP/1.1"), "{}", got.body);
    let got = m.get("public.example.com", "/both/x?y=1", NONE).await;
    assert_eq!(got.headers["x-echo-host"], "backend.internal");
    assert!(got.body.starts_with("a /x?y=1 HTTP/1.1"), "{}", got.body);
    let got = m.get("public.example.com", "/other", NONE).await;
    assert_eq!(got.headers["x-echo-host"], "public.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_answer_with_status_and_body() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: maintenance
      matches: [{uri: {exact: /maint}}]
      directResponse: {status: 503, body: "down for maintenance"}
      responseHeaders: {set: {x-route: maintenance}, add: {cache-control: no-store}}
    - {name: created, matches: [{uri: {exact: /created}}], directResponse: {status: 201, body: "{\"id\": 1}"}}
    - {name: empty, matches: [{uri: {exact: /empty}}], directResponse: {status: 204}}
    - {name: rest, route: {clusters: [{cluster: a}]}}
"#,
    )
    .await;
    let got = m.get("direct.test", "/maint", NONE).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (503, "down for maintenance")
    );
    assert_eq!(values(&got, "x-route"), ["maintenance"]);
    assert_eq!(values(&got, "cache-control"), ["no-store"]);
    // A local answer by configuration, not a failure: no response flag.
    assert!(!got.headers.contains_key("x-weft-response-flags"));
    let got = m.get("direct.test", "/created", NONE).await;
    assert_eq!((got.status, got.body.as_str()), (201, r#"{"id": 1}"#));
    let got = m.get("direct.test", "/empty", NONE).await;
    assert_eq!((got.status, got.body.as_str()), (204, ""));
    let got = m.get("direct.test", "/other", NONE).await;
    assert!(got.body.starts_with("a /other"), "{}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_header_operations_remove_set_and_add() {
    let m = mesh(
        r#"
  - name: all
    domains: ["*"]
    routes:
    - name: headers
      route: {clusters: [{cluster: a}]}
      requestHeaders:
        set: {x-replace: new, x-fresh: fresh}
        add: {x-append: second}
        remove: [x-remove-me]
      responseHeaders:
        set: {x-echo-x-resp-set: proxy}
        add: {x-echo-x-resp-add: proxy, x-served-by: weft}
        remove: [x-echo-x-resp-remove]
"#,
    )
    .await;
    let got = m
        .get(
            "headers.test",
            "/",
            &[
                ("x-replace", "old"),
                ("x-append", "first"),
                ("x-remove-me", "1"),
                ("x-resp-set", "client"),
                ("x-resp-add", "client"),
                ("x-resp-remove", "1"),
            ],
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    // What the backend saw (it echoes each request header as x-echo-<name>).
    assert_eq!(values(&got, "x-echo-x-replace"), ["new"]);
    assert_eq!(values(&got, "x-echo-x-fresh"), ["fresh"]);
    assert_eq!(values(&got, "x-echo-x-append"), ["first", "second"]);
    assert_eq!(values(&got, "x-echo-x-remove-me"), Vec::<String>::new());
    // What the client got back.
    assert_eq!(values(&got, "x-echo-x-resp-set"), ["proxy"]);
    assert_eq!(values(&got, "x-echo-x-resp-add"), ["client", "proxy"]);
    assert_eq!(values(&got, "x-echo-x-resp-remove"), Vec::<String>::new());
    assert_eq!(values(&got, "x-served-by"), ["weft"]);
}
