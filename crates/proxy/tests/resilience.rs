//! Timeouts, retries and fault injection through the real proxy, with Envoy's semantics.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Proxy, backend, client, get, send};

/// A backend whose first `fail` requests get a 503 (after reading the body); later ones get
/// 200 with `name body-as-received`. Returns its address and the count of requests seen.
async fn flaky(name: &'static str, fail: u32) -> (SocketAddr, Arc<AtomicU32>) {
    let seen = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let n = counter.fetch_add(1, Relaxed);
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        let (status, text) = if n < fail {
                            (503, format!("{name} failing ({n})"))
                        } else {
                            (200, format!("{name} {body}"))
                        };
                        let resp = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One listener, one virtual host; `routes` is the YAML list of routes, `clusters` of clusters.
fn config(routes: &str, clusters: &str) -> String {
    format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
{routes}
clusters:
{clusters}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_backend_that_fails_then_recovers() {
    let (hides, hides_seen) = flaky("hides", 2).await;
    let (shows, shows_seen) = flaky("shows", 3).await;
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /hides}}]
      route: {clusters: [{cluster: hides}], retryPolicy: {numRetries: 2, retryOn: "5xx"}}
    - matches: [{uri: {prefix: /shows}}]
      route: {clusters: [{cluster: shows}], retryPolicy: {numRetries: 2, retryOn: "gateway-error"}}"#,
        &format!(
            "- {{name: hides, endpoints: [{{address: \"{hides}\"}}]}}\n- {{name: shows, endpoints: [{{address: \"{shows}\"}}]}}"
        ),
    ));
    let addr = proxy.addr("http");
    let c = client();

    // Two failures, two retries: the client sees the third attempt, and the body went each time.
    let req = http::Request::post(format!("http://{addr}/hides"))
        .header("host", "svc")
        .body(Full::new(Bytes::from("order #7")))
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hides order #7"));
    assert_eq!(hides_seen.load(Relaxed), 3);

    // Three failures, two retries: the last upstream answer (503) is what the client gets.
    let r = get(&c, addr, "svc", "/shows", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body, "shows failing (2)");
    assert_eq!(shows_seen.load(Relaxed), 3);

    let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
    assert!(
        stats.contains("cluster.hides.upstream_rq_retry: 2"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.shows.upstream_rq_retry: 2"),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_on_another_endpoint() {
    let live = backend("live").await;
    let dead = closed_port();
    let endpoints = format!("[{{address: \"{dead}\"}}, {{address: \"{live}\"}}]");
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /retry}}]
      route: {clusters: [{cluster: pair}], retryPolicy: {numRetries: 2, retryOn: "connect-failure"}}
    - route: {clusters: [{cluster: pair}]}"#,
        &format!(
            "- {{name: pair, endpoints: {endpoints}}}\n- {{name: nothing, endpoints: [{{address: \"{dead}\"}}]}}"
        ),
    ));
    let addr = proxy.addr("http");
    let c = client();
    // Round robin over a dead and a live endpoint: without retries half fail, with none do.
    let mut failed_plain = 0;
    for _ in 0..20 {
        let r = get(&c, addr, "svc", "/plain", &[]).await;
        if r.status != 200 {
            assert_eq!(r.headers["x-weft-response-flags"], "UF");
            failed_plain += 1;
        }
    }
    assert_eq!(
        failed_plain, 10,
        "round robin sends every other request to the dead one"
    );
    for i in 0..20 {
        let r = get(&c, addr, "svc", "/retry", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(r.body.starts_with("live "), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_avoid_tried_endpoints_only_with_the_previous_hosts_predicate() {
    let live = backend("live").await;
    let dead = closed_port();
    let endpoints = format!("[{{address: \"{dead}\"}}, {{address: \"{live}\"}}]");
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /avoid}}]
      route: {clusters: [{cluster: pair}], retryPolicy: {numRetries: 1, retryOn: "connect-failure", previousHosts: true, hostSelectionRetryMaxAttempts: 20}}
    - route: {clusters: [{cluster: pair}], retryPolicy: {numRetries: 1, retryOn: "connect-failure"}}"#,
        &format!("- {{name: pair, lbPolicy: RANDOM, endpoints: {endpoints}}}"),
    ));
    let addr = proxy.addr("http");
    let c = client();
    // Random picks: the retry of a request that met the dead endpoint is drawn again while it
    // lands there (20 times: failing would take 21 dead draws in a row)...
    for i in 0..40 {
        let r = get(&c, addr, "svc", "/avoid", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    // ...and without the predicate a quarter of requests meet it twice (0.75^40: all pass).
    let mut failed = 0;
    for _ in 0..40 {
        let r = get(&c, addr, "svc", "/any", &[]).await;
        if r.status != 200 {
            assert_eq!(r.headers["x-weft-response-flags"], "URX,UF");
            failed += 1;
        }
    }
    assert!(failed > 0, "some retries went back to the dead endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_answer_urx() {
    let dead = closed_port();
    let proxy = Proxy::start(&config(
        r#"    - route: {clusters: [{cluster: dead}], retryPolicy: {numRetries: 2, retryOn: "connect-failure,5xx"}}"#,
        &format!("- {{name: dead, endpoints: [{{address: \"{dead}\"}}]}}"),
    ));
    let c = client();
    let r = get(&c, proxy.addr("http"), "svc", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-weft-response-flags"], "URX,UF");
    assert!(
        r.body.contains("3 attempts, the last: connecting to"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_ut() {
    let slow = backend("slow").await;
    let proxy = Proxy::start(&config(
        r#"    - matches: [{headers: {x-case: {exact: route}}}]
      route: {clusters: [{cluster: slow}], timeout: 0.2s}
    - matches: [{headers: {x-case: {exact: per-try}}}]
      route: {clusters: [{cluster: slow}], retryPolicy: {numRetries: 1, perTryTimeout: 0.1s, retryOn: "5xx"}}
    - route: {clusters: [{cluster: slow}], timeout: 5s}"#,
        &format!("- {{name: slow, endpoints: [{{address: \"{slow}\"}}]}}"),
    ));
    let addr = proxy.addr("http");
    let c = client();

    let r = get(&c, addr, "svc", "/slow?ms=3000", &[("x-case", "route")]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.headers["x-weft-response-flags"], "UT");
    assert!(r.body.contains("route timeout of 200ms"), "{}", r.body);

    // Every attempt times out: the last per-try timeout is a timeout too.
    let r = get(&c, addr, "svc", "/slow?ms=3000", &[("x-case", "per-try")]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.headers["x-weft-response-flags"], "URX,UT");
    assert!(r.body.contains("2 attempts"), "{}", r.body);

    // A gRPC caller gets UNAVAILABLE, as from Envoy (its HTTP-to-gRPC mapping of 504).
    let r = get(
        &c,
        addr,
        "svc",
        "/slow?ms=3000",
        &[("content-type", "application/grpc"), ("x-case", "route")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "14");

    // Fast enough: the upstream's answer.
    let r = get(&c, addr, "svc", "/slow?ms=10", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_abort_and_delay() {
    let app = backend("app").await;
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /abort}}]
      route: {clusters: [{cluster: app}], fault: {abort: {httpStatus: 500, percentage: 100}}}
    - matches: [{uri: {prefix: /half}}]
      route: {clusters: [{cluster: app}], fault: {abort: {httpStatus: 503, percentage: 50}}}
    - matches: [{uri: {prefix: /grpc-abort}}]
      route: {clusters: [{cluster: app}], fault: {abort: {grpcStatus: 14, percentage: 100}}}
    - matches: [{uri: {prefix: /delay}}]
      route: {clusters: [{cluster: app}], fault: {delay: {fixedDelay: 0.3s, percentage: 100}}}
    - matches: [{uri: {prefix: /delay-timeout}}]
      route: {clusters: [{cluster: app}], timeout: 0.1s, fault: {delay: {fixedDelay: 0.3s, percentage: 100}}}"#,
        &format!("- {{name: app, endpoints: [{{address: \"{app}\"}}]}}"),
    ));
    let addr = proxy.addr("http");
    let c = client();

    let r = get(&c, addr, "svc", "/abort", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (500, "fault filter abort"));
    assert_eq!(r.headers["x-weft-response-flags"], "FI");

    let r = get(
        &c,
        addr,
        "svc",
        "/grpc-abort",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "14");

    // 50% over 400 requests: mean 200, sd 10; 6 sd either side.
    let mut aborted = 0;
    for _ in 0..400 {
        let r = get(&c, addr, "svc", "/half", &[]).await;
        match r.status {
            503 => aborted += 1,
            200 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert!((140..=260).contains(&aborted), "aborted {aborted} of 400");

    // The delay holds the request, then it goes upstream.
    let started = Instant::now();
    let r = get(&c, addr, "svc", "/delay", &[]).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Istio: the fault delay is not counted in the route timeout (it runs before the router).
    let r = get(&c, addr, "svc", "/delay-timeout", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn bad_policies_are_refused_with_the_field() {
    let dir = support::TempDir(std::env::temp_dir().join(format!(
        "weft-policy-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        config(
            r#"    - route: {clusters: [{cluster: c}], retryPolicy: {numRetries: 2, retryOn: "5xx,gateway-eror"}}"#,
            "- {name: c, endpoints: [{address: \"127.0.0.1:1\"}]}",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("virtualHosts[0].routes[0].route.retryPolicy.retryOn: \"gateway-eror\" is not a retry condition"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflows_with_503_uo() {
    let app = backend("app").await;
    let proxy = Proxy::start(&config(
        "    - route: {clusters: [{cluster: app}]}",
        &format!(
            "- name: app\n  circuitBreakers: {{maxConnections: 1, maxPendingRequests: 1}}\n  endpoints: [{{address: \"{app}\"}}]"
        ),
    ));
    let addr = proxy.addr("http");

    // Three at once, each on its own connection: one is served, one waits, one overflows.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let c = client();
                get(&c, addr, "svc", "/slow?ms=500", &[]).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let r = call.await.unwrap();
        if r.status == 503 {
            assert_eq!(r.headers["x-weft-response-flags"], "UO");
            assert_eq!(r.headers["x-envoy-overloaded"], "true");
            assert!(r.body.contains("maxConnections 1"), "{}", r.body);
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503]);

    // Istio's circuit-breaking task: one client never trips it, three concurrent ones do.
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, addr, "svc", "/slow?ms=5", &[]).await.status, 200);
    }
    let workers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let c = client();
                let mut overflowed = 0;
                for _ in 0..10 {
                    if get(&c, addr, "svc", "/slow?ms=20", &[]).await.status == 503 {
                        overflowed += 1;
                    }
                }
                overflowed
            })
        })
        .collect();
    let mut overflowed = 0;
    for w in workers {
        overflowed += w.await.unwrap();
    }
    eprintln!("circuit breaker: 3 connections x 10 requests: {overflowed} of 30 got 503 UO");
    assert!(overflowed > 0, "three concurrent clients never overflowed");
    let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
    assert!(
        stats.contains(&format!(
            "cluster.app.upstream_rq_pending_overflow: {}",
            overflowed + 1
        )),
        "{stats}"
    );
}

/// A backend that records what it receives (host with the attempt count, and body, per
/// request) and answers 200.
async fn recorder() -> (SocketAddr, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("-")
                                .to_owned()
                        };
                        // The authority and the attempt count the copy carries.
                        let host =
                            format!("{} {}", header("host"), header("x-envoy-attempt-count"));
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        log.lock().unwrap().push((host, body));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("seen"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A backend that reads requests and never answers.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_copies_and_never_slow_the_original() {
    let (app, _) = flaky("app", 0).await;
    let (shadow, copies) = recorder().await;
    let hole = black_hole().await;
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /all}}]
      route: {clusters: [{cluster: app}], mirrors: [{cluster: shadow, percentage: 100}]}
    - matches: [{uri: {prefix: /quarter}}]
      route: {clusters: [{cluster: app}], mirrors: [{cluster: shadow, percentage: 25}]}
    - matches: [{uri: {prefix: /hole}}]
      route: {clusters: [{cluster: app}], mirrors: [{cluster: hole, percentage: 100}]}"#,
        &format!(
            "- {{name: app, endpoints: [{{address: \"{app}\"}}]}}\n- {{name: shadow, endpoints: [{{address: \"{shadow}\"}}]}}\n- {{name: hole, endpoints: [{{address: \"{hole}\"}}]}}"
        ),
    ));
    let addr = proxy.addr("http");
    let c = client();

    // Every request copied, body included, to the `-shadow` authority, as attempt 1 (Envoy
    // counts a shadow request's attempts like any other's).
    for i in 0..20 {
        let req = http::Request::post(format!("http://{addr}/all"))
            .header("host", "httpbin:8000")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .unwrap();
        let r = send(&c, req).await;
        assert_eq!((r.status, r.body.clone()), (200, format!("app body {i}")));
    }
    let mut waited = 0;
    while copies.lock().unwrap().len() < 20 && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    {
        let got = copies.lock().unwrap();
        assert_eq!(got.len(), 20, "copies arrived");
        assert!(
            got.iter().all(|(host, _)| host == "httpbin-shadow:8000 1"),
            "{got:?}"
        );
        let mut bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
        bodies.sort_unstable();
        let mut want: Vec<String> = (0..20).map(|i| format!("body {i}")).collect();
        want.sort_unstable();
        assert_eq!(bodies, want);
    }

    // A quarter of 400: mean 100, sd 8.7; 6 sd either side.
    copies.lock().unwrap().clear();
    for _ in 0..400 {
        assert_eq!(
            get(&c, addr, "httpbin:8000", "/quarter", &[]).await.status,
            200
        );
    }
    let mut previous = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = copies.lock().unwrap().len();
        if now == previous {
            break;
        }
        previous = now;
    }
    assert!((48..=152).contains(&previous), "mirrored {previous} of 400");

    // A mirror that never answers: the originals are answered all the same.
    for i in 0..20 {
        let req = http::Request::post(format!("http://{addr}/hole"))
            .header("host", "httpbin:8000")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .unwrap();
        assert_eq!(send(&c, req).await.status, 200);
    }
}

/// A backend that answers `name`, and can be killed: listener closed, connections dropped.
async fn killable(name: &'static str) -> (SocketAddr, tokio::task::AbortHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let svc = service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
        // Aborting this task drops the listener and the JoinSet, which aborts every connection.
    });
    (addr, task.abort_handle())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_and_retries_hide_it() {
    let (a, _) = killable("a").await;
    let (b, kill_b) = killable("b").await;
    let (c, _) = killable("c").await;
    let proxy = Proxy::start(&config(
        r#"    - route: {clusters: [{cluster: app}], retryPolicy: {numRetries: 2, retryOn: "connect-failure,reset,5xx"}}"#,
        &format!(
            r#"- name: app
  lbPolicy: ROUND_ROBIN
  outlierDetection: {{consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}}
  endpoints: [{{address: "{a}"}}, {{address: "{b}"}}, {{address: "{c}"}}]"#
        ),
    ));
    let addr = proxy.addr("http");
    let c_ = client();
    let mut seen_b = 0;
    for _ in 0..30 {
        let r = get(&c_, addr, "svc", "/", &[]).await;
        assert_eq!(r.status, 200);
        seen_b += usize::from(r.body == "b");
    }
    assert_eq!(seen_b, 10, "round robin over three");

    kill_b.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..100 {
        let r = get(&c_, addr, "svc", "/", &[]).await;
        assert_eq!(r.status, 200, "request {i} after the kill: {}", r.body);
        assert_ne!(r.body, "b");
    }
    let clusters = get(&c_, proxy.admin, "admin", "/clusters", &[]).await.body;
    assert!(
        clusters.contains(&format!("app::{b}::health_flags::/failed_outlier_check")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("app::{a}::health_flags::healthy")),
        "{clusters}"
    );
    // Ejected at its first failure: later requests never tried it.
    let stats = get(&c_, proxy.admin, "admin", "/stats", &[]).await.body;
    let retries: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cluster.app.upstream_rq_retry: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        retries <= 2,
        "retries after the ejection: {retries}\n{stats}"
    );
    // The per-host counters tell the same: b had its 10 answers and then a failure or two
    // before the ejection, nothing since; a and c took the rest.
    let counter = |host: SocketAddr, name: &str| -> u64 {
        clusters
            .lines()
            .find_map(|l| l.strip_prefix(&format!("app::{host}::{name}::")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {host}:\n{clusters}"))
    };
    assert_eq!(counter(b, "rq_success"), 10, "{clusters}");
    assert!((1..=2).contains(&counter(b, "rq_error")), "{clusters}");
    assert_eq!(counter(b, "rq_total"), 10 + counter(b, "rq_error"));
    assert_eq!(counter(a, "rq_success") + counter(c, "rq_success"), 120);
    assert_eq!(counter(a, "rq_error"), 0, "{clusters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_responses() {
    let app = backend("app").await;
    let proxy = Proxy::start(&config(
        r#"    - route: {clusters: [{cluster: app}]}
      cors:
        allowOrigins: [{exact: "https://app.example.com"}, {prefix: "https://dev."}]
        allowMethods: [GET, POST]
        allowHeaders: [x-custom]
        exposeHeaders: [x-served-by]
        maxAge: 86400s
        allowCredentials: true"#,
        &format!("- {{name: app, endpoints: [{{address: \"{app}\"}}]}}"),
    ));
    let addr = proxy.addr("http");
    let c = client();
    let preflight = |origin: &'static str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{addr}/api"))
            .header("host", "svc")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // An allowed origin's preflight is answered by the proxy.
    let r = send(&c, preflight("https://dev.example.com")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "", "not forwarded");
    let h = &r.headers;
    assert_eq!(h["access-control-allow-origin"], "https://dev.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "x-custom");
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["access-control-allow-credentials"], "true");

    // Another origin's preflight goes upstream (Istio's default, FORWARD), without CORS headers.
    let r = send(&c, preflight("https://evil.example.com")).await;
    assert!(r.body.starts_with("app /api"), "{}", r.body);
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    // Actual requests: the allowed origin gets the headers on the upstream's response.
    let r = get(
        &c,
        addr,
        "svc",
        "/api",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert!(r.body.starts_with("app /api"), "{}", r.body);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "x-served-by");
    let r = get(
        &c,
        addr,
        "svc",
        "/api",
        &[("origin", "https://app.example.org")],
    )
    .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limits_answer_429_rl() {
    let app = backend("app").await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
- {{name: limited, address: 127.0.0.1:0, http: {{routeConfig: main, rateLimit: {{local: {{maxTokens: 2, fillInterval: 60s}}}}}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
    - matches: [{{uri: {{prefix: /limited}}}}]
      route: {{clusters: [{{cluster: app}}]}}
      rateLimit: {{local: {{maxTokens: 3, tokensPerFill: 1, fillInterval: 60s}}}}
    - route: {{clusters: [{{cluster: app}}]}}
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    ));
    let c = client();
    let statuses = |listener: &'static str, path: &'static str, n: usize| {
        let addr = proxy.addr(listener);
        let c = c.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = get(&c, addr, "svc", path, &[]).await;
                if r.status == 429 {
                    assert_eq!(r.headers["x-weft-response-flags"], "RL");
                }
                out.push(r.status);
            }
            out
        }
    };
    // The route's bucket: 3 tokens, then 429 (the refill is a minute away).
    assert_eq!(
        statuses("http", "/limited", 5).await,
        [200, 200, 200, 429, 429]
    );
    // Other routes are not limited.
    assert_eq!(statuses("http", "/other", 5).await, [200; 5]);
    // The listener's bucket comes before routing: 2 tokens for every route.
    assert_eq!(statuses("limited", "/other", 3).await, [200, 200, 429]);
    let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
    assert!(stats.contains("http.local_reply.RL: 3"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_waiting_for_its_breaker_gives_up_at_the_route_timeout() {
    let (app, _) = flaky("app", 0).await;
    let (shadow, gate) = support::gated_backend("shadow").await;
    let proxy = Proxy::start(&config(
        r#"    - matches: [{uri: {prefix: /hold}}]
      route: {clusters: [{cluster: shadow}]}
    - matches: [{uri: {prefix: /mirrored}}]
      route: {clusters: [{cluster: app}], timeout: 0.3s, mirrors: [{cluster: shadow, percentage: 100}]}"#,
        &format!(
            "- {{name: app, endpoints: [{{address: \"{app}\"}}]}}\n- {{name: shadow, endpoints: [{{address: \"{shadow}\"}}], \
             circuitBreakers: {{maxConnections: 1, maxPendingRequests: 10}}}}"
        ),
    ));
    let addr = proxy.addr("http");
    let c = client();

    // The mirror cluster's one connection is busy with a request the backend holds.
    let held = tokio::spawn({
        let c = c.clone();
        async move { get(&c, addr, "svc", "/hold", &[]).await.status }
    });
    gate.held_more_than(0).await;

    // The copy waits for that connection, and gives up when the route timeout passes.
    assert_eq!(get(&c, addr, "svc", "/mirrored", &[]).await.status, 200);
    let mut stats = String::new();
    for _ in 0..100 {
        stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
        if stats.contains("cluster.shadow.upstream_rq_timeout: 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stats.contains("cluster.shadow.upstream_rq_timeout: 1"),
        "the mirror is still waiting: {stats}"
    );
    gate.open();
    assert_eq!(held.await.unwrap(), 200);
}
