//! weft-proxy's life: config reload under load, rejected config, SIGTERM drain, TCP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use support::{Proxy, backend, client, get};

fn config(cluster: &str, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: {cluster}}}]}}}}]}}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_bad_config_keeps_old() {
    let a = backend("a").await;
    let b = backend("b").await;
    let proxy = Proxy::start(&config("a", a, b));
    let addr = proxy.addr("http");

    // Load: two clients in a loop until told to stop, counting failures.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            // Bounded: at most 20,000 requests per client.
            for _ in 0..20_000 {
                if stop.load(Relaxed) {
                    break;
                }
                let r = get(&c, addr, "svc", "/", &[]).await;
                if r.status == 200 {
                    served.fetch_add(1, Relaxed);
                } else {
                    failures.fetch_add(1, Relaxed);
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.rewrite_config(&config("b", a, b));
    assert!(
        proxy
            .wait_log("config reloaded", Duration::from_secs(10))
            .is_some(),
        "no reload"
    );
    let c = client();
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));

    // A bad config (a regex that does not compile) is rejected; b keeps serving.
    proxy.rewrite_config(&config("b", a, b).replace(
        "routes: [{route:",
        "routes: [{matches: [{uri: {regex: \"(\"}}], route:",
    ));
    assert!(
        proxy
            .wait_log("config rejected", Duration::from_secs(10))
            .is_some(),
        "bad config not rejected"
    );
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));

    stop.store(true, Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(
        served.load(Relaxed) > 50,
        "load ran: {}",
        served.load(Relaxed)
    );
    assert_eq!(failures.load(Relaxed), 0, "requests failed during reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let a = backend("a").await;
    let mut proxy = Proxy::start(&config("a", a, a));
    let addr = proxy.addr("http");
    let slow = tokio::spawn(async move { get(&client(), addr, "svc", "/slow?ms=1000", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = proxy.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request completed");
    assert!(r.body.starts_with("a /slow"));
    let status = tokio::task::spawn_blocking(move || {
        let s = proxy.child.wait();
        (s, proxy)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_forwards_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An echo server.
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
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: tcp, address: "127.0.0.1:0", tcp: {{cluster: echo}}}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo_addr}"}}]}}
"#
    ));
    let mut s = tokio::net::TcpStream::connect(proxy.addr("tcp"))
        .await
        .unwrap();
    s.write_all(b"hello through weft").await.unwrap();
    let mut buf = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello through weft");
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let dir =
        support::TempDir(std::env::temp_dir().join(format!("weft-bad-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n- {name: http, address: \"127.0.0.1:0\", http: {routeConfig: missing}}\nclusters:\n- {name: c, endpoints: [{address: \"not-an-address\"}]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("endpoints[0].address"), "{err}");
    assert!(
        err.contains("route configuration \"missing\" is not defined"),
        "{err}"
    );
}
