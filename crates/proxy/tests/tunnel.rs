//! CONNECT through the explicit-proxy listener: routed by authority, tunnelled to the picked
//! endpoint, with local replies when it cannot be.

mod support;

use std::time::Duration;

use support::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP server that echoes what it reads.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads an HTTP/1.1 response head (up to the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert_ne!(n, 0, "closed before the head ended: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_to_the_routed_cluster() {
    let echo = echo_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: outbound, address: 127.0.0.1:0, http: {{routeConfig: out, explicitProxy: true}}}}
routeConfigs:
- name: out
  virtualHosts:
  - {{name: echo, domains: ["echo.example.com:7000"], routes: [{{connect: true, route: {{clusters: [{{cluster: echo}}]}}}}]}}
  - {{name: dead, domains: ["dead.example.com:7000"], routes: [{{connect: true, route: {{clusters: [{{cluster: dead}}]}}}}]}}
  - {{name: web, domains: ["web.example.com:7000"], routes: [{{route: {{clusters: [{{cluster: echo}}]}}}}]}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
- {{name: dead, endpoints: [{{address: "{closed}"}}]}}
"#
    ));
    let addr = proxy.addr("outbound");

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"CONNECT echo.example.com:7000 HTTP/1.1\r\nHost: echo.example.com:7000\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for message in [&b"first bytes"[..], b"and more, both ways"] {
        s.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, message);
    }
    drop(s);

    // A dead endpoint: 503 UF with the socket error; an unknown authority: 404 NR; a host
    // whose routes do not ask for CONNECT (Envoy's connect_matcher): 404 NR, no tunnel.
    for (authority, status, flag) in [
        ("dead.example.com:7000", "503", "UF"),
        ("nowhere.example.com:7000", "404", "NR"),
        ("web.example.com:7000", "404", "NR"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(
            head.contains(&format!(
                "x-weft-response-flags: {}",
                flag.to_ascii_lowercase()
            )),
            "{head}"
        );
    }
    // A CONNECT route matches CONNECT only: a GET to its host finds no route.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET http://echo.example.com:7000/ HTTP/1.1\r\nHost: echo.example.com:7000\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_logs_each_connection_as_envoys_tcp_proxy() {
    let echo = echo_server().await;
    let (_dir, log) = support::access_log_file("weft-tcp-log");
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: tcp, address: "127.0.0.1:0", tcp: {{cluster: echo}}, accessLog: {{path: "{log}"}}}}
- {{name: nowhere, address: "127.0.0.1:0", tcp: {{cluster: closed}}, accessLog: {{path: "{log}"}}}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
- {{name: closed, endpoints: [{{address: "127.0.0.1:1"}}]}}
"#,
        log = log.display()
    ));
    let mut s = TcpStream::connect(proxy.addr("tcp")).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    drop(s);
    // An upstream that refuses: the line says UF, nothing moved.
    let mut refused = TcpStream::connect(proxy.addr("nowhere")).await.unwrap();
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest).await;

    let text = support::access_log_lines(&log, 2).await;
    let spliced = text
        .lines()
        .find(|l| l.contains(" echo "))
        .unwrap_or_else(|| panic!("{text}"));
    // `"- - -" 0 - RECEIVED SENT DURATION ...`, the upstream host and cluster.
    assert!(spliced.contains("\"- - -\" 0 - 5 5 "), "{spliced}");
    assert!(spliced.contains(&format!("\"{echo}\" echo")), "{spliced}");
    let failed = text
        .lines()
        .find(|l| l.contains(" closed "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failed.contains("\"- - -\" 0 UF 0 0 "), "{failed}");
}
