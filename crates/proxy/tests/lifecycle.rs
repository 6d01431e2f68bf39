//! weft-proxy's life: config reload under load, rejected config, SIGTERM drain, TCP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use support::{Proxy, backend, client, free_port, get};

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
async fn reload_adds_updates_and_removes_listeners() {
    let a = backend("a").await;
    let b = backend("b").await;
    let proxy = Proxy::start(&config("a", a, b));
    let addr = proxy.addr("http");
    let c = client();

    // Add a listener on a new port; the existing one keeps its socket and takes new routes.
    let port = free_port();
    let extra = format!(
        "- {{name: extra, address: \"127.0.0.1:{port}\", http: {{routeConfig: teapot}}}}\n"
    );
    let teapot = "- {name: teapot, virtualHosts: [{name: t, domains: [\"*\"], routes: [{directResponse: {status: 418, body: tea}}]}]}\n";
    let with_extra = config("b", a, b).replace(
        "routeConfigs:\n",
        &format!("{extra}routeConfigs:\n{teapot}"),
    );
    proxy.rewrite_config(&with_extra);
    let line = proxy
        .wait_log("weft-proxy: listener extra on", Duration::from_secs(10))
        .expect("new listener bound");
    assert!(line.ends_with(&format!("127.0.0.1:{port}")), "{line}");
    let extra_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = get(&c, extra_addr, "any", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, "tea"));
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));

    // A listener that cannot bind (the port is taken) refuses the whole config.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let clash = with_extra.replace(
        "routeConfigs:\n",
        &format!(
            "- {{name: clash, address: \"127.0.0.1:{taken_port}\", http: {{routeConfig: teapot}}}}\nrouteConfigs:\n"
        ),
    );
    proxy.rewrite_config(&clash.replace("cluster: b}", "cluster: a}"));
    let rejected = proxy
        .wait_log("config rejected", Duration::from_secs(10))
        .expect("clash rejected");
    assert!(
        rejected.contains("listener \"clash\": address: cannot bind"),
        "{rejected}"
    );
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));
    drop(taken);

    // Removing the listener closes its port.
    proxy.rewrite_config(&config("b", a, b));
    assert!(
        proxy
            .wait_log("config reloaded", Duration::from_secs(10))
            .is_some()
    );
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(extra_addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "removed listener still accepts");
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));
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

/// A TCP server that echoes each connection's bytes and never closes first.
async fn tcp_echo() -> std::net::SocketAddr {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_forwards_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo_addr = tcp_echo().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listeners_tunnels_last_until_the_drain_timeout_then_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo_addr = tcp_echo().await;
    let cluster =
        format!("clusters:\n- {{name: echo, endpoints: [{{address: \"{echo_addr}\"}}]}}\n");
    let proxy = Proxy::start(&format!(
        "listeners:\n- {{name: tcp, address: \"127.0.0.1:0\", tcp: {{cluster: echo}}}}\n{cluster}"
    ));
    let mut s = tokio::net::TcpStream::connect(proxy.addr("tcp"))
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"hello").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();

    // The listener goes; its tunnel drains (drainTimeout 5s): still open at first...
    proxy.rewrite_config(&cluster);
    proxy
        .wait_log("config reloaded", Duration::from_secs(10))
        .expect("reloaded");
    let removed = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"again").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"again");
    // ...then closed when the drain times out.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel outlived its listener's drain");
    let after = removed.elapsed();
    assert!(
        after >= Duration::from_secs(4),
        "closed after {after:?}, before the drain timeout"
    );
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
