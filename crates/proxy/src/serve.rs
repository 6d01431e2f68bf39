//! A listener's accept loop and its connections: HTTP (plain or TLS-terminated), TCP, and TLS
//! passthrough. Every connection, and every tunnel an HTTP request opens, runs under the
//! listener's [`Drain`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::drain::Drain;
use crate::http::{ConnContext, ForwardClientCert, TlsConn, handle};
use crate::snapshot::{ListenerKind, ListenerSpec};
use crate::state::Shared;
use crate::tls::{HandshakeFailure, Termination};
use crate::tunnel::{proxy_tcp, proxy_tls_passthrough};

/// Accepts connections until `stop`, then drains them for up to `drain_timeout`. Each
/// connection is served with the spec current when it was accepted.
pub async fn serve_listener(
    shared: Arc<Shared>,
    spec: watch::Receiver<Arc<ListenerSpec>>,
    mut stop: watch::Receiver<bool>,
    listener: TcpListener,
    drain_timeout: Duration,
) {
    let drain = Drain::new();
    let name = spec.borrow().name.clone();
    let local = listener.local_addr().unwrap_or(spec.borrow().address);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&e, &name).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.stats.downstream_cx_total.fetch_add(1, Relaxed);
        let spec = spec.borrow().clone();
        serve_conn(&shared, &spec, stream, peer, local, drain.watcher());
    }
    drop(listener);
    let open = drain.open();
    if open > 0 {
        tracing::info!(listener = %name, open, "draining connections (up to {drain_timeout:?})");
    }
    if !drain.drain(drain_timeout).await {
        tracing::warn!(listener = %name, "drain timeout: closed the remaining connections");
    }
}

/// Serves one connection `spec`'s listener accepted (or an `original_dst` listener handed it,
/// `local` then being its original destination): spawned under `watcher`'s drain.
pub(crate) fn serve_conn(
    shared: &Arc<Shared>,
    spec: &ListenerSpec,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    watcher: crate::drain::Watcher,
) {
    let span = tracing::debug_span!("conn", listener = %spec.name, %peer);
    match &spec.kind {
        ListenerKind::Http {
            route_config,
            explicit_proxy,
            max_header_bytes,
            tls,
            mesh_tls,
            rate_limit,
            path_normalization,
            xff_num_trusted_hops,
            capture,
            ..
        } => {
            let cx = ConnContext {
                path_normalization: *path_normalization,
                shared: shared.clone(),
                listener: spec.name.clone(),
                route_config: route_config.clone(),
                explicit_proxy: *explicit_proxy,
                peer,
                local,
                access_log: spec.access_log.clone(),
                tls: None,
                peer_identity: None,
                client_cert_details: None,
                forward_client_cert: if shared.snapshot.load().node.gateway {
                    ForwardClientCert::SanitizeSet
                } else if mesh_tls.is_some() {
                    ForwardClientCert::AppendForward
                } else {
                    ForwardClientCert::Sanitize
                },
                rate_limit: rate_limit.clone(),
                internal_downstream: !shared.snapshot.load().node.gateway,
                drain: watcher,
                max_header_bytes: *max_header_bytes,
                xff_num_trusted_hops: *xff_num_trusted_hops,
                reporting: spec.reporting.clone(),
                source: std::sync::OnceLock::new(),
                original_dst: None,
            };
            let max_header_bytes = *max_header_bytes;
            if let Some(table) = capture
                && let Some(dst) = crate::transparent::original_dst(&stream)
            {
                let conn = crate::transparent::outbound(cx, table.clone(), stream, dst);
                tokio::spawn(conn.instrument(span));
                return;
            }
            if let Some(mesh) = mesh_tls {
                let conn = serve_mesh_http(cx, mesh.clone(), stream, max_header_bytes);
                tokio::spawn(conn.instrument(span));
                return;
            }
            match tls {
                None => {
                    let cx = Arc::new(cx);
                    let conn = http_conn(cx.clone(), TokioIo::new(stream), max_header_bytes);
                    tokio::spawn(run_http(cx, conn).instrument(span));
                }
                Some(termination) => {
                    let conn = serve_tls(cx, termination.clone(), stream, max_header_bytes);
                    tokio::spawn(conn.instrument(span));
                }
            }
        }
        ListenerKind::Tcp {
            cluster,
            mesh_tls,
            rbac,
        } => {
            let shared = shared.clone();
            let cluster = cluster.clone();
            let mesh = mesh_tls.clone();
            let rbac = rbac.clone();
            let reporting = spec.reporting.clone();
            let access_log = spec.access_log.clone();
            let conn = async move {
                let rbac = rbac.as_deref();
                let r = &*reporting;
                let log = access_log.as_ref();
                match mesh {
                    None => {
                        proxy_tcp(shared, &cluster, rbac, stream, peer, local, None, r, log).await
                    }
                    Some(mesh) => match mesh_accept(&shared, &mesh, stream).await {
                        Some(Accepted::Plain(s)) => {
                            proxy_tcp(shared, &cluster, rbac, s, peer, local, None, r, log).await
                        }
                        Some(Accepted::Tls(tls, id, _)) => {
                            proxy_tcp(shared, &cluster, rbac, tls, peer, local, id, r, log).await
                        }
                        None => {}
                    },
                }
            };
            tokio::spawn(watcher.tunnel(conn).instrument(span));
        }
        ListenerKind::TlsPassthrough { routes } => {
            let shared = shared.clone();
            let routes = routes.clone();
            let reporting = spec.reporting.clone();
            let log = spec.access_log.clone();
            let conn = async move {
                proxy_tls_passthrough(
                    shared,
                    &routes,
                    stream,
                    (peer, local),
                    &reporting,
                    log.as_ref(),
                )
                .await
            };
            tokio::spawn(watcher.tunnel(conn).instrument(span));
        }
        ListenerKind::OriginalDst { passthrough } => {
            let Some(dst) = crate::transparent::original_dst(&stream) else {
                tracing::debug!(listener = %spec.name, %peer, "not a redirected connection: closed");
                return;
            };
            let snapshot = shared.snapshot.load();
            if let Some(target) = crate::transparent::handoff(&snapshot.listeners, dst) {
                shared.stats.downstream_cx_total.fetch_add(1, Relaxed);
                serve_conn(shared, target, stream, peer, dst, watcher);
                return;
            }
            let Some(cluster) = passthrough.clone() else {
                shared.stats.local_reply(crate::reply::Flag::NoRoute.code());
                tracing::debug!(%peer, %dst, "no listener for the original destination: closed");
                return;
            };
            let shared = shared.clone();
            let reporting = spec.reporting.clone();
            let log = spec.access_log.clone();
            let conn = async move {
                crate::tunnel::proxy_captured(
                    shared,
                    &cluster,
                    stream,
                    peer,
                    dst,
                    &[],
                    &reporting,
                    log.as_ref(),
                )
                .await
            };
            tokio::spawn(watcher.tunnel(conn).instrument(span));
        }
        // Served by `dns::serve_dns` on its own sockets; a listener set never hands one to
        // this function.
        ListenerKind::Dns { .. } => drop(stream),
    }
}

/// How long an accept loop waits after an error that is not one connection's own (out of file
/// descriptors, out of memory): accepting again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After a failed accept on listener `name`: nothing to wait for when one connection failed
/// (it was reset or aborted before it was accepted), else a pause of [`ACCEPT_BACKOFF`].
pub(crate) async fn accept_failed(e: &std::io::Error, name: &str) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        tracing::debug!(listener = %name, "accept: {e}");
        return;
    }
    tracing::warn!(listener = %name, "accept: {e}; retrying in {ACCEPT_BACKOFF:?}");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// A client has this long to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a TLS connection: the handshake (with the config its SNI selects), then HTTP.
async fn serve_tls(
    cx: ConnContext,
    termination: Arc<Termination>,
    stream: tokio::net::TcpStream,
    max_header_bytes: usize,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, termination.accept(stream)).await;
    let stats = &cx.shared.stats;
    let (tls_stream, served) = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            stats.ssl_failure(Some(HandshakeFailure::of(&e)));
            tracing::debug!("TLS handshake: {e}");
            return;
        }
        Err(_) => {
            stats.ssl_failure(None);
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    stats.ssl_handshake.fetch_add(1, Relaxed);
    let (_, conn) = tls_stream.get_ref();
    let sni = conn.server_name().map(Box::from);
    let leaf = conn.peer_certificates().and_then(|chain| chain.first());
    let peer_identity = leaf.and_then(crate::tls::spiffe_identity);
    let client_cert_details = leaf.map(|c| client_cert_details(None, c));
    let cx = Arc::new(ConnContext {
        client_cert_details,
        tls: Some(TlsConn {
            termination,
            served,
            sni,
        }),
        peer_identity,
        ..cx
    });
    let conn = http_conn(cx.clone(), TokioIo::new(tls_stream), max_header_bytes);
    run_http(cx, conn).await;
}

/// A connection on a mesh mTLS listener, once told apart: plaintext (PERMISSIVE only), or
/// mTLS with the peer's principal.
enum Accepted {
    Plain(tokio::net::TcpStream),
    Tls(
        Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
        Option<Arc<str>>,
        Option<Arc<str>>,
    ),
}

/// Whether the first byte is a TLS handshake record's (0x16): how PERMISSIVE tells mTLS from
/// plaintext on one port, as Envoy's TLS inspector does.
async fn starts_with_tls(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == 0x16)
}

/// Accepts a connection on a mesh mTLS listener: plaintext passes only under PERMISSIVE;
/// anything else must complete the mTLS handshake. None when the connection is refused.
async fn mesh_accept(
    shared: &Shared,
    mesh: &crate::tls::MeshTermination,
    stream: tokio::net::TcpStream,
) -> Option<Accepted> {
    let stats = &shared.stats;
    if mesh.permissive {
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, starts_with_tls(&stream)).await {
            Ok(Ok(false)) => return Some(Accepted::Plain(stream)),
            Ok(Ok(true)) => {}
            Ok(Err(e)) => {
                tracing::debug!("mesh mTLS: {e}");
                return None;
            }
            Err(_) => return None,
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(mesh.config.clone());
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            stats.ssl_handshake.fetch_add(1, Relaxed);
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let identity = leaf.and_then(crate::identity::principal_of);
            let own = crate::identity::process().map(|i| i.spiffe_id.clone());
            let details = leaf.map(|c| client_cert_details(own.as_deref(), c));
            Some(Accepted::Tls(Box::new(tls), identity, details))
        }
        Ok(Err(e)) => {
            stats.ssl_failure(Some(HandshakeFailure::of(&e)));
            tracing::debug!("mesh mTLS handshake: {e}");
            None
        }
        Err(_) => {
            stats.ssl_failure(None);
            tracing::debug!("mesh mTLS handshake timed out");
            None
        }
    }
}

/// Serves an HTTP connection on a mesh mTLS listener: plaintext (PERMISSIVE) or mTLS, the
/// peer's principal in the connection's context.
async fn serve_mesh_http(
    cx: ConnContext,
    mesh: Arc<crate::tls::MeshTermination>,
    stream: tokio::net::TcpStream,
    max_header_bytes: usize,
) {
    let shared = cx.shared.clone();
    match mesh_accept(&shared, &mesh, stream).await {
        Some(Accepted::Plain(stream)) => {
            let cx = Arc::new(cx);
            let conn = http_conn(cx.clone(), TokioIo::new(stream), max_header_bytes);
            run_http(cx, conn).await;
        }
        Some(Accepted::Tls(tls, peer_identity, client_cert_details)) => {
            let cx = Arc::new(ConnContext {
                peer_identity,
                client_cert_details,
                ..cx
            });
            let conn = http_conn(cx.clone(), TokioIo::new(*tls), max_header_bytes);
            run_http(cx, conn).await;
        }
        None => {}
    }
}

/// A client certificate as an `x-forwarded-client-cert` element, with Istio's fields
/// (Envoy's set_current_client_cert_details: subject, URI, DNS; the hash always): `By` is this
/// proxy's own identity when it has one.
pub(crate) fn client_cert_details(
    own: Option<&str>,
    cert: &rustls::pki_types::CertificateDer<'_>,
) -> Arc<str> {
    let mut parts = Vec::new();
    if let Some(by) = own {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", crate::identity::sha256_hex(cert)));
    let subject = x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default();
    parts.push(format!("Subject=\"{}\"", subject.replace('"', "\\\"")));
    for name in crate::tls::general_names(cert, |n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(format!("URI={u}")),
        x509_parser::extensions::GeneralName::DNSName(d) => Some(format!("DNS={d}")),
        _ => None,
    }) {
        parts.push(name);
    }
    parts.join(";").into()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/1.1-or-HTTP/2 connection serving `handle`, with upgrades.
pub(crate) fn http_conn<I>(
    cx: Arc<ConnContext>,
    io: I,
    max_header_bytes: usize,
) -> impl GracefulConnection<Error = BoxError> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(max_header_bytes.max(8192))
        .header_read_timeout(Duration::from_secs(60));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes as u32);
    let service = service_fn(move |req| handle(req, cx.clone()));
    builder
        .serve_connection_with_upgrades(io, service)
        .into_owned()
}

/// Runs an HTTP connection under the listener's drain, counted as active while it lasts.
pub(crate) async fn run_http(
    cx: Arc<ConnContext>,
    conn: impl GracefulConnection<Error = BoxError>,
) {
    cx.shared.stats.downstream_cx_active.fetch_add(1, Relaxed);
    if let Err(e) = cx.drain.clone().http(conn).await {
        tracing::debug!("connection: {e}");
    }
    cx.shared.stats.downstream_cx_active.fetch_sub(1, Relaxed);
}

impl ConnContext {
    /// Runs a tunnel this connection's request opened (a WebSocket, a CONNECT) under the
    /// listener's drain: it outlives the request, but not the drain.
    pub fn spawn_tunnel(&self, tunnel: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(self.drain.clone().tunnel(tunnel).in_current_span());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accept_errors_that_are_not_one_connections_back_off() {
        let waited = |e: std::io::Error| async move {
            let start = tokio::time::Instant::now();
            accept_failed(&e, "test").await;
            start.elapsed()
        };
        // EMFILE: out of file descriptors. Accepting again at once would spin.
        let emfile = std::io::Error::from_raw_os_error(24);
        assert_eq!(waited(emfile).await, ACCEPT_BACKOFF);
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(waited(aborted).await, Duration::ZERO);
    }
}
