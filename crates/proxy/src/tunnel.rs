//! Byte tunnels: TCP listeners, TLS passthrough by SNI, and the copy both ways that CONNECT
//! and HTTP upgrades end in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{HashInput, Pick};
use crate::reply::Flag;
use crate::server::Shared;
use crate::snapshot::ClusterState;
use crate::tls::SniTable;

/// A client has this long to send its whole ClientHello on a passthrough listener.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies bytes both ways until both sides have closed (or either fails).
pub async fn splice<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(a, b).await {
        tracing::debug!("tunnel: {e}");
    }
}

/// A TCP listener's connection: pick an endpoint of the cluster and splice.
pub async fn proxy_tcp(
    shared: Arc<Shared>,
    cluster: &str,
    downstream: TcpStream,
    peer: SocketAddr,
) {
    forward(shared, cluster, downstream, peer, &[]).await;
}

/// A passthrough listener's connection: read the ClientHello, route its SNI to a cluster,
/// and forward the ClientHello and everything after it unchanged.
pub async fn proxy_tls_passthrough(
    shared: Arc<Shared>,
    routes: &SniTable<String>,
    mut downstream: TcpStream,
    peer: SocketAddr,
) {
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
        return;
    };
    forward(shared, cluster, downstream, peer, &seen).await;
}

/// Connects to an endpoint of `cluster`, writes `first` (bytes already read from the
/// downstream), then splices.
async fn forward(
    shared: Arc<Shared>,
    cluster: &str,
    mut downstream: TcpStream,
    peer: SocketAddr,
    first: &[u8],
) {
    let snapshot = shared.snapshot.load_full();
    let Some(state) = snapshot.clusters.get(cluster) else {
        shared.stats.local_reply(Flag::NoCluster.code());
        tracing::warn!(cluster, "tcp: cluster not defined (NC)");
        return;
    };
    let headers = http::HeaderMap::new();
    let Some(pick) = state.cluster.pick(&HashInput {
        headers: &headers,
        source_ip: peer.ip(),
        query: None,
    }) else {
        shared.stats.local_reply(Flag::NoHealthyUpstream.code());
        tracing::warn!(cluster, "tcp: no healthy upstream (UH)");
        return;
    };
    let upstream = match connect(state, &pick).await {
        Ok(s) => s,
        Err(detail) => {
            shared
                .stats
                .local_reply(Flag::UpstreamConnectFailure.code());
            tracing::warn!(cluster, "tcp: upstream connect failure (UF): {detail}");
            return;
        }
    };
    let mut upstream = TokioIo::new(upstream);
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        return;
    }
    shared.stats.downstream_cx_active.fetch_add(1, Relaxed);
    splice(&mut downstream, &mut upstream).await;
    shared.stats.downstream_cx_active.fetch_sub(1, Relaxed);
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
        format!(
            "connecting to {endpoint}: {}",
            crate::http::error_chain(&*e)
        )
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
