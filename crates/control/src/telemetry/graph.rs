//! The service graph (what Kiali's versioned app graph shows) from a window of metrics:
//! workloads and services as nodes; an edge from a client workload to the service it called,
//! and from the service to each workload (version) that served it. Edges carry request rate,
//! error rate, p50 and p99 latency and mTLS.
//!
//! Requests come from client proxies' reports (`reporter="source"`), as Kiali reads them;
//! requests whose client has no proxy (`source_workload="unknown"` on the server's report)
//! come from the server's report with an `unknown` client node. mTLS is what the servers
//! reported (`connection_security_policy="mutual_tls"` on `reporter="destination"`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DURATION_BUCKET, REQUESTS_TOTAL, Sample, Traffic};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    pub window_seconds: f64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Service,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `workload:NS/NAME`, `service:HOST`, `unknown`.
    pub id: String,
    pub kind: NodeKind,
    pub namespace: String,
    /// The workload's name, or the service's host.
    pub name: String,
    pub app: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub protocol: String,
    pub requests: f64,
    pub rps: f64,
    /// 5xx over all requests, 0..1.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// All requests over mutual TLS (true), some not (false), or not reported (None).
    pub mtls: Option<bool>,
}

type EdgeKey = (String, String);

/// The graph of `window` (increases over `window_seconds`).
pub fn build(window: &[Sample], window_seconds: f64) -> Graph {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<EdgeKey, (Traffic, String)> = BTreeMap::new();
    // mTLS per (client workload node, server workload node), from the servers' reports.
    let mut mtls: BTreeMap<EdgeKey, Traffic> = BTreeMap::new();

    for s in window {
        if s.name != REQUESTS_TOTAL && s.name != DURATION_BUCKET {
            continue;
        }
        let reporter = s.label("reporter");
        let unknown_client =
            s.label("source_workload") == "unknown" || s.label("source_workload").is_empty();
        let client = if unknown_client {
            unknown_node()
        } else {
            workload_node(s, "source")
        };
        let server = (!s.label("destination_workload").is_empty()
            && s.label("destination_workload") != "unknown")
            .then(|| workload_node(s, "destination"));
        if reporter == "destination"
            && s.name == REQUESTS_TOTAL
            && let Some(server) = &server
        {
            mtls.entry((client.id.clone(), server.id.clone()))
                .or_default()
                .add(s);
        }
        // Kiali's rule: the client's report, else the server's when the client has no proxy.
        let counts = reporter == "source" || (reporter == "destination" && unknown_client);
        if !counts {
            continue;
        }
        let service = service_node(s);
        let protocol = s.label("request_protocol").to_owned();
        let mut edge = |from: &Node, to: &Node| {
            let e = edges
                .entry((from.id.clone(), to.id.clone()))
                .or_insert_with(|| (Traffic::default(), protocol.clone()));
            e.0.add(s);
        };
        match (&service, &server) {
            (Some(svc), Some(server)) => {
                edge(&client, svc);
                edge(svc, server);
            }
            (Some(svc), None) => edge(&client, svc),
            (None, Some(server)) => edge(&client, server),
            (None, None) => continue,
        }
        for n in [Some(client), service, server].into_iter().flatten() {
            nodes.entry(n.id.clone()).or_insert(n);
        }
    }

    let edges = edges
        .into_iter()
        .map(|((source, target), (t, protocol))| {
            let mtls = edge_mtls(&source, &target, &mtls);
            Edge {
                requests: t.requests,
                rps: t.rps(window_seconds),
                error_rate: if t.requests > 0.0 {
                    t.errors / t.requests
                } else {
                    0.0
                },
                p50_ms: t.quantile(0.5),
                p99_ms: t.quantile(0.99),
                mtls,
                protocol,
                source,
                target,
            }
        })
        .collect();
    Graph {
        window_seconds,
        nodes: nodes.into_values().collect(),
        edges,
    }
}

/// mTLS of an edge: a workload-to-workload pair directly; a client-to-service edge from
/// every pair with that client, a service-to-server edge from every pair with that server.
/// (A client calling two services that share a server cannot be told apart: Istio's
/// `connection_security_policy` is per connection, not per service.)
fn edge_mtls(source: &str, target: &str, pairs: &BTreeMap<EdgeKey, Traffic>) -> Option<bool> {
    let mut all = Traffic::default();
    for ((client, server), t) in pairs {
        let matches = if target.starts_with("service:") {
            client == source
        } else if source.starts_with("service:") {
            server == target
        } else {
            client == source && server == target
        };
        if matches {
            all.reported_by_destination += t.reported_by_destination;
            all.mutual_tls += t.mutual_tls;
        }
    }
    all.mtls()
}

fn workload_node(s: &Sample, side: &str) -> Node {
    let l = |k: &str| s.label(&format!("{side}_{k}")).to_owned();
    let (namespace, name) = (l("workload_namespace"), l("workload"));
    Node {
        id: format!("workload:{namespace}/{name}"),
        kind: NodeKind::Workload,
        app: l("app"),
        version: l("version"),
        namespace,
        name,
    }
}

fn service_node(s: &Sample) -> Option<Node> {
    let host = s.label("destination_service");
    if host.is_empty() || host == "unknown" {
        return None;
    }
    Some(Node {
        id: format!("service:{host}"),
        kind: NodeKind::Service,
        namespace: s.label("destination_service_namespace").to_owned(),
        name: host.to_owned(),
        app: s.label("destination_service_name").to_owned(),
        version: String::new(),
    })
}

fn unknown_node() -> Node {
    Node {
        id: "unknown".to_owned(),
        kind: NodeKind::Unknown,
        namespace: String::new(),
        name: "unknown".to_owned(),
        app: String::new(),
        version: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::exposition;
    use super::super::{Scrape, increase, parse};
    use super::*;

    fn labels(reporter: &str, src: &str, dst: &str, mtls: bool) -> String {
        let (sapp, sver) = src.rsplit_once('-').unwrap_or((src, ""));
        let (dapp, dver) = dst.rsplit_once('-').unwrap_or((dst, ""));
        format!(
            "reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"default\",source_app=\"{sapp}\",source_version=\"{sver}\",\
             destination_workload=\"{dst}\",destination_workload_namespace=\"default\",destination_app=\"{dapp}\",destination_version=\"{dver}\",\
             destination_service=\"{dapp}.default.svc.cluster.local\",destination_service_name=\"{dapp}\",destination_service_namespace=\"default\",\
             request_protocol=\"http\",connection_security_policy=\"{}\"",
            if mtls { "mutual_tls" } else { "none" }
        )
    }

    #[test]
    fn edges_split_by_version_with_rates_errors_latency_and_mtls() {
        let pp_v1 = labels("source", "productpage-v1", "reviews-v1", false);
        let pp_v2 = labels("source", "productpage-v1", "reviews-v2", false);
        let d_v1 = labels("destination", "productpage-v1", "reviews-v1", true);
        let d_v2 = labels("destination", "productpage-v1", "reviews-v2", false);
        let nomesh = labels("destination", "unknown", "productpage-v1", false);
        let text = exposition(&[
            (&pp_v1, "200", &[10.0; 6]),
            (&pp_v2, "200", &[30.0; 3]),
            (&pp_v2, "503", &[1.0]),
            (&d_v1, "200", &[9.0; 6]),
            (&d_v2, "200", &[29.0; 3]),
            (&d_v2, "503", &[0.5]),
            (&nomesh, "200", &[50.0; 4]),
        ]);
        let after: Scrape = BTreeMap::from([("all".to_owned(), parse(&text).unwrap())]);
        let g = build(&increase(&Scrape::new(), &after), 2.0);
        let edge = |s: &str, t: &str| {
            g.edges
                .iter()
                .find(|e| e.source == s && e.target == t)
                .unwrap_or_else(|| panic!("no edge {s} -> {t}: {:#?}", g.edges))
        };
        let svc = "service:reviews.default.svc.cluster.local";
        let to_svc = edge("workload:default/productpage-v1", svc);
        assert_eq!((to_svc.requests, to_svc.rps), (10.0, 5.0));
        assert_eq!(to_svc.error_rate, 0.1);
        assert_eq!(to_svc.mtls, Some(false));
        let v1 = edge(svc, "workload:default/reviews-v1");
        assert_eq!(
            (v1.requests, v1.error_rate, v1.mtls),
            (6.0, 0.0, Some(true))
        );
        // All six in (5,10]: p50 at rank 3 = 5 + 5*(3/6).
        assert_eq!(v1.p50_ms, Some(7.5));
        let v2 = edge(svc, "workload:default/reviews-v2");
        assert_eq!(
            (v2.requests, v2.error_rate, v2.mtls),
            (4.0, 0.25, Some(false))
        );
        assert_eq!(v2.protocol, "http");
        // A client without a proxy: from the server's report.
        let unknown = edge("unknown", "service:productpage.default.svc.cluster.local");
        assert_eq!(unknown.requests, 4.0);
        // Destination reports of meshed clients are not counted twice.
        assert_eq!(g.edges.len(), 5, "{:#?}", g.edges);
        let node = g
            .nodes
            .iter()
            .find(|n| n.id == "workload:default/reviews-v2")
            .unwrap();
        assert_eq!(
            (node.app.as_str(), node.version.as_str()),
            ("reviews", "v2")
        );
        assert!(g.nodes.iter().any(|n| n.kind == NodeKind::Unknown));
    }
}
