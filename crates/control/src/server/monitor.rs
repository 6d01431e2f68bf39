//! The monitoring endpoints (Istio's port 15014): plain HTTP/1.1, JSON answers.
//!
//! - `GET /metrics`: istiod's `pilot_*` metrics of the xDS server (see
//!   `weft_xds::server::XdsMetrics`), Prometheus text format 0.0.4.
//! - `GET /dashboard`: the service graph page ([`super::dashboard`]).
//! - `GET /ready`: 200 once the control plane serves (the first config is loaded before the
//!   ports open, so always, while it runs).
//! - `GET /debug/syncz`: every connected proxy and, per type, what was sent and ACKed
//!   ([`api::SyncStatus`]).
//! - `GET /debug/config_dump?proxy=NODE_ID|NAME.NAMESPACE|NAME`: the proxy's resources as a
//!   weft-proxy bootstrap in the proto3 JSON mapping (what the proxy's admin `/config_dump`
//!   shows from its side).
//! - `GET /debug/config_errors`: rejected files with weft-api's diagnostics, and the fields
//!   translation could not apply ([`api::ConfigErrors`]).

use std::convert::Infallible;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_xds::resource::{CLUSTER_TYPE_URL, LISTENER_TYPE_URL, ROUTE_CONFIGURATION_TYPE_URL};
use weft_xds::server::{ProxyStatus, TypeStatus, XdsServer};

use super::api;
use super::dashboard;
use super::push::MeshSource;
use super::scrape::MeshMetrics;
use crate::node::ProxyNode;

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    xds: XdsServer<MeshSource>,
    metrics: MeshMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("monitoring accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let xds = xds.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = respond(&xds, &metrics, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("monitoring connection: {e}");
            }
        });
    }
}

fn respond(
    xds: &XdsServer<MeshSource>,
    metrics: &MeshMetrics,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    let query = req.uri().query().unwrap_or("");
    match req.uri().path() {
        "/ready" => text(StatusCode::OK, "ready\n".into()),
        "/version" => text(StatusCode::OK, format!("{}\n", env!("CARGO_PKG_VERSION"))),
        "/metrics" => pilot_metrics(xds),
        "/dashboard" | "/dashboard/" => {
            let mut r = text(StatusCode::OK, dashboard::PAGE.to_owned());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/dashboard/graph.json" => {
            match dashboard::graph(metrics, query_param(query, "window").as_deref()) {
                Ok(g) => json(&g),
                Err(e) => {
                    let mut r = json(&serde_json::json!({ "error": e }));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    r
                }
            }
        }
        "/dashboard/routing" => match query_param(query, "host") {
            Some(host) => json(&dashboard::routing(
                &xds.source().state().config.resources,
                &host,
            )),
            None => text(StatusCode::BAD_REQUEST, "routing needs ?host=HOST\n".into()),
        },
        "/debug/syncz" => json(&syncz(xds)),
        "/debug/config_errors" => json(&config_errors(xds.source())),
        "/debug/config_dump" => match query_param(query, "proxy") {
            None => text(
                StatusCode::BAD_REQUEST,
                "config_dump needs ?proxy=NODE_ID or ?proxy=NAME.NAMESPACE\n".into(),
            ),
            Some(proxy) => match xds.source().config_of(&proxy) {
                Some((node, resources)) => json(&weft_xds::resource::redacted(&resources.bootstrap(&node))),
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("no proxy or workload instance {proxy:?}\n"),
                ),
            },
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "monitoring: /ready /version /metrics /dashboard /debug/syncz /debug/config_dump?proxy=P /debug/config_errors\n"
                .into(),
        ),
    }
}

/// `/metrics`: the xDS server's `pilot_*` metrics in the Prometheus text format 0.0.4.
fn pilot_metrics(xds: &XdsServer<MeshSource>) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, xds.metrics().encode());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `/debug/syncz`.
pub fn syncz(xds: &XdsServer<MeshSource>) -> Vec<api::SyncStatus> {
    let subscribed = xds.source().subscribed();
    xds.status()
        .into_iter()
        .map(|s: ProxyStatus| {
            let latest = |type_url: &str| {
                subscribed
                    .get(&s.node_id)
                    .map(|(_, r)| r.type_version(type_url))
            };
            let of = |type_url: &str| type_sync(s.types.get(type_url), latest(type_url));
            let clusters = of(CLUSTER_TYPE_URL);
            let listeners = of(LISTENER_TYPE_URL);
            let routes = of(ROUTE_CONFIGURATION_TYPE_URL);
            let proxy = match ProxyNode::parse_id(&s.node_id) {
                Ok(n) => format!("{}.{}", n.name, n.namespace),
                Err(_) => s.node_id.clone(),
            };
            api::SyncStatus {
                proxy,
                connected_since: rfc3339(s.connected_since),
                in_sync: [&clusters, &listeners, &routes]
                    .iter()
                    .all(|t| t.state == api::SyncState::Synced),
                node_id: s.node_id,
                clusters,
                listeners,
                routes,
            }
        })
        .collect()
}

fn type_sync(t: Option<&TypeStatus>, latest: Option<String>) -> api::TypeSync {
    let t = t.cloned().unwrap_or_default();
    let latest = latest.or(t.latest_version.clone());
    let state = if let Some(n) = &t.last_nack
        && Some(&n.version) != t.acked_version.as_ref()
    {
        api::SyncState::Nack
    } else if t.sent_version.is_none() {
        api::SyncState::NotSent
    } else if t.acked_version.is_some() && t.acked_version == latest {
        api::SyncState::Synced
    } else {
        api::SyncState::Stale
    };
    api::TypeSync {
        state,
        latest_version: latest,
        sent_version: t.sent_version,
        acked_version: t.acked_version,
        last_nack: t.last_nack.map(|n| api::NackInfo {
            version: n.version,
            reason: n.reason,
            at: rfc3339(n.at),
        }),
    }
}

/// `/debug/config_errors`.
pub fn config_errors(source: &MeshSource) -> api::ConfigErrors {
    let state = source.state();
    api::ConfigErrors {
        files: state
            .config
            .errors
            .iter()
            .map(|e| api::FileErrorInfo {
                path: e.path.display().to_string(),
                previous_in_force: e.previous_in_force,
                since: rfc3339(e.since),
                diagnostics: e.diagnostics.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        instances: state.instances.error.as_ref().map(rejected),
        mesh_config: state.mesh_error.as_ref().map(rejected),
        unsupported: source
            .unsupported()
            .into_iter()
            .map(|u| api::UnsupportedInfo {
                resource: u.resource.as_ref().map(ToString::to_string),
                location: u.location.as_ref().map(ToString::to_string),
                field: u.field,
                reason: u.reason,
            })
            .collect(),
    }
}

/// A rejected instances or mesh config file (its previous version stays in force).
fn rejected(e: &super::instances::InstancesError) -> api::FileErrorInfo {
    api::FileErrorInfo {
        path: e.path.display().to_string(),
        previous_in_force: true,
        since: rfc3339(e.since),
        diagnostics: vec![e.message.clone()],
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body + "\n");
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// The first value of `key` in a query string, percent-decoded (`+` is a space).
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let q = "x=1&proxy=sidecar%7E127.0.0.2%7Ea.default~default.svc.cluster.local&y";
        assert_eq!(
            query_param(q, "proxy").as_deref(),
            Some("sidecar~127.0.0.2~a.default~default.svc.cluster.local")
        );
        assert_eq!(query_param(q, "y").as_deref(), Some(""));
        assert_eq!(query_param(q, "z"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz+b"), "%zz b");
    }

    #[test]
    fn type_states() {
        let sent = |sent: &str, acked: Option<&str>| TypeStatus {
            sent_version: Some(sent.into()),
            acked_version: acked.map(Into::into),
            ..TypeStatus::default()
        };
        let state = |t: Option<&TypeStatus>, latest: &str| type_sync(t, Some(latest.into())).state;
        assert_eq!(state(None, "v1"), api::SyncState::NotSent);
        assert_eq!(
            state(Some(&sent("v1", Some("v1"))), "v1"),
            api::SyncState::Synced
        );
        assert_eq!(
            state(Some(&sent("v2", Some("v1"))), "v2"),
            api::SyncState::Stale
        );
        assert_eq!(state(Some(&sent("v1", None)), "v1"), api::SyncState::Stale);
        let mut nacked = sent("v2", Some("v1"));
        nacked.last_nack = Some(weft_xds::server::Nack {
            version: "v2".into(),
            nonce: "1".into(),
            reason: "bad".into(),
            at: SystemTime::now(),
        });
        assert_eq!(state(Some(&nacked), "v2"), api::SyncState::Nack);
    }
}
