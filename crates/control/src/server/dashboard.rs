//! The service graph page on the monitoring port: `/dashboard` (HTML and a small script,
//! compiled into the binary: no CDN), `/dashboard/graph.json?window=30s` (the graph over a
//! window, from the proxies the control plane scrapes, [`super::scrape`]) and
//! `/dashboard/routing?host=HOST` (the VirtualServices and DestinationRules in force for a
//! service host, as the page shows them on a click).

use std::time::Duration;

use serde::Serialize;
use weft_api::Resource;
use weft_api::resource::Spec;

use super::scrape::MeshMetrics;
use crate::host::resolve_host;

pub const PAGE: &str = include_str!("dashboard.html");

/// The default and longest windows a graph is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphAnswer {
    /// Why there is no graph yet (no targets configured, or fewer than two scrapes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub graph: Option<crate::telemetry::graph::Graph>,
}

/// `/dashboard/graph.json`.
pub fn graph(metrics: &MeshMetrics, window: Option<&str>) -> Result<GraphAnswer, String> {
    let window = match window {
        None | Some("") => DEFAULT_WINDOW,
        Some(w) => humantime::parse_duration(w).map_err(|e| format!("window {w:?}: {e}"))?,
    };
    if window.is_zero() || window > super::scrape::KEPT {
        return Err(format!(
            "window: between 1s and {}",
            humantime::format_duration(super::scrape::KEPT)
        ));
    }
    if !metrics.configured {
        return Ok(GraphAnswer {
            message: Some(
                "no proxies to scrape: start the control plane with --scrape-targets FILE (weft up does)"
                    .into(),
            ),
            graph: None,
        });
    }
    Ok(match metrics.graph(window) {
        Some(g) => GraphAnswer {
            message: None,
            graph: Some(g),
        },
        None => GraphAnswer {
            message: Some("collecting metrics…".into()),
            graph: None,
        },
    })
}

/// One resource of a service's routing config.
#[derive(Debug, Serialize, PartialEq)]
pub struct RoutingResource {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub spec: serde_json::Value,
}

/// The VirtualServices whose hosts match `host` and the DestinationRules whose host does
/// (short names resolved in each resource's namespace, wildcards as Istio matches them).
pub fn routing(resources: &[Resource], host: &str) -> Vec<RoutingResource> {
    let namespace = |r: &Resource| {
        r.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let matches = |pattern: &str, ns: &str| {
        let resolved = resolve_host(pattern, ns);
        crate::host::host_matches(&resolved, host)
    };
    let mut out = Vec::new();
    for r in resources {
        let ns = namespace(r);
        let spec = match &r.spec {
            Spec::VirtualService(vs) if vs.hosts.iter().any(|h| matches(h, &ns)) => {
                serde_json::to_value(vs)
            }
            Spec::DestinationRule(dr) if matches(&dr.host, &ns) => serde_json::to_value(dr),
            _ => continue,
        };
        out.push(RoutingResource {
            kind: r.spec.kind(),
            name: r.metadata.name.clone(),
            namespace: ns,
            spec: spec.unwrap_or(serde_json::Value::Null),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_of_a_host_lists_its_virtual_services_and_destination_rules() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
spec:\n  host: reviews.default.svc.cluster.local\n  subsets:\n  - name: v2\n    labels: {version: v2}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n\
spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other-ns, namespace: prod}\n\
spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";
        let dir = super::super::test_dir("dashboard-routing");
        let file = dir.join("r.yaml");
        std::fs::write(&file, yaml).unwrap();
        let loaded = weft_api::load_paths(&[file]);
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        let resources: Vec<Resource> = loaded.effective().into_iter().cloned().collect();
        let r = routing(&resources, "reviews.default.svc.cluster.local");
        let names: Vec<(&str, &str)> = r.iter().map(|r| (r.kind, r.name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("VirtualService", "reviews"),
                ("DestinationRule", "reviews")
            ]
        );
        assert_eq!(
            r[0].spec["http"][0]["route"][0]["destination"]["subset"],
            "v2"
        );
        assert_eq!(r[1].spec["subsets"][0]["labels"]["version"], "v2");
        assert!(routing(&resources, "details.default.svc.cluster.local").is_empty());
    }

    #[test]
    fn graph_answers_say_why_there_is_none() {
        let m = MeshMetrics::new(false);
        assert!(
            graph(&m, None)
                .unwrap()
                .message
                .unwrap()
                .contains("--scrape-targets")
        );
        let m = MeshMetrics::new(true);
        assert_eq!(
            graph(&m, Some("30s")).unwrap().message.as_deref(),
            Some("collecting metrics…")
        );
        assert!(graph(&m, Some("abc")).is_err());
        assert!(graph(&m, Some("1h")).is_err());
    }
}
