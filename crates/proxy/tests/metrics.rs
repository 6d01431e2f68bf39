//! Istio's standard metrics of a proxy run from a static config: TCP connections (bytes each
//! way, a connect failure's flag), gRPC requests (protocol and status from the trailers), and
//! what a config without control-plane metadata reports.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of the one sample of `metric` whose labels contain every `want` (`k="v"`).
fn value(scrape: &str, metric: &str, want: &[&str]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        found.len() <= 1,
        "{metric} {want:?}: several series: {scrape}"
    );
    found.first().copied()
}

async fn scrape(proxy: &Proxy) -> String {
    let got = support::get(
        &support::client(),
        proxy.admin,
        "admin",
        "/stats/prometheus",
        &[],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    got.body
}

/// Polls until `metric` with `want` reaches `at_least` (a TCP connection is counted when it
/// closes, just after the client sees the close).
async fn until(proxy: &Proxy, metric: &str, want: &[&str], at_least: f64) -> String {
    for _ in 0..100 {
        let s = scrape(proxy).await;
        if value(&s, metric, want).is_some_and(|v| v >= at_least) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{metric} {want:?} never reached {at_least}: {}",
        scrape(proxy).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_counted_with_their_bytes_and_flags() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dead = support::free_port();
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: "sidecar~127.0.0.1~client-v1-0.shop~shop.svc.cluster.local", labels: {{app: client, version: v1}}}}
listeners:
- {{name: db, address: "127.0.0.1:0", tcp: {{cluster: db}}}}
- {{name: dead, address: "127.0.0.1:0", tcp: {{cluster: dead}}}}
clusters:
- name: db
  service: {{host: db.shop.svc.cluster.local, name: db, namespace: shop}}
  endpoints:
  - address: "{echo_addr}"
    workload: {{name: db-v2, namespace: shop, app: db, version: v2, canonicalService: db, canonicalRevision: v2}}
- {{name: dead, endpoints: [{{address: "127.0.0.1:{dead}"}}]}}
"#
    ));
    let mut s = tokio::net::TcpStream::connect(proxy.addr("db"))
        .await
        .unwrap();
    s.write_all(b"hello, db").await.unwrap();
    let mut back = [0u8; 9];
    s.read_exact(&mut back).await.unwrap();
    drop(s);
    let common = [
        "reporter=\"source\"",
        "source_workload=\"client-v1\"",
        "source_workload_namespace=\"shop\"",
        "source_app=\"client\"",
        "source_principal=\"unknown\"",
        "destination_workload=\"db-v2\"",
        "destination_version=\"v2\"",
        "destination_service=\"db.shop.svc.cluster.local\"",
        "destination_service_name=\"db\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ];
    let s = until(&proxy, "istio_tcp_connections_closed_total", &common, 1.0).await;
    assert_eq!(
        value(&s, "istio_tcp_connections_opened_total", &common),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "istio_tcp_received_bytes_total", &common),
        Some(9.0)
    );
    assert_eq!(value(&s, "istio_tcp_sent_bytes_total", &common), Some(9.0));

    // The endpoint refuses: a connection counted with UF, the cluster's name as its service.
    let mut s = tokio::net::TcpStream::connect(proxy.addr("dead"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    let uf = [
        "response_flags=\"UF\"",
        "destination_service_name=\"dead\"",
        "destination_workload=\"unknown\"",
    ];
    until(&proxy, "istio_tcp_connections_closed_total", &uf, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_report_their_protocol_and_status() {
    let grpc = support::grpc_like_backend().await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: grpc, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: grpc}}]}}}}]}}
clusters:
- {{name: grpc, protocol: HTTP2, endpoints: [{{address: "{grpc}"}}]}}
"#
    ));
    let stream = tokio::net::TcpStream::connect(proxy.addr("http"))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::builder()
            .method("POST")
            .uri("http://echo.example.com/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"\0\0\0\0\x05hello",
            )))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().expect("trailers")["grpc-status"], "0");
    }
    let want = [
        "reporter=\"source\"",
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"0\"",
        // No control plane said what this is: unknown, the cluster's name as the service.
        "source_workload=\"unknown\"",
        "destination_service_name=\"grpc\"",
        "connection_security_policy=\"unknown\"",
    ];
    let s = until(&proxy, "istio_requests_total", &want, 3.0).await;
    assert_eq!(value(&s, "istio_requests_total", &want), Some(3.0));
    // Ten bytes each way per request: the gRPC message, echoed.
    assert_eq!(value(&s, "istio_request_bytes_sum", &want), Some(30.0));
    assert_eq!(value(&s, "istio_response_bytes_sum", &want), Some(30.0));
    assert_eq!(
        value(
            &s,
            "istio_request_bytes_bucket",
            &[&want[..], &["le=\"10\""]].concat()
        ),
        Some(3.0)
    );
}
