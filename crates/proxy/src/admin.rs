//! The admin endpoint (Istio's 15000, loopback only) and the health endpoint (15021).

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::ProxyBody;
use crate::reply;
use crate::server::Proxy;

/// How long an app probe waits for the application to accept a connection.
const APP_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client has this long to send a request's headers (hyper's default 30 s is generous for
/// a kubelet probe or a curl, and idle half-open connections would hold sockets that long).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Which endpoint a listener serves.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The admin pages (15000).
    Admin,
    /// `/healthz/ready` (15021): the proxy's readiness and the application's, each of these
    /// addresses accepting a connection.
    Health { app_probes: Arc<[SocketAddr]> },
    /// `/stats/prometheus` alone (Istio's 15090, where Prometheus scrapes proxies).
    Prometheus,
}

/// Serves `listener` with `page` until shutdown.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, endpoint: Endpoint) {
    serve_with(proxy, listener, endpoint, HEADER_READ_TIMEOUT).await;
}

async fn serve_with(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    endpoint: Endpoint,
    header_read_timeout: Duration,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = proxy.stopped() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let name = match endpoint {
                    Endpoint::Admin => "admin",
                    Endpoint::Health { .. } => "health",
                    Endpoint::Prometheus => "prometheus",
                };
                crate::serve::accept_failed(&e, name).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                let endpoint = endpoint.clone();
                async move {
                    Ok::<_, Infallible>(match endpoint {
                        Endpoint::Admin => page(&proxy, req),
                        Endpoint::Health { app_probes } => health(&proxy, &req, &app_probes).await,
                        Endpoint::Prometheus => prometheus_only(&proxy, &req),
                    })
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = reply::fixed(status, body.into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// The proxy is ready: it has its first config and is not draining.
fn proxy_ready(proxy: &Proxy) -> bool {
    proxy.ready.load(Relaxed) && !proxy.is_stopping()
}

/// The health endpoint: `/healthz/ready` is 200 when the proxy is ready and the application
/// accepts connections on every probed address, 503 saying which is not otherwise.
async fn health(
    proxy: &Proxy,
    req: &Request<Incoming>,
    app_probes: &[SocketAddr],
) -> Response<ProxyBody> {
    if req.uri().path() != "/healthz/ready" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !proxy_ready(proxy) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    for addr in app_probes {
        let connected =
            tokio::time::timeout(APP_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
        let why = match connected {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {APP_PROBE_TIMEOUT:?}"),
        };
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("app not ready: {addr}: {why}\n"),
        );
    }
    text(StatusCode::OK, "")
}

/// The metrics port: `/stats/prometheus` and nothing else.
fn prometheus_only(proxy: &Proxy, req: &Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats/prometheus") => prometheus(proxy, req),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Istio's standard metrics and the proxy's health, in the format the scraper accepts.
fn prometheus(proxy: &Proxy, req: &Request<Incoming>) -> Response<ProxyBody> {
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::from_accept(accept);
    let mut r = text(
        StatusCode::OK,
        crate::metrics::encode(&proxy.shared, format),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    r
}

fn page(proxy: &Proxy, req: Request<Incoming>) -> Response<ProxyBody> {
    let shared = &proxy.shared;
    let path = req.uri().path();
    let ready = proxy_ready(proxy);
    match (req.method(), path) {
        (_, "/ready") if ready => text(StatusCode::OK, "LIVE\n"),
        (_, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n"),
        (&Method::GET, "/config_dump") => {
            let snapshot = shared.snapshot.load();
            match serde_json::to_string_pretty(&weft_xds::resource::redacted(&snapshot.bootstrap)) {
                Ok(json) => {
                    let mut r = text(StatusCode::OK, json + "\n");
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        (&Method::GET, "/stats/prometheus") => prometheus(proxy, &req),
        (&Method::GET, "/certs") => {
            let json = crate::identity::certs_json(crate::identity::process().as_deref());
            let mut r = text(StatusCode::OK, format!("{json:#}\n"));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::GET, "/clusters") => {
            let snapshot = shared.snapshot.load();
            let mut names: Vec<_> = snapshot.clusters.keys().collect();
            names.sort();
            let mut out = String::new();
            for name in names {
                let state = &snapshot.clusters[name];
                // An ORIGINAL_DST cluster lists the destinations requests have gone to, as
                // Envoy lists the hosts it created.
                let destinations = state
                    .original_dst
                    .as_ref()
                    .map(|o| o.destinations())
                    .unwrap_or_default();
                let states = std::iter::once(&**state).chain(destinations.iter().map(|d| &**d));
                for (state, ep) in
                    states.flat_map(|s| s.cluster.endpoints().iter().map(move |e| (s, e)))
                {
                    let a = ep.address;
                    let _ = writeln!(out, "{name}::{a}::weight::{}", ep.weight);
                    let _ = writeln!(out, "{name}::{a}::rq_active::{}", ep.active_requests());
                    // Envoy's per-host request counters: every exchange (attempt) this
                    // proxy had with the endpoint, kept across config pushes.
                    let (success, error) = ep.health.requests();
                    let _ = writeln!(out, "{name}::{a}::rq_success::{success}");
                    let _ = writeln!(out, "{name}::{a}::rq_error::{error}");
                    let _ = writeln!(out, "{name}::{a}::rq_total::{}", success + error);
                    // Envoy's flag for an endpoint outlier detection ejected.
                    let flags = if state.cluster.is_ejected(ep) {
                        "/failed_outlier_check"
                    } else {
                        "healthy"
                    };
                    let _ = writeln!(out, "{name}::{a}::health_flags::{flags}");
                    let zone = &ep.locality;
                    let _ = writeln!(out, "{name}::{a}::region::{}", zone.region);
                    let _ = writeln!(out, "{name}::{a}::zone::{}", zone.zone);
                }
            }
            text(StatusCode::OK, out)
        }
        (&Method::GET, "/stats") => {
            let mut out = shared.stats.render();
            let _ = writeln!(out, "access_log.dropped: {}", crate::access_log::dropped());
            crate::trace::export::render_stats(&mut out);
            text(StatusCode::OK, out)
        }
        (&Method::POST, "/logging") => {
            let level = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")))
                .unwrap_or("");
            match (proxy.set_log_level)(level) {
                Ok(()) => text(StatusCode::OK, format!("log level: {level}\n")),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (&Method::POST, "/quitquitquit") => {
            proxy.stop();
            text(StatusCode::OK, "OK\n")
        }
        (_, "/config_dump" | "/clusters" | "/stats" | "/certs") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, "/logging" | "/quitquitquit") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin: /config_dump /clusters /stats /ready (GET), /logging?level=L /quitquitquit (POST)\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_with(
            Proxy::for_test(),
            listener,
            Endpoint::Health {
                app_probes: Arc::from([]),
            },
            Duration::from_millis(200),
        ));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        // The outer bound only keeps a failing test from hanging.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection was kept open");
        server.abort();
    }
}
