//! weft-proxy end to end: the real binary between a client and real backends on 127.0.0.1.

mod support;

use std::time::Duration;

use support::{Proxy, backend, client, get};

/// Two reviews versions, a details service, and routes exercising matches and actions.
async fn mesh() -> (Proxy, std::net::SocketAddr) {
    let v1 = backend("reviews-v1").await;
    let v2 = backend("reviews-v2").await;
    let details = backend("details").await;
    // A port nothing listens on: bind, learn the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        r#"
node: {{id: test, namespace: default}}
listeners:
- name: http
  address: 127.0.0.1:0
  http: {{routeConfig: main, explicitProxy: true}}
  accessLog: {{format: JSON}}
routeConfigs:
- name: main
  virtualHosts:
  - name: reviews
    domains: ["reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080"]
    routes:
    - name: jason
      matches: [{{headers: {{end-user: {{exact: jason}}}}}}]
      route: {{clusters: [{{cluster: reviews-v2}}]}}
    - name: split
      matches: [{{uri: {{prefix: /split}}}}]
      route: {{clusters: [{{cluster: reviews-v1, weight: 50}}, {{cluster: reviews-v2, weight: 50}}]}}
    - name: default
      route: {{clusters: [{{cluster: reviews-v1}}]}}
  - name: details
    domains: ["details.example.com"]
    routes:
    - name: teapot
      matches: [{{uri: {{exact: /teapot}}}}]
      directResponse: {{status: 418, body: "short and stout"}}
    - name: moved
      matches: [{{uri: {{prefix: /old}}}}]
      redirect: {{uri: /new, code: 308}}
    - name: missing-cluster
      matches: [{{uri: {{exact: /nc}}}}]
      route: {{clusters: [{{cluster: nowhere}}]}}
    - name: empty
      matches: [{{uri: {{exact: /uh}}}}]
      route: {{clusters: [{{cluster: empty}}]}}
    - name: dead
      matches: [{{uri: {{exact: /uf}}}}]
      route: {{clusters: [{{cluster: dead}}]}}
    - name: rewrite
      matches: [{{uri: {{prefix: /api/v1/}}}}]
      route: {{clusters: [{{cluster: details}}], rewrite: {{uri: /v2/}}}}
      requestHeaders: {{set: {{x-route: rewrite}}}}
      responseHeaders: {{set: {{x-served-by: weft}}}}
clusters:
- {{name: reviews-v1, endpoints: [{{address: "{v1}"}}]}}
- {{name: reviews-v2, endpoints: [{{address: "{v2}"}}]}}
- {{name: details, endpoints: [{{address: "{details}"}}]}}
- {{name: empty}}
- {{name: dead, connectTimeout: 2s, endpoints: [{{address: "{closed}"}}]}}
"#
    );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("http");
    (proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_header_then_default() {
    let (_proxy, addr) = mesh().await;
    let c = client();
    let host = "reviews.default.svc.cluster.local:9080";
    let jason = get(&c, addr, host, "/reviews/1", &[("end-user", "jason")]).await;
    assert_eq!(jason.status, 200);
    assert!(
        jason.body.starts_with("reviews-v2 /reviews/1"),
        "{}",
        jason.body
    );
    let other = get(&c, addr, host, "/reviews/1", &[("end-user", "alice")]).await;
    assert!(other.body.starts_with("reviews-v1 "), "{}", other.body);
    // The proxy adds what Envoy adds.
    assert!(other.headers.contains_key("x-envoy-upstream-service-time"));
    assert!(
        other.headers.contains_key("x-echo-x-request-id"),
        "x-request-id generated"
    );
    // A sidecar (use_remote_address off, as Istio sets it) does not add its caller to
    // x-forwarded-for; gateways do (a_gateway_drops_the_envoy_headers_of_outside_clients).
    assert!(!other.headers.contains_key("x-echo-x-forwarded-for"));
    assert_eq!(other.headers["x-echo-x-forwarded-proto"], "http");
    assert_eq!(other.headers["x-echo-host"], host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_about_even() {
    let (_proxy, addr) = mesh().await;
    let c = client();
    let mut v1 = 0;
    for _ in 0..400 {
        let r = get(&c, addr, "reviews.default.svc.cluster.local", "/split", &[]).await;
        assert_eq!(r.status, 200);
        if r.body.starts_with("reviews-v1") {
            v1 += 1;
        }
    }
    // 50/50 over 400: mean 200, sd 10; 6 sd either side.
    assert!((140..=260).contains(&v1), "v1 got {v1} of 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_name_their_cause() {
    let (_proxy, addr) = mesh().await;
    let c = client();
    let nr = get(&c, addr, "unknown.example.com", "/", &[]).await;
    assert_eq!(
        (nr.status, &nr.headers["x-weft-response-flags"]),
        (404, &"NR".parse().unwrap())
    );
    assert!(nr.body.contains("(NR)"), "{}", nr.body);
    let nc = get(&c, addr, "details.example.com", "/nc", &[]).await;
    assert_eq!(
        (
            nc.status,
            nc.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "NC")
    );
    let uh = get(&c, addr, "details.example.com", "/uh", &[]).await;
    assert_eq!(
        (
            uh.status,
            uh.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "UH")
    );
    let uf = get(&c, addr, "details.example.com", "/uf", &[]).await;
    assert_eq!(
        (
            uf.status,
            uf.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "UF")
    );
    assert!(
        uf.body.to_lowercase().contains("refused"),
        "socket error in body: {}",
        uf.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_redirect_and_rewrite() {
    let (_proxy, addr) = mesh().await;
    let c = client();
    let t = get(&c, addr, "details.example.com", "/teapot", &[]).await;
    assert_eq!((t.status, t.body.as_str()), (418, "short and stout"));
    assert_eq!(t.headers["content-type"], "text/plain");
    let r = get(&c, addr, "details.example.com", "/old/page?x=1", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://details.example.com/new?x=1");
    // Behind a proxy that terminated TLS (x-forwarded-proto), the Location keeps https.
    let r = get(
        &c,
        addr,
        "details.example.com",
        "/old/page",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(r.headers["location"], "https://details.example.com/new");
    let w = get(&c, addr, "details.example.com", "/api/v1/items?id=7", &[]).await;
    assert_eq!(w.status, 200);
    assert!(w.body.starts_with("details /v2/items?id=7"), "{}", w.body);
    assert_eq!(
        w.headers["x-echo-x-envoy-original-path"],
        "/api/v1/items?id=7"
    );
    // Every response names the proxy as Istio's do.
    assert_eq!(w.headers["server"], "istio-envoy");
    assert_eq!(w.headers["x-echo-x-route"], "rewrite");
    assert_eq!(w.headers["x-served-by"], "weft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_proxy_routes_short_names_by_authority() {
    let (_proxy, addr) = mesh().await;
    // What an HTTP_PROXY client sends: absolute-form, short name.
    let c = client();
    let req = hyper::Request::builder()
        .uri("http://reviews:9080/reviews/2")
        .header("host", "reviews:9080")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    // Connect to the proxy, not to `reviews`: write the request by hand over TCP.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET http://reviews:9080/reviews/2 HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("reviews-v1 /reviews/2"), "{out}");
    drop((c, req));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downstream_to_http1_upstream() {
    let (_proxy, addr) = mesh().await;
    // Prior-knowledge HTTP/2 to the proxy, with the service in :authority.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for path in ["/h2", "/h2-again"] {
        let req = hyper::Request::builder()
            .uri(format!("http://reviews.default.svc.cluster.local{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        // The backend saw HTTP/1.1, with the authority as Host.
        assert!(
            body.starts_with(&format!("reviews-v1 {path} HTTP/1.1")),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_the_proxy_survives() {
    let (_proxy, addr) = mesh().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
    ];
    for (bytes, want) in cases {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let mut out = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
            .await
            .unwrap()
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&out[..n]);
        assert!(text.starts_with(want), "{want}: got {text:?}");
    }
    // Still serving.
    let ok = get(
        &client(),
        addr,
        "reviews.default.svc.cluster.local",
        "/",
        &[],
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shows_config_clusters_and_stats() {
    let (proxy, addr) = mesh().await;
    let c = client();
    let _ = get(&c, addr, "nowhere", "/", &[]).await;
    let dump = get(&c, proxy.admin, "admin", "/config_dump", &[]).await;
    let json: serde_json::Value = serde_json::from_str(&dump.body).expect("config_dump is JSON");
    assert_eq!(json["clusters"].as_array().map(Vec::len), Some(5));
    let clusters = get(&c, proxy.admin, "admin", "/clusters", &[]).await;
    assert!(
        clusters.body.contains("reviews-v1::127.0.0.1:"),
        "{}",
        clusters.body
    );
    let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await;
    assert!(
        stats.body.contains("http.local_reply.NR: 1"),
        "{}",
        stats.body
    );
    let ready = get(&c, proxy.health, "health", "/healthz/ready", &[]).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_apps_readiness() {
    // The app's port: bound now, refusing once dropped, accepting again when bound anew.
    let app = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let app_addr = app.local_addr().expect("addr");
    let proxy = Proxy::start_with_admin(
        &format!(", appProbes: [\"{app_addr}\"]"),
        "listeners: []\nclusters: []\n",
    );
    let c = client();
    let ready = get(&c, proxy.health, "health", "/healthz/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    drop(app);
    let down = get(&c, proxy.health, "health", "/healthz/ready", &[]).await;
    assert_eq!(down.status, 503);
    assert!(
        down.body
            .starts_with(&format!("app not ready: {app_addr}: ")),
        "{}",
        down.body
    );
    let _again = std::net::TcpListener::bind(app_addr).expect("bind again");
    let up = get(&c, proxy.health, "health", "/healthz/ready", &[]).await;
    assert_eq!(up.status, 200, "{}", up.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ws = support::upgrade_backend().await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: ws, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: ws}}]}}}}]}}
clusters:
- {{name: ws, endpoints: [{{address: "{ws}"}}]}}
"#
    ));
    let mut s = tokio::net::TcpStream::connect(proxy.addr("http"))
        .await
        .unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: chat.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read the response head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // Now the connection is the backend's: bytes echo both ways.
    for msg in [
        &b"ping"[..],
        b"and a longer message over the upgraded connection",
    ] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http2_keeps_streaming_and_trailers() {
    use http_body_util::BodyExt;
    use hyper::body::Frame;
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

    // Unary: one message, trailers carry the status.
    // Streaming: three messages sent over time, echoed back as they arrive.
    for messages in [1usize, 3] {
        let (tx, rx) = tokio::sync::mpsc::channel::<Frame<bytes::Bytes>>(4);
        let req = hyper::Request::builder()
            .method("POST")
            .uri("http://echo.example.com/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(support::ChannelBody(rx))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        for i in 0..messages {
            let msg = bytes::Bytes::from(format!("message {i}"));
            tx.send(Frame::data(msg.clone())).await.unwrap();
            // Each message comes back before the next is sent: the proxy streams, not buffers.
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), msg);
        }
        drop(tx);
        let rest = body.collect().await.unwrap();
        let trailers = rest.trailers().expect("trailers").clone();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(
            trailers["grpc-message"],
            format!("echoed-{messages}").as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_counts_request_body_bytes() {
    let app = backend("app").await;
    let (_dir, log) = support::access_log_file("weft-access-log");
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}, accessLog: {{path: "{}"}}}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#,
        log.display()
    ));
    let req = http::Request::post(format!("http://{}/upload", proxy.addr("http")))
        .header("host", "app")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            1234
        ])))
        .unwrap();
    let r = support::send(&client(), req).await;
    assert_eq!(r.status, 200);
    let text = support::access_log_lines(&log, 1).await;
    // STATUS FLAGS BYTES_RECEIVED BYTES_SENT: the 1234 bytes sent, then the echo's length.
    let sent = r.body.len();
    assert!(
        text.contains(&format!("\"POST /upload HTTP/1.1\" 200 - 1234 {sent} ")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keeps_the_detail_of_local_replies_to_itself() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_dir, log) = support::access_log_file("weft-gateway-detail");
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: "router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local"}}
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}, accessLog: {{path: "{}", format: JSON}}}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: dead}}]}}}}]}}]
clusters:
- {{name: dead, connectTimeout: 2s, endpoints: [{{address: "{closed}"}}]}}
"#,
        log.display()
    ));
    let uf = get(&client(), proxy.addr("http"), "app.example.com", "/", &[]).await;
    assert_eq!(
        (
            uf.status,
            uf.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "UF")
    );
    // The cause, not the endpoint's address or the socket error.
    assert_eq!(uf.body, "upstream connect error (UF)\n");
    // Those are in the access log.
    let text = support::access_log_lines(&log, 1).await;
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    let details = line["response_code_details"].as_str().unwrap_or_default();
    assert!(
        details.contains(&closed.to_string()) && details.to_lowercase().contains("refused"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_retries_that_ran_out_as_envoy_does() {
    let app = backend("app").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_dir, log) = support::access_log_file("weft-retry-flags");
    let retry = r#"retryPolicy: {numRetries: 2, retryOn: "connect-failure,5xx"}"#;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}, accessLog: {{path: "{}", format: JSON}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: app, domains: [app], routes: [{{route: {{clusters: [{{cluster: app}}], {retry}}}}}]}}
  - {{name: dead, domains: [dead], routes: [{{route: {{clusters: [{{cluster: dead}}], {retry}}}}}]}}
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
- {{name: dead, endpoints: [{{address: "{closed}"}}]}}
"#,
        log.display()
    ));
    let c = client();
    // The upstream's last 503 is passed on; the log says retries ran out.
    let r = get(&c, proxy.addr("http"), "app", "/status/503", &[]).await;
    assert_eq!(r.status, 503);
    assert!(!r.headers.contains_key("x-weft-response-flags"));
    // Every attempt failed to connect: URX, then the last attempt's cause.
    let r = get(&c, proxy.addr("http"), "dead", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-weft-response-flags"], "URX,UF");
    let lines: Vec<serde_json::Value> = support::access_log_lines(&log, 2)
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let flags: Vec<_> = lines
        .iter()
        .map(|l| (l["authority"].clone(), l["response_flags"].clone()))
        .collect();
    assert_eq!(
        flags,
        [
            (serde_json::json!("app"), serde_json::json!("URX")),
            (serde_json::json!("dead"), serde_json::json!("URX,UF")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_finds_its_client_behind_as_many_proxies_as_it_trusts() {
    let app = backend("app").await;
    let (_dir, log) = support::access_log_file("weft-trusted-hops");
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: "router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local"}}
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main, xffNumTrustedHops: 1}}, accessLog: {{path: "{}", format: JSON}}}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#,
        log.display()
    ));
    // A load balancer in front appended the client (203.0.113.7) after what the client
    // claimed (198.51.100.1): one trusted hop makes 203.0.113.7 the client.
    let xff = "198.51.100.1, 203.0.113.7";
    let r = get(
        &client(),
        proxy.addr("http"),
        "app",
        "/",
        &[("x-forwarded-for", xff)],
    )
    .await;
    assert_eq!(r.status, 200);
    // The gateway still appends its own peer, as Envoy with use_remote_address.
    assert_eq!(
        r.headers["x-echo-x-forwarded-for"],
        "198.51.100.1, 203.0.113.7,127.0.0.1"
    );
    let text = support::access_log_lines(&log, 1).await;
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(line["downstream_remote_address"], "203.0.113.7:0", "{text}");
}

/// A proxy (gateway when `node` is a `router~` id) with one route to an echoing backend,
/// retrying 5xx twice.
async fn echo_proxy(node: &str) -> Proxy {
    let echo = backend("echo").await;
    Proxy::start(&format!(
        r#"
node: {{id: "{node}"}}
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: echo}}], retryPolicy: {{numRetries: 2, retryOn: "5xx"}}}}}}]}}]
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_drops_the_envoy_headers_of_outside_clients() {
    let steering = [
        ("x-envoy-max-retries", "10"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-internal", "true"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
    ];
    let gateway =
        echo_proxy("router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local").await;
    let r = get(&client(), gateway.addr("http"), "app", "/", &steering).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (name, _) in steering {
        assert!(
            !r.headers.contains_key(format!("x-echo-{name}").as_str()),
            "{name} reached the backend through a gateway"
        );
    }
    // The proxy's own x-envoy headers still go upstream.
    assert_eq!(r.headers["x-echo-x-envoy-attempt-count"], "1");
    // A gateway adds its client to x-forwarded-for and says the scheme of its own connection.
    let forwarded = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ];
    let r = get(&client(), gateway.addr("http"), "app", "/", &forwarded).await;
    assert_eq!(r.headers["x-echo-x-forwarded-for"], "203.0.113.7,127.0.0.1");
    assert_eq!(r.headers["x-echo-x-forwarded-proto"], "http");
    assert_eq!(r.headers["x-echo-x-envoy-external-address"], "127.0.0.1");

    // A sidecar drops Envoy's list of them too (under Istio's settings no caller is
    // internal), and passes the rest of the prefix.
    let sidecar = echo_proxy("sidecar~127.0.0.1~app-0.default~default.svc.cluster.local").await;
    let mut sent = steering.to_vec();
    sent.push(("x-envoy-custom", "kept"));
    let r = get(&client(), sidecar.addr("http"), "app", "/", &sent).await;
    for (name, _) in steering {
        assert!(
            !r.headers.contains_key(format!("x-echo-{name}").as_str()),
            "{name} reached the backend through a sidecar"
        );
    }
    assert_eq!(r.headers["x-echo-x-envoy-custom"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_attempt_says_which_it_is() {
    let proxy = echo_proxy("sidecar~127.0.0.1~app-0.default~default.svc.cluster.local").await;
    // 503 every time: two retries, and the client sees the third attempt's answer.
    let r = get(&client(), proxy.addr("http"), "app", "/status/503", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-echo-x-envoy-attempt-count"], "3");
    // A client cannot set it for the proxy.
    let r = get(
        &client(),
        proxy.addr("http"),
        "app",
        "/",
        &[("x-envoy-attempt-count", "7")],
    )
    .await;
    assert_eq!(r.headers["x-echo-x-envoy-attempt-count"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_other_than_websocket_are_not_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that would switch to any protocol it is offered.
    let any = support::upgrade_backend().await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: any, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: any}}]}}}}]}}
clusters:
- {{name: any, endpoints: [{{address: "{any}"}}]}}
"#
    ));
    let addr = proxy.addr("http");
    let exchange = |request: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        // The rest of a short body, if any.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await
        {
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).to_lowercase()
    };
    // Envoy answers 403 to an upgrade it is not configured for (Istio configures websocket).
    let foo =
        exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
            .await;
    assert!(foo.starts_with("http/1.1 403"), "{foo}");
    assert!(foo.contains("upgrade failed"), "{foo}");
    // h2c is dropped (the h2c smuggling bypass): the request goes on as HTTP/1.1 without the
    // offer, and this backend says it expected one.
    let h2c = exchange(
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(h2c.starts_with("http/1.1 400"), "{h2c}");
    assert!(h2c.contains("expected an upgrade"), "{h2c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_routing() {
    let echo = backend("echo").await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: base, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
- {{name: none, address: 127.0.0.1:0, http: {{routeConfig: main, pathNormalization: NONE}}}}
- {{name: merge, address: 127.0.0.1:0, http: {{routeConfig: main, pathNormalization: MERGE_SLASHES}}}}
- {{name: decode, address: 127.0.0.1:0, http: {{routeConfig: main, pathNormalization: DECODE_AND_MERGE_SLASHES}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
    - {{matches: [{{uri: {{exact: /admin}}}}], route: {{clusters: [{{cluster: echo}}]}}}}
    - {{directResponse: {{status: 403, body: "not admin"}}}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
"#
    ));
    let c = client();
    // (listener, path sent, routed to /admin)
    for (listener, path, admin) in [
        ("base", "/admin", true),
        ("base", "/a/../admin", true),
        ("base", "/%61dmin", true),
        ("base", "/./admin", true),
        ("base", "//admin", false),
        ("none", "/a/../admin", false),
        ("merge", "//admin", true),
        ("merge", "/x/..//admin", true),
        ("merge", "/x%2F..%2Fadmin", false),
        ("decode", "/x%2F..%2Fadmin", true),
    ] {
        let r = get(&c, proxy.addr(listener), "app", path, &[]).await;
        if admin {
            assert_eq!(r.status, 200, "{listener} {path}: {}", r.body);
            // The upstream gets the path that was routed.
            assert_eq!(
                r.body.split(' ').nth(1),
                Some("/admin"),
                "{listener} {path}"
            );
        } else {
            assert_eq!(r.status, 403, "{listener} {path}: {}", r.body);
        }
    }
    // A % that is not an escape is kept and routed, as Envoy does (no 400).
    let r = get(&c, proxy.addr("base"), "app", "/a%zz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "not admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_carry_the_routes_response_headers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
    - matches: [{{uri: {{prefix: /dead}}}}]
      route: {{clusters: [{{cluster: dead}}]}}
      responseHeaders: {{set: {{strict-transport-security: max-age=31536000}}}}
    - matches: [{{uri: {{prefix: /empty}}}}]
      route: {{clusters: [{{cluster: empty}}]}}
      responseHeaders: {{add: {{x-route: empty}}}}
clusters:
- {{name: dead, connectTimeout: 2s, endpoints: [{{address: "{closed}"}}]}}
- {{name: empty}}
"#
    ));
    let c = client();
    // The proxy's own 503 UF and 503 UH carry what the route adds to responses, as Envoy's do.
    let r = get(&c, proxy.addr("http"), "app", "/dead", &[]).await;
    assert_eq!(
        (
            r.status,
            r.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "UF")
    );
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    let r = get(&c, proxy.addr("http"), "app", "/empty", &[]).await;
    assert_eq!(
        (
            r.status,
            r.headers["x-weft-response-flags"].to_str().unwrap()
        ),
        (503, "UH")
    );
    assert_eq!(r.headers["x-route"], "empty");
}
