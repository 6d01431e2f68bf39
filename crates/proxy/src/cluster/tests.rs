//! Cluster building and picking, through the public API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use weft_xds::proto;

use super::*;

fn config(yaml: &str) -> proto::Cluster {
    yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("test yaml: {e}\n{yaml}"))
}

fn cluster(yaml: &str) -> Cluster {
    Cluster::build(&config(yaml)).unwrap_or_else(|e| panic!("{e}"))
}

/// A cluster of `weights.len()` endpoints 10.0.0.1:8080, 10.0.0.2:8080, ... with `extra` config.
fn weighted(policy: &str, weights: &[u32], extra: &str) -> Cluster {
    let endpoints: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{address: \"10.0.0.{}:8080\", weight: {w}}}", i + 1))
        .collect();
    cluster(&format!(
        "name: c\nlbPolicy: {policy}\nendpoints: [{}]\n{extra}",
        endpoints.join(", ")
    ))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn input<'a>(headers: &'a HeaderMap) -> HashInput<'a> {
    HashInput {
        headers,
        source_ip: ip("192.0.2.1"),
        query: None,
    }
}

fn pick_index(c: &Cluster, input: &HashInput<'_>) -> usize {
    let Some(pick) = c.pick(input) else {
        panic!("no endpoint picked")
    };
    let index = c
        .endpoints()
        .iter()
        .position(|e| Arc::ptr_eq(e, &pick.endpoint));
    index.unwrap_or_else(|| panic!("picked endpoint not in cluster"))
}

/// Share of `picks` picks going to each endpoint.
fn shares(c: &Cluster, picks: usize, input: &HashInput<'_>) -> Vec<f64> {
    let mut counts = vec![0usize; c.endpoints().len()];
    for _ in 0..picks {
        counts[pick_index(c, input)] += 1;
    }
    counts.iter().map(|&n| n as f64 / picks as f64).collect()
}

fn assert_near(got: &[f64], want: &[f64], tolerance: f64) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tolerance,
            "got {got:?}, want {want:?} ± {tolerance}"
        );
    }
}

fn with_header(name: &'static str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

#[test]
fn defaults_and_conversion() {
    let c = cluster(
        r#"
name: "outbound|9080||reviews.default.svc.cluster.local"
endpoints:
- {address: "10.0.0.1:9080", labels: {version: v1}, locality: {region: us-east1, zone: us-east1-b}}
- {address: "[2001:db8::1]:9080", weight: 0}
- {address: "10.0.0.3:9080", weight: 5}
"#,
    );
    assert_eq!(
        &**c.name(),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(c.connect_timeout(), Duration::from_secs(10));
    assert_eq!(c.idle_timeout(), Duration::from_secs(3600));
    assert_eq!(c.protocol(), proto::UpstreamProtocol::Http1);
    assert_eq!(c.lb_policy(), proto::LbPolicy::RoundRobin);
    let eps = c.endpoints();
    assert_eq!(
        eps[0].address,
        "10.0.0.1:9080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(eps[0].labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(eps[0].locality.zone, "us-east1-b");
    assert_eq!(eps[1].address.ip(), ip("2001:db8::1"));
    assert_eq!(eps.iter().map(|e| e.weight).collect::<Vec<_>>(), [1, 1, 5]);
    assert_eq!(
        c.config().name,
        "outbound|9080||reviews.default.svc.cluster.local"
    );

    let c = cluster(
        "name: c\nconnectTimeout: 1.5s\nidleTimeout: 0s\nprotocol: HTTP2\n\
         tls: {caFile: /etc/ca.pem}\nendpoints: []",
    );
    assert_eq!(c.connect_timeout(), Duration::from_millis(1500));
    assert_eq!(c.idle_timeout(), Duration::ZERO);
    assert_eq!(c.protocol(), proto::UpstreamProtocol::Http2);
}

#[test]
fn build_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("name: ''", "name", "required"),
        (
            "{name: c, endpoints: [{address: '10.0.0.1:80'}, {address: '[::1]:80'}, {address: 'reviews:9080'}]}",
            "endpoints[2].address",
            "not an ip:port address",
        ),
        (
            "{name: c, endpoints: [{address: '::1:80'}]}",
            "endpoints[0].address",
            "not an ip:port",
        ),
        (
            "{name: c, endpoints: [{address: '10.0.0.1'}]}",
            "endpoints[0].address",
            "not an ip:port",
        ),
        (
            "{name: c, endpoints: [{address: '10.0.0.1:0'}]}",
            "endpoints[0].address",
            "port must not be 0",
        ),
        (
            "{name: c, endpoints: [{weight: 2}]}",
            "endpoints[0].address",
            "required",
        ),
        (
            "{name: c, connectTimeout: 0s}",
            "connectTimeout",
            "greater than 0",
        ),
        (
            "{name: c, connectTimeout: -1s}",
            "connectTimeout",
            "invalid duration",
        ),
        (
            "{name: c, idleTimeout: -2s}",
            "idleTimeout",
            "invalid duration",
        ),
        (
            "{name: c, lbPolicy: RING_HASH}",
            "consistentHash",
            "required with lbPolicy RING_HASH",
        ),
        (
            "{name: c, lbPolicy: MAGLEV}",
            "consistentHash",
            "required with lbPolicy MAGLEV",
        ),
        (
            "{name: c, lbPolicy: LEAST_REQUEST, consistentHash: {sourceIp: true}}",
            "consistentHash",
            "applies only to lbPolicy RING_HASH or MAGLEV, not LEAST_REQUEST",
        ),
        (
            "{name: c, consistentHash: {header: x}}",
            "consistentHash",
            "not ROUND_ROBIN",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {minimumRingSize: 10}}",
            "consistentHash",
            "one of header",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {header: ''}}",
            "consistentHash.header",
            "empty",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {header: 'x user'}}",
            "consistentHash.header",
            "not a valid header name",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {sourceIp: false}}",
            "consistentHash.sourceIp",
            "must be true",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {queryParameter: ''}}",
            "consistentHash.queryParameter",
            "empty",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {cookie: {ttl: 1s}}}",
            "consistentHash.cookie.name",
            "required",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {cookie: {name: 'a;b'}}}",
            "consistentHash.cookie.name",
            "RFC 6265",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {cookie: {name: a, path: '/x;y'}}}",
            "consistentHash.cookie.path",
            "without ';'",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {cookie: {name: a, ttl: -1s}}}",
            "consistentHash.cookie.ttl",
            "invalid duration",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {header: x, minimumRingSize: 8388609}}",
            "consistentHash.minimumRingSize",
            "more than the maximum 8388608",
        ),
        (
            "{name: c, lbPolicy: RING_HASH, consistentHash: {header: x, tableSize: 7}}",
            "consistentHash.tableSize",
            "only to lbPolicy MAGLEV",
        ),
        (
            "{name: c, lbPolicy: MAGLEV, consistentHash: {header: x, tableSize: 65536}}",
            "consistentHash.tableSize",
            "65536 is not prime",
        ),
        (
            "{name: c, lbPolicy: MAGLEV, consistentHash: {header: x, tableSize: 1}}",
            "consistentHash.tableSize",
            "not prime",
        ),
        (
            "{name: c, lbPolicy: MAGLEV, consistentHash: {header: x, tableSize: 5000101}}",
            "consistentHash.tableSize",
            "more than the maximum 5000011",
        ),
        (
            "{name: c, lbPolicy: MAGLEV, consistentHash: {header: x, minimumRingSize: 1024}}",
            "consistentHash.minimumRingSize",
            "only to lbPolicy RING_HASH",
        ),
        (
            "{name: c, tls: {insecureSkipVerify: true, certFile: c.pem}}",
            "tls.keyFile",
            "go together",
        ),
        (
            "{name: c, discovery: ORIGINAL_DST, endpoints: [{address: '10.0.0.1:80'}]}",
            "endpoints",
            "sends each request to the destination it asked for",
        ),
    ];
    for &(yaml, field, reason) in cases {
        let err = match Cluster::build(&config(yaml)) {
            Ok(_) => panic!("{yaml}: built, want an error at {field}"),
            Err(e) => e,
        };
        assert_eq!(err.field, field, "{yaml}: {err}");
        assert!(err.reason.contains(reason), "{yaml}: {err}");
    }

    let err = Cluster::build(&config("{name: c, endpoints: [{address: '10.0.0.1:0'}]}")).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("cluster \"c\": endpoints[0].address: port must not be 0")
    );

    // Enum values the JSON mapping cannot express, but the wire can.
    let mut cfg = config("name: c");
    cfg.lb_policy = 42;
    let err = Cluster::build(&cfg).err();
    assert_eq!(
        err.map(|e| (e.field, e.reason)),
        Some(("lbPolicy".into(), "unknown value 42".into()))
    );
    let mut cfg = config("name: c");
    cfg.discovery = 7;
    assert_eq!(
        Cluster::build(&cfg).err().map(|e| e.field),
        Some("discovery".into())
    );
    let mut cfg = config("name: c");
    cfg.protocol = 9;
    assert_eq!(
        Cluster::build(&cfg).err().map(|e| e.field),
        Some("protocol".into())
    );
}

#[test]
fn no_endpoints_no_pick() {
    let headers = no_headers();
    for policy in ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"] {
        assert!(weighted(policy, &[], "").pick(&input(&headers)).is_none());
    }
    let c = weighted(
        "RING_HASH",
        &[],
        "consistentHash: {cookie: {name: s, ttl: 60s}}",
    );
    assert!(c.pick(&input(&headers)).is_none());
    let c = weighted("MAGLEV", &[], "consistentHash: {sourceIp: true}");
    assert!(c.pick(&input(&headers)).is_none());
}

#[test]
fn round_robin_follows_the_weighted_cycle() {
    let headers = no_headers();
    let c = weighted("ROUND_ROBIN", &[1, 3], "");
    let cycle: Vec<usize> = (0..4).map(|_| pick_index(&c, &input(&headers))).collect();
    // The cycle is B A B B from a random starting step.
    let expected = [1, 0, 1, 1];
    assert!(
        (0..4).any(|r| (0..4).all(|i| cycle[i] == expected[(i + r) % 4])),
        "{cycle:?}"
    );
    let got = shares(&c, 4_000, &input(&headers));
    assert_eq!(got, [0.25, 0.75]);

    let c = weighted("ROUND_ROBIN", &[1, 1, 1], "");
    let first = pick_index(&c, &input(&headers));
    for i in 1..9 {
        assert_eq!(pick_index(&c, &input(&headers)), (first + i) % 3);
    }
}

#[test]
fn random_follows_weights() {
    fastrand::seed(21);
    let headers = no_headers();
    let c = weighted("RANDOM", &[1, 3], "");
    assert_near(&shares(&c, 10_000, &input(&headers)), &[0.25, 0.75], 0.02);
    let c = weighted("RANDOM", &[1, 1, 1, 1], "");
    assert_near(&shares(&c, 10_000, &input(&headers)), &[0.25; 4], 0.02);
}

#[test]
fn least_request_prefers_idle_endpoints() {
    fastrand::seed(22);
    let headers = no_headers();
    let c = weighted("LEAST_REQUEST", &[1, 1, 1], "");
    assert_near(&shares(&c, 9_000, &input(&headers)), &[1.0 / 3.0; 3], 0.02);

    // Hold 30 requests, which least request spreads evenly, then let those on endpoints 1 and 2
    // finish: endpoint 0 is left busy.
    let mut held: Vec<Pick> = (0..30).filter_map(|_| c.pick(&input(&headers))).collect();
    for e in c.endpoints() {
        assert!((7..=13).contains(&e.active_requests()), "{e:?}");
    }
    held.retain(|pick| Arc::ptr_eq(&pick.endpoint, &c.endpoints()[0]));
    assert!(c.endpoints()[0].active_requests() >= 7);
    assert_eq!(c.endpoints()[1].active_requests(), 0);
    let got = shares(&c, 3_000, &input(&headers));
    assert_eq!(got[0], 0.0, "{got:?}");
    assert_near(&got[1..], &[0.5, 0.5], 0.04);

    drop(held);
    assert_eq!(c.endpoints()[0].active_requests(), 0);
    let weighted_lr = weighted("LEAST_REQUEST", &[1, 3], "");
    assert_near(
        &shares(&weighted_lr, 10_000, &input(&headers)),
        &[0.25, 0.75],
        0.02,
    );
}

#[test]
fn picks_count_as_active_until_dropped() {
    let headers = no_headers();
    let c = weighted("ROUND_ROBIN", &[1], "");
    let a = c.pick(&input(&headers));
    let b = c.pick(&input(&headers));
    assert_eq!(c.endpoints()[0].active_requests(), 2);
    drop(a);
    assert_eq!(c.endpoints()[0].active_requests(), 1);
    drop(b);
    assert_eq!(c.endpoints()[0].active_requests(), 0);
}

const HASHING: [(&str, &str); 2] = [("RING_HASH", ""), ("MAGLEV", "")];

#[test]
fn same_key_same_endpoint_and_keys_spread() {
    for (policy, _) in HASHING {
        let c = weighted(policy, &[1, 1, 1, 1], "consistentHash: {header: x-user}");
        let mut counts = [0usize; 4];
        for user in 0..2_000 {
            let headers = with_header("x-user", &format!("user-{user}"));
            let first = pick_index(&c, &input(&headers));
            for _ in 0..3 {
                assert_eq!(
                    pick_index(&c, &input(&headers)),
                    first,
                    "{policy} user-{user}"
                );
            }
            counts[first] += 1;
        }
        for n in counts {
            assert!((300..=700).contains(&n), "{policy}: {counts:?}");
        }
    }
}

#[test]
fn removing_an_endpoint_moves_few_keys() {
    // The removed endpoint's keys must move; few others should. Maglev moves almost none. The
    // ring is sized as Envoy sizes it, for the minimum ring size: with 3 endpoints each owns 342
    // points instead of 256, and those extra points take some of the survivors' keys.
    let cases = [
        ("RING_HASH", "consistentHash: {header: x-user}", 0.20),
        ("MAGLEV", "consistentHash: {header: x-user}", 0.02),
    ];
    for (policy, extra, max_survivor_moves) in cases {
        let before = weighted(policy, &[1, 1, 1, 1], extra);
        let mut after_cfg = before.config().clone();
        let removed: SocketAddr = after_cfg.endpoints.remove(2).address.parse().unwrap();
        let after = Cluster::build(&after_cfg).unwrap_or_else(|e| panic!("{e}"));
        let (mut kept, mut survivors) = (0, 0);
        for user in 0..10_000 {
            let headers = with_header("x-user", &format!("user-{user}"));
            let was = before.endpoints()[pick_index(&before, &input(&headers))].address;
            let now = after.endpoints()[pick_index(&after, &input(&headers))].address;
            assert_ne!(now, removed);
            if was != removed {
                survivors += 1;
                kept += usize::from(was == now);
            }
        }
        let moved = 1.0 - kept as f64 / survivors as f64;
        assert!(
            moved <= max_survivor_moves,
            "{policy}: {moved} of the survivors' keys moved"
        );
        assert!(
            kept > 6_000,
            "{policy}: {kept} of 10000 keys kept their endpoint"
        );
    }
}

#[test]
fn hashing_follows_weights() {
    fastrand::seed(23);
    let headers = no_headers();
    let c = weighted(
        "RING_HASH",
        &[1, 3],
        "consistentHash: {header: x-user, minimumRingSize: 65536}",
    );
    // No x-user header: a random point on the ring, so shares follow the ring's arcs.
    assert_near(&shares(&c, 10_000, &input(&headers)), &[0.25, 0.75], 0.03);
    let c = weighted("MAGLEV", &[1, 3], "consistentHash: {header: x-user}");
    assert_near(&shares(&c, 10_000, &input(&headers)), &[0.25, 0.75], 0.02);
}

#[test]
fn missing_key_still_picks_at_random() {
    fastrand::seed(24);
    let headers = with_header("other", "1");
    for (policy, _) in HASHING {
        for key in [
            "header: x-user",
            "cookie: {name: session}",
            "queryParameter: user",
        ] {
            let c = weighted(policy, &[1, 1], &format!("consistentHash: {{{key}}}"));
            let mut seen = [false; 2];
            for _ in 0..100 {
                let Some(pick) = c.pick(&input(&headers)) else {
                    panic!("{policy} {key}: no pick")
                };
                assert!(pick.set_cookie.is_none());
                seen[usize::from(Arc::ptr_eq(&pick.endpoint, &c.endpoints()[1]))] = true;
            }
            assert_eq!(seen, [true, true], "{policy} {key}");
        }
    }
}

#[test]
fn source_ip_and_query_parameter_keys() {
    for (policy, _) in HASHING {
        let c = weighted(policy, &[1, 1, 1], "consistentHash: {sourceIp: true}");
        let headers = no_headers();
        let mut by_ip = HashMap::new();
        for i in 0..300u32 {
            let source_ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let input = HashInput {
                headers: &headers,
                source_ip,
                query: None,
            };
            let first = pick_index(&c, &input);
            assert_eq!(pick_index(&c, &input), first);
            *by_ip.entry(first).or_insert(0) += 1;
        }
        assert_eq!(by_ip.len(), 3, "{policy}: {by_ip:?}");

        let c = weighted(policy, &[1, 1, 1], "consistentHash: {queryParameter: user}");
        let mut by_user = HashMap::new();
        for i in 0..300 {
            let query = format!("page=2&user=u{i}&x");
            let input = HashInput {
                headers: &headers,
                source_ip: ip("10.0.0.9"),
                query: Some(&query),
            };
            let first = pick_index(&c, &input);
            let again = format!("user=u{i}");
            let input = HashInput {
                headers: &headers,
                source_ip: ip("10.0.0.8"),
                query: Some(&again),
            };
            assert_eq!(pick_index(&c, &input), first, "{policy} u{i}");
            *by_user.entry(first).or_insert(0) += 1;
        }
        assert_eq!(by_user.len(), 3, "{policy}: {by_user:?}");
    }
}

#[test]
fn cookie_is_issued_and_then_sticks() {
    for (policy, _) in HASHING {
        let c = weighted(
            policy,
            &[1, 1, 1, 1, 1],
            "consistentHash: {cookie: {name: session, path: /app, ttl: 3600s}}",
        );
        for _ in 0..20 {
            let headers = with_header("cookie", "theme=dark");
            let (first, cookie) = {
                let Some(mut pick) = c.pick(&input(&headers)) else {
                    panic!("no pick")
                };
                let index = c
                    .endpoints()
                    .iter()
                    .position(|e| Arc::ptr_eq(e, &pick.endpoint));
                (index, pick.set_cookie.take())
            };
            let Some(cookie) = cookie else {
                panic!("{policy}: no Set-Cookie issued")
            };
            let cookie = cookie.to_str().unwrap_or_default().to_owned();
            let Some(value) = cookie
                .strip_prefix("session=")
                .and_then(|rest| rest.strip_suffix("; Path=/app; Max-Age=3600; HttpOnly"))
            else {
                panic!("{policy}: Set-Cookie {cookie:?}")
            };
            assert_eq!(value.len(), 16, "{cookie}");
            assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{cookie}");

            // The client sends the cookie back and keeps its endpoint.
            let headers = with_header("cookie", &format!("theme=dark; session={value}"));
            for _ in 0..5 {
                let Some(pick) = c.pick(&input(&headers)) else {
                    panic!("no pick")
                };
                assert!(pick.set_cookie.is_none());
                let index = c
                    .endpoints()
                    .iter()
                    .position(|e| Arc::ptr_eq(e, &pick.endpoint));
                assert_eq!(index, first, "{policy}");
            }
        }
    }
}

#[test]
fn cookie_attributes() {
    let headers = no_headers();
    let cases = [
        (
            "{name: s, ttl: 60s}",
            Some("; Path=/; Max-Age=60; HttpOnly"),
        ),
        // Under a second: a session cookie, as Envoy.
        ("{name: s, ttl: 0s}", Some("; Path=/; HttpOnly")),
        ("{name: s}", None),
    ];
    for (cookie, attributes) in cases {
        let c = weighted(
            "RING_HASH",
            &[1],
            &format!("consistentHash: {{cookie: {cookie}}}"),
        );
        let Some(pick) = c.pick(&input(&headers)) else {
            panic!("no pick")
        };
        let got = pick
            .set_cookie
            .as_ref()
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        match attributes {
            None => assert_eq!(got, None),
            Some(attributes) => {
                let got = got.unwrap_or_default();
                assert!(got.starts_with("s=") && got.ends_with(attributes), "{got}");
            }
        }
    }
}

#[test]
fn clusters_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cluster>();
    assert_send_sync::<Pick>();
    assert_send_sync::<Endpoint>();
}

/// Picks `n` times and counts endpoints by address.
fn spread(c: &Cluster, n: usize) -> HashMap<SocketAddr, usize> {
    let headers = no_headers();
    let mut out = HashMap::new();
    for _ in 0..n {
        let p = c.pick(&input(&headers)).expect("a pick");
        *out.entry(p.endpoint.address).or_default() += 1;
    }
    out
}

#[tokio::test(start_paused = true)]
async fn priorities_fail_over_as_health_falls() {
    let c = cluster(
        "name: c\nlbPolicy: ROUND_ROBIN\n\
         outlierDetection: {consecutive5xx: 1, maxEjectionPercent: 100}\n\
         endpoints:\n\
         - {address: \"10.0.0.1:80\", priority: 0}\n\
         - {address: \"10.0.0.2:80\", priority: 0}\n\
         - {address: \"10.0.1.1:80\", priority: 1}",
    );
    let local_a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let remote: SocketAddr = "10.0.1.1:80".parse().unwrap();
    // All healthy: the preferred locality takes everything.
    let all = spread(&c, 100);
    assert_eq!(all.get(&remote), None, "{all:?}");

    // Half of priority 0 ejected: it keeps 50% x 1.4 = 70%, priority 1 gets about 30%.
    let a = c
        .endpoints()
        .iter()
        .find(|e| e.address == local_a)
        .unwrap()
        .clone();
    c.report(&a, Reported::Status(503));
    assert!(c.is_ejected(&a));
    let half = spread(&c, 2000);
    let to_remote = half.get(&remote).copied().unwrap_or(0);
    // Binomial(2000, 0.3): mean 600, sd 20.5; 6 sd either side.
    assert!((477..=723).contains(&to_remote), "{half:?}");
    assert_eq!(
        half.get(&local_a),
        None,
        "the ejected endpoint gets nothing"
    );

    // All of priority 0 ejected: everything fails over.
    let b = c
        .endpoints()
        .iter()
        .find(|e| e.address != local_a && e.priority == 0)
        .unwrap()
        .clone();
    c.report(&b, Reported::LocalFailure);
    let failed_over = spread(&c, 100);
    assert_eq!(failed_over.get(&remote), Some(&100), "{failed_over:?}");
}
