//! ORIGINAL_DST clusters (Istio's PassthroughCluster under ALLOW_ANY, resolution NONE): a
//! request through the explicit-proxy listener goes to the destination it asked for.

mod support;

use std::time::Duration;

use support::{Proxy, backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` (raw HTTP/1.1 with `Connection: close`) and reads the whole answer.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    out
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_destination_they_asked_for() {
    let one = backend("one").await;
    let two = backend("two").await;
    let proxy = Proxy::start(
        r#"
listeners:
- {name: outbound, address: 127.0.0.1:0, http: {routeConfig: out, explicitProxy: true}}
routeConfigs:
- name: out
  virtualHosts:
  - {name: allow_any, domains: ["*"], routes: [{connect: true, route: {clusters: [{cluster: PassthroughCluster}]}}, {route: {clusters: [{cluster: PassthroughCluster}]}}]}
clusters:
- {name: PassthroughCluster, discovery: ORIGINAL_DST, connectTimeout: 2s}
"#,
    );
    let addr = proxy.addr("outbound");

    // By IP and by name (localhost resolves through the system resolver), absolute-form as
    // HTTP_PROXY clients send; twice each, so the second reuses the destination.
    for _ in 0..2 {
        let out = exchange(addr, &get(&format!("http://{one}/a?x=1"), &one.to_string())).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("one /a?x=1"), "{out}");
        let by_name = format!("localhost:{}", two.port());
        let out = exchange(addr, &get(&format!("http://{by_name}/b"), &by_name)).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("two /b"), "{out}");
        // The Host the client sent travels on.
        assert!(out.contains(&format!("x-echo-host: {by_name}")), "{out}");
    }

    // CONNECT (what HTTPS_PROXY clients send) tunnels to the destination too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "CONNECT {one} HTTP/1.1\r\nHost: {one}\r\n\r\n{}",
        get("/c", "x")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("one /c"), "{out}");

    // No destination: a name that does not resolve, and the listener itself (a loop), are
    // 503 UH with the reason; the proxy keeps serving.
    for (target, host, why) in [
        (
            "http://no-such-host.invalid/".to_owned(),
            "no-such-host.invalid".to_owned(),
            "resolving",
        ),
        (format!("http://{addr}/"), addr.to_string(), "would loop"),
    ] {
        let out = exchange(addr, &get(&target, &host)).await;
        assert!(out.starts_with("HTTP/1.1 503"), "{target}: {out}");
        assert!(out.contains("x-weft-response-flags: UH"), "{target}: {out}");
        assert!(out.contains(why), "{target}: {out}");
    }
    let out = exchange(addr, &get(&format!("http://{one}/after"), &one.to_string())).await;
    assert!(out.contains("one /after"), "{out}");

    // /clusters lists the destinations requests went to.
    let clusters = exchange(proxy.admin, &get("/clusters", "admin")).await;
    assert!(
        clusters.contains(&format!("PassthroughCluster::{one}::weight::1")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("PassthroughCluster::127.0.0.1:{}::", two.port()))
            || clusters.contains(&format!("PassthroughCluster::[::1]:{}::", two.port())),
        "{clusters}"
    );
}
