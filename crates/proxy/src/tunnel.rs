//! Byte tunnels: TCP listeners, TLS passthrough by SNI, and the copy both ways that CONNECT
//! and HTTP upgrades end in.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access_log::Sink;
use crate::cluster::{HashInput, Pick};
use crate::metrics::peer::{Destination, Reporting};
use crate::metrics::{Reporter, TcpKey, labels};
use crate::reply::Flag;
use crate::snapshot::ClusterState;
use crate::state::Shared;
use crate::tls::SniTable;

/// A client has this long to send its whole ClientHello on a passthrough listener.
pub(crate) const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies bytes both ways until both sides have closed (or either fails), or until no byte
/// has moved either way for `idle` (the cluster's TCP idle timeout; None: never).
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> Moved
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity {
        since: tokio::time::Instant::now(),
        last: AtomicU64::new(0),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    };
    let mut a = Watched {
        inner: a,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, b);
    tokio::pin!(copy);
    loop {
        let last = activity.last();
        // Without an idle timeout, a wait that never ends.
        let wake = idle.map_or(tokio::time::Instant::now() + FOREVER, |i| last + i);
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!("tunnel: {e}");
                }
                break;
            }
            () = tokio::time::sleep_until(wake) => {
                if idle.is_some() && activity.last() == last {
                    tracing::debug!(?idle, "tunnel: idle timeout, closing");
                    break;
                }
            }
        }
    }
    Moved {
        received: activity.received.load(Relaxed),
        sent: activity.sent.load(Relaxed),
    }
}

/// A long sleep, for a splice without an idle timeout (woken only to loop again).
const FOREVER: Duration = Duration::from_secs(86_400);

/// The bytes a splice moved, seen from its first side (the downstream): read from it, and
/// written to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub received: u64,
    pub sent: u64,
}

/// When bytes last moved on one side of a splice, and how many. Every byte crosses that side
/// (read from it or written to it), so this sees activity either way.
struct Activity {
    since: tokio::time::Instant,
    /// Milliseconds from `since`.
    last: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

impl Activity {
    fn last(&self) -> tokio::time::Instant {
        self.since + Duration::from_millis(self.last.load(Relaxed))
    }

    fn moved(&self) {
        let ms = self.since.elapsed().as_millis();
        self.last
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }
}

struct Watched<'a, T> {
    inner: &'a mut T,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.received.fetch_add(n as u64, Relaxed);
            self.activity.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.sent.fetch_add(n as u64, Relaxed);
            self.activity.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener's connection: authorized (when policies apply), then an endpoint of the
/// cluster picked and spliced. A denied connection is closed before a byte is read.
/// `peer_identity`: the mesh mTLS peer's principal, when the connection is mTLS.
#[expect(
    clippy::too_many_arguments,
    reason = "one connection's facts, each used once"
)]
pub async fn proxy_tcp<D>(
    shared: Arc<Shared>,
    cluster: &str,
    rbac: Option<&crate::rbac::Rbac>,
    downstream: D,
    peer: SocketAddr,
    local: SocketAddr,
    peer_identity: Option<Arc<str>>,
    reporting: &Reporting,
    access_log: Option<&Arc<Sink>>,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let report = Report::new(reporting, peer, local, access_log, peer_identity.as_deref());
    if let Some(principal) = &peer_identity {
        tracing::debug!(%peer, %principal, "tcp: mTLS peer");
    }
    if let Some(rbac) = rbac {
        let at = crate::rbac::Attributes {
            source_ip: peer.ip(),
            remote_ip: peer.ip(),
            destination_ip: local.ip(),
            destination_port: rbac.destination_port(local.port()),
            principal: peer_identity.as_deref(),
            sni: None,
            http: None,
        };
        if let crate::rbac::Verdict::Deny(why) = rbac.evaluate(&at) {
            shared.stats.local_reply(Flag::RbacDenied.code());
            shared
                .stats
                .rbac_denied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%peer, cluster, "connection denied: {why}");
            report.log(
                None,
                Some(cluster),
                Some(Flag::RbacDenied),
                Moved::default(),
            );
            return;
        }
    }
    forward(shared, cluster, downstream, &[], report, None).await;
}

/// A captured connection (transparent capture) sent to `cluster`, after `first` (bytes
/// already read from it); an ORIGINAL_DST cluster sends it to `dst`, where the application
/// sent it.
#[expect(
    clippy::too_many_arguments,
    reason = "one connection's facts, each used once"
)]
pub async fn proxy_captured<D>(
    shared: Arc<Shared>,
    cluster: &str,
    downstream: D,
    peer: SocketAddr,
    dst: SocketAddr,
    first: &[u8],
    reporting: &Reporting,
    access_log: Option<&Arc<Sink>>,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let report = Report::new(reporting, peer, dst, access_log, None);
    forward(shared, cluster, downstream, first, report, Some(dst)).await;
}

/// What a TCP connection reports: the standard metrics, and its access-log line.
#[derive(Clone, Copy)]
struct Report<'a> {
    reporting: &'a Reporting,
    /// The downstream's verified mTLS identity.
    identity: Option<&'a str>,
    peer: SocketAddr,
    /// Where it came to (a captured connection: its original destination).
    local: SocketAddr,
    /// The listener's access log, if it has one.
    access_log: Option<&'a Arc<Sink>>,
    started: (std::time::SystemTime, std::time::Instant),
}

impl<'a> Report<'a> {
    fn new(
        reporting: &'a Reporting,
        peer: SocketAddr,
        local: SocketAddr,
        access_log: Option<&'a Arc<Sink>>,
        identity: Option<&'a str>,
    ) -> Report<'a> {
        Report {
            reporting,
            identity,
            peer,
            local,
            access_log,
            started: (std::time::SystemTime::now(), std::time::Instant::now()),
        }
    }

    /// The connection's access-log line, as Envoy's TCP proxy writes it (`"- - -"`, status
    /// 0, the bytes each way, the upstream host and cluster, the response flags).
    fn log(
        &self,
        upstream: Option<SocketAddr>,
        cluster: Option<&str>,
        flag: Option<Flag>,
        moved: Moved,
    ) {
        let Some(sink) = self.access_log else {
            return;
        };
        let mut entry = crate::access_log::Entry::connection(
            sink,
            self.started,
            self.peer,
            self.local,
            self.identity.map(Arc::from),
        );
        if let Some(f) = flag {
            entry.flags.add(f);
        }
        entry
            .bytes_received
            .store(moved.received, std::sync::atomic::Ordering::Relaxed);
        entry.bytes_sent = moved.sent;
        if let Some(u) = upstream {
            entry.upstream_host = u.to_string();
        }
        if let Some(c) = cluster {
            entry.cluster = c.to_owned();
        }
        entry.write();
    }

    fn key(&self, state: &ClusterState, pick: Option<&Pick>, flag: Option<Flag>) -> TcpKey {
        let mut flags = crate::error::Flags::default();
        if let Some(f) = flag {
            flags.add(f);
        }
        let edge = match self.reporting.reporter {
            Reporter::Source => {
                let endpoint = pick.map(|p| &p.endpoint);
                self.reporting.source_edge(&Destination {
                    service: state.report.service.clone(),
                    workload: endpoint.and_then(|e| e.workload.clone()),
                    mtls: state.report.mesh_tls && endpoint.is_some_and(|e| !e.plaintext),
                })
            }
            Reporter::Destination => {
                let source = match self.identity {
                    Some(id) => labels::workload(labels::Workload::of_principal(id)),
                    None => labels::unknown_workload(),
                };
                self.reporting
                    .destination_edge(source, self.identity.is_some())
            }
        };
        TcpKey { edge, flags }
    }

    /// A connection that ended before it was spliced (counted opened and closed at once).
    fn refused(&self, shared: &Shared, state: &ClusterState, pick: Option<&Pick>, flag: Flag) {
        let upstream = pick.map(|p| p.endpoint.address);
        self.log(
            upstream,
            Some(state.cluster.name()),
            Some(flag),
            Moved::default(),
        );
        if self.reporting.tcp_disabled {
            return;
        }
        let key = self.key(state, pick, Some(flag));
        shared.metrics.tcp_opened(key.clone());
        shared.metrics.tcp_closed(key, 0, 0);
    }
}

/// A passthrough listener's connection: read the ClientHello, route its SNI to a cluster,
/// and forward the ClientHello and everything after it unchanged.
pub async fn proxy_tls_passthrough(
    shared: Arc<Shared>,
    routes: &SniTable<String>,
    mut downstream: TcpStream,
    (peer, local): (SocketAddr, SocketAddr),
    reporting: &Reporting,
    access_log: Option<&Arc<Sink>>,
) {
    let report = Report::new(reporting, peer, local, access_log, None);
    let hello = tokio::time::timeout(
        CLIENT_HELLO_TIMEOUT,
        crate::tls::peek_client_hello(&mut downstream),
    )
    .await;
    let (seen, sni) = match hello {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "passthrough: not a TLS ClientHello: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "passthrough: no ClientHello in time");
            return;
        }
    };
    let Some(cluster) = routes.lookup(sni.as_deref()) else {
        shared.stats.local_reply(Flag::NoRoute.code());
        tracing::info!(%peer, sni = sni.as_deref().unwrap_or("-"), "passthrough: no route for the SNI (NR)");
        report.log(None, None, Some(Flag::NoRoute), Moved::default());
        return;
    };
    forward(shared, cluster, downstream, &seen, report, None).await;
}

/// Connects to an endpoint of `cluster` (of an ORIGINAL_DST cluster: to `original`), writes
/// `first` (bytes already read from the downstream), then splices.
async fn forward<D>(
    shared: Arc<Shared>,
    cluster: &str,
    mut downstream: D,
    first: &[u8],
    report: Report<'_>,
    original: Option<SocketAddr>,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let peer = report.peer;
    let snapshot = shared.snapshot.load_full();
    let Some(mut state) = snapshot.clusters.get(cluster).cloned() else {
        shared.stats.local_reply(Flag::NoCluster.code());
        tracing::warn!(cluster, "tcp: cluster not defined (NC)");
        report.log(None, Some(cluster), Some(Flag::NoCluster), Moved::default());
        return;
    };
    if let (Some(destinations), Some(dst)) = (&state.original_dst, original) {
        let captured = crate::original_dst::CAPTURED;
        match destinations
            .state_for(&state, &dst.to_string(), dst.port(), captured)
            .await
        {
            Ok(resolved) => state = resolved,
            Err(why) => {
                shared.stats.local_reply(Flag::NoHealthyUpstream.code());
                report.refused(&shared, &state, None, Flag::NoHealthyUpstream);
                tracing::warn!(cluster, %dst, "tcp: {why} (UH)");
                return;
            }
        }
    }
    let state = &*state;
    let headers = http::HeaderMap::new();
    let Some(pick) = state.cluster.pick(&HashInput {
        headers: &headers,
        source_ip: peer.ip(),
        query: None,
    }) else {
        shared.stats.local_reply(Flag::NoHealthyUpstream.code());
        report.refused(&shared, state, None, Flag::NoHealthyUpstream);
        tracing::warn!(cluster, "tcp: no healthy upstream (UH)");
        return;
    };
    let upstream = match connect(state, &pick).await {
        Ok(s) => s,
        Err(detail) => {
            shared
                .stats
                .local_reply(Flag::UpstreamConnectFailure.code());
            report.refused(&shared, state, Some(&pick), Flag::UpstreamConnectFailure);
            tracing::warn!(cluster, "tcp: upstream connect failure (UF): {detail}");
            return;
        }
    };
    let mut upstream = TokioIo::new(upstream);
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        return;
    }
    shared.stats.downstream_cx_active.fetch_add(1, Relaxed);
    let key = (!report.reporting.tcp_disabled).then(|| report.key(state, Some(&pick), None));
    if let Some(key) = &key {
        shared.metrics.tcp_opened(key.clone());
    }
    let moved = splice(
        &mut downstream,
        &mut upstream,
        state.cluster.tcp_idle_timeout(),
    )
    .await;
    if let Some(key) = key {
        shared.metrics.tcp_closed(key, moved.sent, moved.received);
    }
    shared.stats.downstream_cx_active.fetch_sub(1, Relaxed);
    report.log(
        Some(pick.endpoint.address),
        Some(state.cluster.name()),
        None,
        moved,
    );
    drop(pick);
}

/// A new connection to the picked endpoint, counted. The error says why (for UF replies).
pub async fn connect(
    state: &ClusterState,
    pick: &Pick,
) -> Result<crate::upstream::UpstreamStream, String> {
    let endpoint = pick.endpoint.address;
    let result = state.upstream.connect(&pick.endpoint).await.map_err(|e| {
        state.stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
        format!("connecting to {endpoint}: {}", crate::error::chain(&*e))
    });
    // For outlier detection a connection that opens is a success, one that does not a local
    // origin failure (as Envoy's TCP proxy reports them).
    let reported = match result {
        Ok(_) => crate::cluster::Reported::Status(200),
        Err(_) => crate::cluster::Reported::LocalFailure,
    };
    state.cluster.report(&pick.endpoint, reported);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
        let idle = Duration::from_secs(60);
        let (mut client, mut down) = duplex(64);
        let (mut up, mut server) = duplex(64);
        let started = tokio::time::Instant::now();
        let tunnel = tokio::spawn(async move { splice(&mut down, &mut up, Some(idle)).await });
        // Bytes each way every 40 s keep it open well past one idle timeout...
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        assert!(!tunnel.is_finished(), "closed while in use");
        // ... and once nothing moves, it closes after the idle timeout.
        tokio::time::timeout(Duration::from_secs(3600), tunnel)
            .await
            .expect("closed when idle")
            .unwrap();
        let quiet = started.elapsed() - Duration::from_secs(160);
        assert!(
            quiet >= idle && quiet < idle + Duration::from_secs(1),
            "closed after {quiet:?} idle"
        );
        let mut rest = Vec::new();
        assert_eq!(
            client.read_to_end(&mut rest).await.unwrap(),
            0,
            "client sees the close"
        );
    }
}
