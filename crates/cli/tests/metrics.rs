//! Istio's standard metrics in local mode: bookinfo through the ingress gateway, each proxy's
//! `/stats/prometheus` (port 15090) read as Prometheus reads it. Both sides of every hop
//! report (reporter source and destination) with Istio's labels; peers' identities come from
//! mTLS, and metadata a client sends without one is not believed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Up, apply_yaml, get, get_with, line_with, until, up};

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ['*']
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
";

/// One sample line of a scrape: its labels and value.
struct Sample {
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of `metric` in a Prometheus text scrape.
fn samples(scrape: &str, metric: &str) -> Vec<Sample> {
    scrape
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                labels,
                value: value.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The sum of `metric` over the series whose labels include all of `want`.
fn sum(scrape: &str, metric: &str, want: &[(&str, &str)]) -> f64 {
    samples(scrape, metric)
        .iter()
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Where `workload`'s proxy serves its metrics: port 15090 beside its admin port (the table's
/// SIDECAR ADMIN column; the gateway's pod IP is the shared 127.0.0.1).
fn metrics_port(up: &Up, workload: &str) -> SocketAddr {
    let row = line_with(&up.lines, &format!("{workload} "));
    let admin: SocketAddr = row
        .split_whitespace()
        .find_map(|c| c.strip_prefix("http://")?.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {row:?}"));
    SocketAddr::new(admin.ip(), 15090)
}

fn scrape(up: &Up, workload: &str) -> String {
    let (status, text) = get(metrics_port(up, workload), "metrics", "/stats/prometheus")
        .expect("the metrics port answers");
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn both_sides_of_every_hop_report_istios_standard_metrics() {
    let up = up("metrics", &["bookinfo/bookinfo.yaml"], &[]);
    apply_yaml(&up.state, &up.tmp, "gateway.yaml", GATEWAY);
    let line = line_with(&up.lines, "Ingress gateway port 8080");
    let gateway: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    until(
        "the gateway routes /productpage",
        Duration::from_secs(30),
        || get(gateway, "bookinfo", "/productpage").is_ok_and(|r| r.0 == 200),
    );
    let before = scrape(&up, "productpage-v1-0");
    let served = |s: &str| {
        sum(
            s,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("source_workload", "istio-ingressgateway"),
            ],
        )
    };
    let base = served(&before);
    for _ in 0..6 {
        assert_eq!(
            get(gateway, "bookinfo", "/productpage").map(|r| r.0),
            Ok(200)
        );
    }
    assert_eq!(get(gateway, "bookinfo", "/nowhere").map(|r| r.0), Ok(404));

    // productpage's inbound: six more from the gateway, over mTLS, everything Istio labels.
    let page = scrape(&up, "productpage-v1-0");
    assert_eq!(served(&page) - base, 6.0, "{page}");
    let inbound = [
        ("reporter", "destination"),
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "istio-system"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        ),
        ("destination_workload", "productpage-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "productpage"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "productpage"),
        ("destination_canonical_revision", "v1"),
        (
            "destination_service",
            "productpage.default.svc.cluster.local",
        ),
        ("destination_service_name", "productpage"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert!(
        sum(&page, "istio_requests_total", &inbound) >= 6.0,
        "{page}"
    );
    // Its histograms count the same requests.
    assert_eq!(
        sum(&page, "istio_request_duration_milliseconds_count", &inbound),
        sum(&page, "istio_requests_total", &inbound),
    );
    assert!(sum(&page, "istio_response_bytes_sum", &inbound) > 0.0);
    // productpage's outbound: details, one call per page, reported by the source.
    let to_details = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("source_app", "productpage"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        ),
        ("destination_workload", "details-v1"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-details",
        ),
        ("destination_service_name", "details"),
        ("response_code", "200"),
        ("connection_security_policy", "unknown"),
    ];
    assert!(
        sum(&page, "istio_requests_total", &to_details) >= 7.0,
        "{page}"
    );

    // details saw the same requests from its side.
    let details = scrape(&up, "details-v1-0");
    let from_page = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_version", "v1"),
        ("destination_workload", "details-v1"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert!(
        sum(&details, "istio_requests_total", &from_page) >= 7.0,
        "{details}"
    );

    // The gateway reports as a source, a request no route took included.
    let gw = scrape(&up, "istio-ingressgateway");
    let no_route = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("response_code", "404"),
        ("response_flags", "NR"),
        ("destination_workload", "unknown"),
    ];
    assert_eq!(sum(&gw, "istio_requests_total", &no_route), 1.0, "{gw}");
    assert_eq!(
        sum(&gw, "weft_proxy_xds_connected", &[]),
        0.0,
        "no labels: not matched"
    );
    assert!(gw.contains("\nweft_proxy_xds_connected 1\n"), "{gw}");

    // A client without a sidecar claiming to be productpage (its metadata, no certificate) is
    // not believed: ratings reports an unknown source over plaintext.
    let forged = forged_metadata();
    let ratings = SocketAddr::new(common::pod_ip(&up.lines, "ratings-v1-0"), 9080);
    let extra = format!("x-envoy-peer-metadata: {forged}\r\nx-envoy-peer-metadata-id: forged\r\n");
    assert_eq!(
        get_with(ratings, "ratings", "/ratings/0", &extra).map(|r| r.0),
        Ok(200)
    );
    let rs = scrape(&up, "ratings-v1-0");
    let unknown = [
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("source_principal", "unknown"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(sum(&rs, "istio_requests_total", &unknown), 1.0, "{rs}");
    assert_eq!(
        sum(
            &rs,
            "istio_requests_total",
            &[("source_workload", "productpage-v1")]
        ),
        0.0,
        "{rs}"
    );

    // OpenMetrics for a scraper that asks for it.
    let (_, open) = get_with(
        metrics_port(&up, "ratings-v1-0"),
        "metrics",
        "/stats/prometheus",
        "Accept: application/openmetrics-text\r\n",
    )
    .expect("scrape");
    assert!(open.contains("application/openmetrics-text"), "{open}");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    up.finish();
}

/// Peer metadata naming productpage, as its sidecar would send it: base64 of a protobuf
/// Struct {NAMESPACE: "default", WORKLOAD_NAME: "productpage-v1", SERVICE_ACCOUNT: ...},
/// written out field by field.
fn forged_metadata() -> String {
    fn field(key: &str, value: &str) -> Vec<u8> {
        // Struct.fields entry (1: key, 2: Value{3: string_value}).
        let value_msg = [&[0x1a, value.len() as u8][..], value.as_bytes()].concat();
        let entry = [
            &[0x0a, key.len() as u8][..],
            key.as_bytes(),
            &[0x12, value_msg.len() as u8][..],
            &value_msg,
        ]
        .concat();
        [&[0x0a, entry.len() as u8][..], &entry].concat()
    }
    let bytes = [
        field("NAMESPACE", "default"),
        field("WORKLOAD_NAME", "productpage-v1"),
        field("SERVICE_ACCOUNT", "bookinfo-productpage"),
    ]
    .concat();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
