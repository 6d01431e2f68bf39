//! Running the proxy: bind listeners, serve connections, reload config, drain on shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_xds::proto;

use crate::access_log::AccessLog;
use crate::http::{ConnContext, TlsConn, handle};
use crate::listeners::Listeners;
use crate::snapshot::{ListenerKind, ListenerSpec, Snapshot};
use crate::stats::Stats;
use crate::tls::{HandshakeFailure, Termination};
use crate::tunnel::{proxy_tcp, proxy_tls_passthrough};

/// Sets the log filter from a directive string (`debug`, `weft_proxy=trace`).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// State every connection and request shares.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: Stats,
    pub access_log: AccessLog,
    /// True once a complete config is serving (`/healthz/ready`).
    pub ready: AtomicBool,
    /// Flips to true to start draining.
    pub shutdown: watch::Sender<bool>,
    /// Changes the log filter (`/logging`).
    pub set_log_level: SetLogLevel,
    /// The listeners serving now, kept in line with the snapshot.
    pub listeners: Listeners,
}

/// Reads a bootstrap file: YAML or JSON in the proto3 JSON mapping.
pub fn read_bootstrap(path: &std::path::Path) -> Result<proto::Bootstrap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    yaml_serde::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the first snapshot, or every reason it cannot be built.
pub fn first_snapshot(bootstrap: proto::Bootstrap, stats: &Stats) -> Result<Snapshot, String> {
    Snapshot::build(bootstrap, None, stats).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Accepts connections until `stop`, then lets in-flight requests finish up to
/// `drain_timeout`. Each connection is served with the spec current when it was accepted.
pub async fn serve_listener(
    shared: Arc<Shared>,
    spec: watch::Receiver<Arc<ListenerSpec>>,
    mut stop: watch::Receiver<bool>,
    listener: TcpListener,
    drain_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
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
        match &spec.kind {
            ListenerKind::Http {
                route_config,
                explicit_proxy,
                max_header_bytes,
                tls,
                rate_limit,
                path_normalization,
            } => {
                let cx = ConnContext {
                    path_normalization: *path_normalization,
                    shared: shared.clone(),
                    listener: spec.name.clone(),
                    route_config: route_config.clone(),
                    explicit_proxy: *explicit_proxy,
                    peer,
                    local,
                    access_log: spec.access_log.is_some(),
                    tls: None,
                    rate_limit: rate_limit.clone(),
                    internal_downstream: !shared.snapshot.load().node.gateway,
                };
                let max_header_bytes = *max_header_bytes;
                match tls {
                    None => serve_http(
                        Arc::new(cx),
                        TokioIo::new(stream),
                        max_header_bytes,
                        &graceful,
                    ),
                    Some(termination) => {
                        let conn = serve_tls(
                            cx,
                            termination.clone(),
                            stream,
                            max_header_bytes,
                            graceful.watcher(),
                        );
                        tokio::spawn(conn);
                    }
                }
            }
            ListenerKind::Tcp { cluster } => {
                let shared = shared.clone();
                let cluster = cluster.clone();
                tokio::spawn(async move { proxy_tcp(shared, &cluster, stream, peer).await });
            }
            ListenerKind::TlsPassthrough { routes } => {
                let shared = shared.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    proxy_tls_passthrough(shared, &routes, stream, peer).await;
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "drain timeout: closing remaining connections");
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
    watcher: Watcher,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, termination.accept(stream)).await;
    let stats = &cx.shared.stats;
    let (tls_stream, served) = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            stats.ssl_failure(Some(HandshakeFailure::of(&e)));
            tracing::debug!(listener = %cx.listener, peer = %cx.peer, "TLS handshake: {e}");
            return;
        }
        Err(_) => {
            stats.ssl_failure(None);
            tracing::debug!(listener = %cx.listener, peer = %cx.peer, "TLS handshake timed out");
            return;
        }
    };
    stats.ssl_handshake.fetch_add(1, Relaxed);
    let cx = Arc::new(ConnContext {
        tls: Some(TlsConn {
            termination,
            served,
        }),
        ..cx
    });
    let conn = http_conn(cx.clone(), TokioIo::new(tls_stream), max_header_bytes);
    run_conn(cx, watcher.watch(conn)).await;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/1.1-or-HTTP/2 connection serving `handle`, with upgrades.
fn http_conn<I>(
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

/// Serves a plaintext connection under the listener's graceful shutdown.
fn serve_http<I>(cx: Arc<ConnContext>, io: I, max_header_bytes: usize, graceful: &GracefulShutdown)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = graceful.watch(http_conn(cx.clone(), io, max_header_bytes));
    tokio::spawn(run_conn(cx, conn));
}

async fn run_conn(
    cx: Arc<ConnContext>,
    conn: impl std::future::Future<Output = Result<(), BoxError>>,
) {
    cx.shared.stats.downstream_cx_active.fetch_add(1, Relaxed);
    if let Err(e) = conn.await {
        tracing::debug!(peer = %cx.peer, "connection: {e}");
    }
    cx.shared.stats.downstream_cx_active.fetch_sub(1, Relaxed);
}

/// Rebuilds the snapshot from `path` and swaps it in, binding new listeners first; on any
/// error the current config stays whole.
pub async fn reload(shared: &Arc<Shared>, path: &std::path::Path) {
    let result = match read_bootstrap(path) {
        Ok(b) => build(shared, b).await,
        Err(e) => Err(e),
    };
    let applied = result.and_then(|next| apply(shared, next));
    match applied {
        Ok(()) => {
            shared.stats.config_reloads.fetch_add(1, Relaxed);
            tracing::info!(path = %path.display(), "config reloaded");
        }
        Err(e) => {
            shared.stats.config_rejections.fetch_add(1, Relaxed);
            tracing::error!(path = %path.display(), "config rejected, the previous config keeps serving: {e}");
        }
    }
}

/// Builds a snapshot after the current one on the blocking pool: compiling regexes, reading
/// certificates and building Maglev tables takes long enough that requests, which may share
/// one worker thread with the caller, must not wait behind it. The error joins every reason.
pub async fn build(shared: &Arc<Shared>, bootstrap: proto::Bootstrap) -> Result<Snapshot, String> {
    let shared = shared.clone();
    let built = tokio::task::spawn_blocking(move || {
        let current = shared.snapshot.load_full();
        Snapshot::build(bootstrap, Some(&current), &shared.stats)
    })
    .await
    .map_err(|e| format!("building the config failed: {e}"))?;
    built.map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Puts a built snapshot in force: listeners first (a bind failure refuses it), then the
/// routes and clusters, atomically. Prints each newly bound listener's address.
pub fn apply(shared: &Arc<Shared>, next: Snapshot) -> Result<(), String> {
    let specs = next.listeners.clone();
    let clusters: std::collections::HashSet<Arc<str>> = next.clusters.keys().cloned().collect();
    let commit = || {
        shared.snapshot.store(Arc::new(next));
        shared.stats.retain_clusters(&clusters);
    };
    let bound = shared
        .listeners
        .apply(shared, &specs, commit)
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    for b in bound {
        // A stable line on stderr, so that scripts and tests learn the bound ports.
        eprintln!("weft-proxy: listener {} on {}", b.name, b.address);
    }
    Ok(())
}

/// The file's modification time, to pass to [`watch_config`]: read it before reading the file,
/// so that no change made after the read can go unnoticed.
pub fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads on SIGHUP and when the file's modification time changes from `last` (checked
/// every second).
pub async fn watch_config(shared: Arc<Shared>, path: PathBuf, mut last: Option<SystemTime>) {
    let mtime = |p: &PathBuf| modified(p);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP reload unavailable: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            _ = hup_fired => true,
            _ = tick.tick() => {
                let now = mtime(&path);
                let changed = now != last;
                last = now;
                changed
            }
            _ = shutdown.changed() => return,
        };
        if changed {
            reload(&shared, &path).await;
        }
    }
}

#[cfg(test)]
impl Shared {
    /// A proxy's shared state with an empty config, no listeners and no access log.
    pub(crate) fn for_test() -> Arc<Shared> {
        let stats = Stats::default();
        let snapshot = Snapshot::build(Default::default(), None, &stats)
            .unwrap_or_else(|e| panic!("an empty config builds: {e:?}"));
        let (shutdown, _) = watch::channel(false);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            stats,
            access_log: AccessLog::disabled(),
            ready: AtomicBool::new(true),
            shutdown,
            set_log_level: Box::new(|_| Ok(())),
            listeners: Listeners::new(Duration::from_secs(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_counters_of_removed_clusters_are_dropped() {
        let shared = Shared::for_test();
        let build = |clusters: &[&str]| {
            let yaml: String = clusters
                .iter()
                .map(|c| format!("- {{name: {c}, endpoints: [{{address: \"127.0.0.1:1\"}}]}}\n"))
                .collect();
            let bootstrap: proto::Bootstrap =
                yaml_serde::from_str(&format!("clusters:\n{yaml}")).expect("config");
            let current = shared.snapshot.load();
            Snapshot::build(bootstrap, Some(&current), &shared.stats).expect("builds")
        };
        apply(&shared, build(&["a", "b"])).expect("applies");
        let stats = shared.stats.render();
        assert!(stats.contains("cluster.b.upstream_rq_total"), "{stats}");
        apply(&shared, build(&["a", "c"])).expect("applies");
        let stats = shared.stats.render();
        assert!(stats.contains("cluster.a.upstream_rq_total"), "{stats}");
        assert!(stats.contains("cluster.c.upstream_rq_total"), "{stats}");
        assert!(!stats.contains("cluster.b."), "{stats}");
    }

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
