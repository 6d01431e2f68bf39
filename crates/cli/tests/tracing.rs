//! Distributed tracing through a local bookinfo mesh (`weft up --mesh-config`), as Istio's
//! distributed-tracing task shows it: one product page request through the ingress gateway is
//! one trace, gateway -> productpage -> details and productpage -> reviews -> ratings, each hop
//! a client span (the caller's sidecar, or the gateway's upstream span) and a server span (the
//! callee's sidecar; the gateway's request span), exported as Zipkin v2 JSON to a collector
//! run by this test.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Mesh, WEFT, children, free_port, stop, weft};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

type Spans = Arc<Mutex<Vec<Value>>>;

/// A Zipkin-compatible collector on 127.0.0.1: the spans POSTed to /api/v2/spans.
fn zipkin_collector(rt: &tokio::runtime::Runtime) -> (u16, Spans) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind collector");
    let port = listener.local_addr().expect("addr").port();
    let store = spans.clone();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let path_ok = req.uri().path() == "/api/v2/spans";
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let batch = body
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok());
                        let status = match batch {
                            Some(batch) if path_ok => {
                                store.lock().expect("lock").extend(batch);
                                202
                            }
                            _ => 400,
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, spans)
}

/// The product page through the gateway: status and HTML.
fn page(port: u16) -> (u16, String) {
    let get = || -> Option<(u16, String)> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        s.write_all(
            b"GET /productpage HTTP/1.1\r\nHost: bookinfo.local\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    get().unwrap_or((0, String::new()))
}

/// Waits until no span has arrived for `quiet` (at most 15 s): all proxies have flushed.
fn settled(spans: &Spans, quiet: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(15) {
        let n = spans.lock().expect("lock").len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() >= quiet {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    spans.lock().expect("lock").clone()
}

fn tag<'a>(s: &'a Value, k: &str) -> &'a str {
    s["tags"][k].as_str().unwrap_or_default()
}

/// The one span that is a child of `parent` and of `kind` at `service`, calling `upstream`
/// (a substring of its upstream cluster).
fn child<'a>(
    spans: &'a [Value],
    parent: &Value,
    kind: &str,
    service: &str,
    upstream: &str,
) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["parentId"] == parent["id"]
                && s["kind"] == kind
                && tag(s, "istio.canonical_service") == service
                && tag(s, "upstream_cluster").contains(upstream)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} span of {service} to {upstream} under {}: {spans:#?}",
        parent["id"]
    );
    found[0]
}

#[test]
fn one_product_page_request_is_one_trace_through_every_hop() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (collector, spans) = zipkin_collector(&rt);

    let tmp = std::env::temp_dir().join(format!("weft-tracing-test-{}", std::process::id()));
    let dir = tmp.join("bookinfo");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        Path::new(REPO).join("examples/bookinfo/bookinfo.yaml"),
        dir.join("bookinfo.yaml"),
    )
    .expect("copy bookinfo.yaml");
    let port = free_port();
    let gateway = tmp.join("bookinfo-gateway.yaml");
    let gateway_yaml = std::fs::read_to_string(
        Path::new(REPO).join("examples/bookinfo/networking/bookinfo-gateway.yaml"),
    )
    .expect("gateway yaml")
    .replace("number: 80\n", &format!("number: {port}\n"));
    std::fs::write(&gateway, gateway_yaml).expect("write gateway");
    // Istio's way of turning tracing on: a Zipkin provider, the default for every proxy,
    // every request sampled.
    let mesh_config = tmp.join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "defaultProviders: {{tracing: [zipkin]}}\n\
             extensionProviders:\n\
             - {{name: zipkin, zipkin: {{service: 127.0.0.1, port: {collector}}}}}\n\
             defaultConfig: {{tracing: {{sampling: 100}}}}\n"
        ),
    )
    .expect("write mesh config");

    let mut child_process = Command::new(WEFT)
        .arg("up")
        .arg(&dir)
        .arg("--state-dir")
        .arg(&state)
        .arg("--mesh-config")
        .arg(&mesh_config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("weft up");
    let stdout = child_process.stdout.take().expect("stdout");
    let mut mesh = Mesh(child_process);
    let reader =
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).count());

    weft(
        &state,
        &["apply", "-f", gateway.to_str().expect("utf-8 path")],
    );
    let start = Instant::now();
    while page(port).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no product page through the gateway within 60s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every span of the requests so far is exported (flushed within half a second).
    settled(&spans, Duration::from_millis(1500));

    // reviews v1 calls no ratings: ask again until a page came from v2 or v3.
    let mut checked = false;
    for _ in 0..20 {
        spans.lock().expect("lock").clear();
        let (status, html) = page(port);
        assert_eq!(status, 200);
        let all = settled(&spans, Duration::from_millis(1500));
        if html.contains("reviews-v1-") {
            continue;
        }
        check_tree(&all);
        checked = true;
        break;
    }
    assert!(checked, "20 pages, none from reviews v2 or v3");

    let kids = children(mesh.pid());
    stop(&mut mesh, kids);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// One trace: the gateway's span at its root (the trace started at the edge), then a server
/// and a client span per sidecar, linked by their parent ids, each with Istio's tags.
fn check_tree(spans: &[Value]) {
    let traces: std::collections::BTreeSet<&str> =
        spans.iter().filter_map(|s| s["traceId"].as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace id: {traces:?}");

    let roots: Vec<&Value> = spans.iter().filter(|s| s["parentId"].is_null()).collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:#?}");
    let gateway = roots[0];
    assert_eq!(
        gateway["kind"], "SERVER",
        "a gateway's request span is server side"
    );
    assert!(tag(gateway, "node_id").starts_with("router~"), "{gateway}");
    assert_eq!(
        tag(gateway, "istio.canonical_service"),
        "istio-ingressgateway"
    );
    assert_eq!(tag(gateway, "istio.namespace"), "istio-system");
    assert!(tag(gateway, "upstream_cluster").contains("productpage"));
    // Its request upstream is a client span of its own (Istio's gateways spawn one).
    let gateway_out = child(
        spans,
        gateway,
        "CLIENT",
        "istio-ingressgateway",
        "productpage",
    );
    assert!(
        gateway_out["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("router outbound|")
    );

    let productpage = child(spans, gateway_out, "SERVER", "productpage", "inbound|");
    let to_details = child(spans, productpage, "CLIENT", "productpage", "details");
    let details = child(spans, to_details, "SERVER", "details", "inbound|");
    let to_reviews = child(spans, productpage, "CLIENT", "productpage", "reviews");
    let reviews = child(spans, to_reviews, "SERVER", "reviews", "inbound|");
    let to_ratings = child(spans, reviews, "CLIENT", "reviews", "ratings");
    let ratings = child(spans, to_ratings, "SERVER", "ratings", "inbound|");
    assert_eq!(spans.len(), 9, "no other spans: {spans:#?}");

    for s in [
        gateway,
        gateway_out,
        productpage,
        to_details,
        details,
        to_reviews,
        reviews,
        to_ratings,
        ratings,
    ] {
        let tags: BTreeMap<&str, &str> = [
            "component",
            "node_id",
            "istio.canonical_service",
            "istio.namespace",
            "http.method",
            "http.url",
            "http.status_code",
            "upstream_cluster",
            "response_flags",
            "peer.address",
        ]
        .into_iter()
        .map(|k| (k, tag(s, k)))
        .collect();
        assert!(tags.values().all(|v| !v.is_empty()), "a tag missing: {s}");
        assert_eq!(tags["component"], "proxy");
        assert_eq!(tags["http.method"], "GET");
        assert_eq!(tags["http.status_code"], "200", "{s}");
        assert_eq!(tags["response_flags"], "-");
        assert!(s["duration"].as_u64().unwrap_or(0) > 0);
    }
    // A child starts after its parent and ends before it.
    let end =
        |s: &Value| s["timestamp"].as_u64().unwrap_or(0) + s["duration"].as_u64().unwrap_or(0);
    assert!(productpage["timestamp"].as_u64() >= gateway["timestamp"].as_u64());
    assert!(end(ratings) <= end(gateway));
}
