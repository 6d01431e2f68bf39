//! Load balancing end to end: each `lbPolicy` and consistent hash key of a cluster, through the
//! real weft-proxy binary, over three distinct echo backends; and an HTTP/2 cluster behind an
//! HTTP/1.1 client.
//!
//! Random outcomes are checked against bounds at least 6 standard deviations from the mean
//! (a flake less than once in 10^8 runs); deterministic ones (round robin, hash stickiness)
//! exactly.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::{Client, Got, Proxy, backend, client, get};

const NAMES: [&str; 3] = ["e0", "e1", "e2"];

/// Three echo backends `e0`, `e1`, `e2`.
async fn backends() -> [SocketAddr; 3] {
    [
        backend(NAMES[0]).await,
        backend(NAMES[1]).await,
        backend(NAMES[2]).await,
    ]
}

/// A proxy sending everything to cluster `svc`: `policy` (YAML fields of the cluster, e.g.
/// `lbPolicy: RANDOM`) over `endpoints` with their weights.
fn proxy(policy: &str, endpoints: &[(SocketAddr, u32)]) -> (Proxy, SocketAddr) {
    let endpoints: String = endpoints
        .iter()
        .map(|(addr, weight)| format!("  - {{address: \"{addr}\", weight: {weight}}}\n"))
        .collect();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: svc}}]}}}}]}}
clusters:
- name: svc
  {policy}
  endpoints:
{endpoints}"#
    ));
    let addr = proxy.addr("http");
    (proxy, addr)
}

fn equal(addrs: &[SocketAddr; 3]) -> Vec<(SocketAddr, u32)> {
    addrs.iter().map(|&a| (a, 1)).collect()
}

/// Which endpoint answered (0, 1 or 2); panics on anything but a 200 from one of them.
fn endpoint(got: &Got) -> usize {
    assert_eq!(got.status, 200, "{}", got.body);
    let name = got.body.split(' ').next().unwrap_or_default();
    NAMES
        .iter()
        .position(|&n| n == name)
        .unwrap_or_else(|| panic!("answer from an unknown endpoint: {}", got.body))
}

/// Answers per endpoint for `n` sequential requests for `path`.
async fn tally(c: &Client, addr: SocketAddr, n: usize, path: &str) -> [usize; 3] {
    let mut counts = [0; 3];
    for _ in 0..n {
        counts[endpoint(&get(c, addr, "svc", path, &[]).await)] += 1;
    }
    counts
}

/// `[lo, hi]`: `mean ± 6 sd` of a binomial count over `n` draws with probability `p`.
fn six_sigma(n: usize, p: f64) -> (usize, usize) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let lo = (mean - 6.0 * sd).floor().max(0.0) as usize;
    let hi = (mean + 6.0 * sd).ceil() as usize;
    (lo, hi)
}

fn assert_shares(counts: [usize; 3], shares: [f64; 3], what: &str) {
    let n: usize = counts.iter().sum();
    for (i, (&count, &p)) in counts.iter().zip(&shares).enumerate() {
        let (lo, hi) = six_sigma(n, p);
        assert!(
            (lo..=hi).contains(&count),
            "{what}: e{i} got {count} of {n}, want {lo}..={hi}; all {counts:?}"
        );
    }
}

// ---- ROUND_ROBIN, LEAST_REQUEST, RANDOM -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_weights() {
    let addrs = backends().await;
    let c = client();
    let weighted = [(addrs[0], 1), (addrs[1], 2), (addrs[2], 3)];
    let (_proxy, addr) = proxy("lbPolicy: ROUND_ROBIN", &weighted);
    let counts = tally(&c, addr, 600, "/").await;
    // A schedule, not a draw: 100 cycles of 6 give each endpoint exactly its weight per cycle.
    assert_eq!(counts, [100, 200, 300]);

    // Equal weights (and the default policy): a strict rotation.
    let (_proxy, addr) = proxy("connectTimeout: 10s", &equal(&addrs));
    let order: Vec<usize> = {
        let mut order = Vec::new();
        for _ in 0..30 {
            order.push(endpoint(&get(&c, addr, "svc", "/", &[]).await));
        }
        order
    };
    for (i, w) in order.windows(3).enumerate() {
        let mut seen = w.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2], "requests {i}..{}: {order:?}", i + 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let (busy, gate) = support::gated_backend(NAMES[0]).await;
    let (e1, e2) = (backend(NAMES[1]).await, backend(NAMES[2]).await);
    let (_proxy, addr) = proxy("lbPolicy: LEAST_REQUEST", &[(busy, 1), (e1, 1), (e2, 1)]);
    let c = client();

    // Idle: every endpoint has nothing in flight, so two choices is a uniform draw.
    let counts = tally(&c, addr, 600, "/").await;
    assert_shares(counts, [1.0 / 3.0; 3], "idle");

    // Keep one request in flight on e0: send `/hold` until one lands there (the others are
    // answered at once by e1 and e2).
    let mut held = None;
    for _ in 0..200 {
        let before = gate.held();
        let c = c.clone();
        let mut request = tokio::spawn(async move { get(&c, addr, "svc", "/hold", &[]).await });
        tokio::select! {
            () = gate.held_more_than(before) => {
                held = Some(request);
                break;
            }
            done = &mut request => {
                let got = done.expect("request task");
                assert_ne!(endpoint(&got), 0, "e0 answered /hold before the gate opened");
            }
        }
    }
    let held = held.expect("no /hold request reached e0 in 200 tries");

    // Two distinct endpoints are drawn and the less loaded wins: e0, with one request in
    // flight, always loses to the idle endpoint it is drawn with.
    let counts = tally(&c, addr, 300, "/").await;
    assert_eq!(counts[0], 0, "the busy endpoint was chosen: {counts:?}");
    let (lo, hi) = six_sigma(300, 0.5);
    assert!(
        (lo..=hi).contains(&counts[1]),
        "e1 got {}, want {lo}..={hi}: {counts:?}",
        counts[1]
    );

    gate.open();
    let got = held.await.expect("held request task");
    assert_eq!((got.status, got.body.as_str()), (200, "e0 /hold"));
    // Idle again: e0 is back in the draw.
    let counts = tally(&c, addr, 600, "/").await;
    assert_shares(counts, [1.0 / 3.0; 3], "idle after release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_by_weight() {
    let addrs = backends().await;
    let c = client();
    let (_proxy, addr) = proxy("lbPolicy: RANDOM", &equal(&addrs));
    let counts = tally(&c, addr, 600, "/").await;
    assert_shares(counts, [1.0 / 3.0; 3], "equal weights");

    // weft's RANDOM honours endpoint weights (Envoy's ignores them; see cluster/lb/random.rs).
    let weighted = [(addrs[0], 1), (addrs[1], 2), (addrs[2], 3)];
    let (_proxy, addr) = proxy("lbPolicy: RANDOM", &weighted);
    let counts = tally(&c, addr, 600, "/").await;
    assert_shares(counts, [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0], "weights 1:2:3");
}

// ---- RING_HASH and MAGLEV ---------------------------------------------------------------------

const HASHING: [&str; 2] = ["RING_HASH", "MAGLEV"];

/// Checks that the keys' endpoints are spread over all three endpoints. Maglev's table gives
/// each endpoint an equal share of slots, so keys follow a 1/3 binomial. A ring of 1026 points
/// does not split exactly: an endpoint's 342 points own a Beta(342, 684) share of it (mean
/// 1/3, sd 0.015), so for rings the bound demands a tenth of the keys each, which is more than
/// 6 sd below the mean even for a share 6 sd low (0.245 of 600 keys: mean 147, sd 10.5).
fn assert_spread(policy: &str, counts: [usize; 3], what: &str) {
    let n: usize = counts.iter().sum();
    if policy == "MAGLEV" {
        assert_shares(counts, [1.0 / 3.0; 3], &format!("{policy} {what}"));
    } else {
        for (i, &count) in counts.iter().enumerate() {
            assert!(
                count >= n / 10,
                "{policy} {what}: e{i} got {count} of {n}: {counts:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_by_header_sticks_per_key_and_spreads_keys() {
    let addrs = backends().await;
    let c = client();
    for policy in HASHING {
        let (_proxy, addr) = proxy(
            &format!("lbPolicy: {policy}\n  consistentHash: {{header: x-user}}"),
            &equal(&addrs),
        );
        // Many keys: spread over every endpoint.
        let mut home = HashMap::new();
        let mut counts = [0; 3];
        for k in 0..600 {
            let user = format!("user-{k}");
            let e = endpoint(&get(&c, addr, "svc", "/", &[("x-user", &user)]).await);
            counts[e] += 1;
            home.insert(user, e);
        }
        assert_spread(policy, counts, "600 keys");
        // The same key: the same endpoint, every time, whatever else differs.
        for round in 0..5 {
            for k in 0..30 {
                let user = format!("user-{k}");
                let path = format!("/round/{round}?k={k}");
                let got = get(&c, addr, "svc", &path, &[("x-user", &user)]).await;
                assert_eq!(endpoint(&got), home[&user], "{policy}: {user} moved");
            }
        }
        // No key: a random point on the ring or table, so every endpoint is reached.
        let counts = tally(&c, addr, 600, "/").await;
        assert_spread(policy, counts, "requests without the header");
    }
}

/// The `Set-Cookie` of a response: `(value, attributes)` of cookie `name`.
fn issued_cookie(got: &Got, name: &str) -> Option<(String, String)> {
    let cookies: Vec<&str> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(cookies.len() <= 1, "several Set-Cookie: {cookies:?}");
    let (pair, attributes) = cookies.first()?.split_once(';').unwrap_or((cookies[0], ""));
    let value = pair.strip_prefix(&format!("{name}="))?;
    Some((value.to_owned(), attributes.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_by_cookie_issues_one_then_sticks() {
    let addrs = backends().await;
    let c = client();
    for policy in HASHING {
        let (_proxy, addr) = proxy(
            &format!(
                "lbPolicy: {policy}\n  consistentHash: {{cookie: {{name: sticky, ttl: 3600s}}}}"
            ),
            &equal(&addrs),
        );
        let mut counts = [0; 3];
        for client_no in 0..300 {
            // A new client: no cookie, so the proxy issues one and hashes its value.
            let first = get(&c, addr, "svc", "/", &[]).await;
            let e = endpoint(&first);
            counts[e] += 1;
            let (value, attributes) = issued_cookie(&first, "sticky")
                .unwrap_or_else(|| panic!("{policy}: no Set-Cookie: {:?}", first.headers));
            assert_eq!(attributes, "Path=/; Max-Age=3600; HttpOnly", "{policy}");
            assert!(
                value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
                "{policy}: cookie value {value:?}"
            );
            if client_no >= 20 {
                continue;
            }
            // The client sends it back (among others): the same endpoint, and no new cookie.
            for cookie in [
                format!("sticky={value}"),
                format!("a=1; sticky={value}; b=2"),
                format!("sticky=\"{value}\""),
            ] {
                let again = get(&c, addr, "svc", "/next", &[("cookie", &cookie)]).await;
                assert_eq!(endpoint(&again), e, "{policy}: {cookie} moved");
                assert_eq!(issued_cookie(&again, "sticky"), None, "{policy}: {cookie}");
            }
        }
        assert_spread(policy, counts, "300 issued cookies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_path_and_ttl_shape_the_issued_cookie() {
    let addrs = backends().await;
    let c = client();
    for (cookie, want) in [
        (
            "{name: s, path: /app, ttl: 90s}",
            Some("Path=/app; Max-Age=90; HttpOnly"),
        ),
        // A zero ttl issues a session cookie (no Max-Age), as Envoy.
        ("{name: s, ttl: 0s}", Some("Path=/; HttpOnly")),
        // Without a ttl nothing is issued.
        ("{name: s}", None),
    ] {
        let (_proxy, addr) = proxy(
            &format!("lbPolicy: RING_HASH\n  consistentHash: {{cookie: {cookie}}}"),
            &equal(&addrs),
        );
        let got = get(&c, addr, "svc", "/app/x", &[]).await;
        endpoint(&got);
        let issued = issued_cookie(&got, "s");
        assert_eq!(
            issued.as_ref().map(|(_, attributes)| attributes.as_str()),
            want,
            "{cookie}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_by_source_ip_sticks_across_connections() {
    // Every test client is 127.0.0.1, so this checks stickiness only: one address, one
    // endpoint, whatever the connection and its source port. Spreading over addresses would
    // need other loopback addresses, which these tests do not use.
    let addrs = backends().await;
    for policy in HASHING {
        let (_proxy, addr) = proxy(
            &format!("lbPolicy: {policy}\n  consistentHash: {{sourceIp: true}}"),
            &equal(&addrs),
        );
        let mut seen = [0; 3];
        for i in 0..60 {
            // A new client each time: a new connection from a new source port.
            let got = get(&client(), addr, "svc", &format!("/{i}"), &[]).await;
            seen[endpoint(&got)] += 1;
        }
        assert!(
            seen.contains(&60),
            "{policy}: one source address went to several endpoints: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_by_query_parameter_sticks_per_value_and_spreads_values() {
    let addrs = backends().await;
    let c = client();
    for policy in HASHING {
        let (_proxy, addr) = proxy(
            &format!("lbPolicy: {policy}\n  consistentHash: {{queryParameter: user}}"),
            &equal(&addrs),
        );
        let mut home = HashMap::new();
        let mut counts = [0; 3];
        for k in 0..600 {
            let e = endpoint(&get(&c, addr, "svc", &format!("/?user=u{k}"), &[]).await);
            counts[e] += 1;
            home.insert(k, e);
        }
        assert_spread(policy, counts, "600 values");
        for k in 0..30 {
            // Path, position among other parameters and later repeats do not matter.
            for path in [
                format!("/other/path?user=u{k}"),
                format!("/?a=1&user=u{k}&b=2"),
                format!("/?user=u{k}&user=zzz"),
            ] {
                let got = get(&c, addr, "svc", &path, &[]).await;
                assert_eq!(endpoint(&got), home[&k], "{policy}: {path} moved");
            }
        }
        // Other parameter names (case included) are not the key: random, so spread.
        let counts = tally(&c, addr, 600, "/?User=u1&users=u1").await;
        assert_spread(policy, counts, "requests without the parameter");
    }
}

// ---- protocols ---------------------------------------------------------------------------------

fn http2_cluster_proxy(h2: SocketAddr) -> (Proxy, SocketAddr) {
    proxy("protocol: HTTP2", &[(h2, 1)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_reaches_an_http2_only_backend() {
    let h2 = support::h2_backend("h2").await;
    let (_proxy, addr) = http2_cluster_proxy(h2);
    let c = client();
    for path in ["/first", "/second?x=1", "/third"] {
        let req = http::Request::builder()
            .uri(format!("http://{addr}{path}"))
            .header("host", "svc.example.com")
            .header("x-custom", "kept")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let resp = c.request(req).await.expect("request through the proxy");
        // The client spoke HTTP/1.1 and is answered in HTTP/1.1 ...
        assert_eq!(resp.version(), http::Version::HTTP_11);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-echo-x-custom"], "kept");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        // ... while the backend, which speaks nothing else, saw HTTP/2.
        assert!(
            body.starts_with(&format!("h2 {path} HTTP/2.0 ")),
            "backend saw {body:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_backend_sees_the_request_authority() {
    let h2 = support::h2_backend("h2").await;
    let (_proxy, addr) = http2_cluster_proxy(h2);
    // HTTP/2 has no Host: the client's Host must arrive as :authority, not the endpoint's
    // address.
    let got = get(&client(), addr, "svc.example.com:8080", "/", &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "h2 / HTTP/2.0 svc.example.com:8080");
}
