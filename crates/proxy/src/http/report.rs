//! Istio's standard metrics for one request: on a server-side listener its source is known at
//! arrival (from the peer's metadata, as far as its mTLS identity vouches); on a client-side
//! one its destination once routed (the cluster's service, the endpoint's workload). The
//! sample is recorded when the response body ends ([`super::finish`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};

use super::ConnContext;
use crate::body::Ended;
use crate::cluster::Pick;
use crate::error::Flags;
use crate::metrics::peer::{ClusterReport, Destination, PEER_METADATA, PEER_METADATA_ID};
use crate::metrics::{Edge, Protocol, Reporter, RequestKey, RequestSample, labels};

/// A connection's source, as its first request's metadata said (later requests on the
/// connection that send the same metadata reuse it).
pub type SourceCache = OnceLock<(Option<HeaderValue>, labels::WorkloadRef)>;

/// How a request ended, as its response's head says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    pub status: u16,
    /// The request was gRPC.
    pub grpc: bool,
    /// The response head's `grpc-status` (a Trailers-Only response).
    pub grpc_status: Option<u16>,
    pub flags: Flags,
}

/// What one request will report.
pub(crate) struct Report {
    started: Instant,
    /// Server side: the whole edge, known at arrival.
    edge: Option<Edge>,
    /// Client side: the cluster the request went to.
    cluster: Option<ClusterReport>,
    /// Request body bytes, counted as they are read.
    received: Option<Arc<AtomicU64>>,
}

/// At arrival: None when the listener reports nothing. Peer metadata never goes further
/// than this proxy: a server side reads and removes it; a client side removes what its app
/// sent (only the proxy speaks for its workload).
pub(super) fn begin(cx: &ConnContext, headers: &mut HeaderMap) -> Option<Report> {
    let r = &cx.reporting;
    let edge = match r.reporter {
        Reporter::Destination => {
            let identity = cx.peer_identity.as_deref();
            let source = source(cx, identity, headers);
            Some(r.destination_edge(source, identity.is_some()))
        }
        Reporter::Source => {
            headers.remove(&PEER_METADATA);
            headers.remove(&PEER_METADATA_ID);
            None
        }
    };
    (!r.disabled).then(|| Report {
        started: Instant::now(),
        edge,
        cluster: None,
        received: None,
    })
}

fn source(
    cx: &ConnContext,
    identity: Option<&str>,
    headers: &mut HeaderMap,
) -> labels::WorkloadRef {
    let sent = headers.get(&PEER_METADATA);
    if let Some((seen, source)) = cx.source.get()
        && seen.as_ref() == sent
    {
        headers.remove(&PEER_METADATA);
        headers.remove(&PEER_METADATA_ID);
        return source.clone();
    }
    let sent = sent.cloned();
    let source = cx.reporting.source(identity, headers);
    let _ = cx.source.set((sent, source.clone()));
    source
}

/// Once the cluster is known: its service for the report, and this proxy's metadata on the
/// request when the cluster speaks mesh mTLS (its peers are sidecars).
pub(super) fn routed(
    cx: &ConnContext,
    report: Option<&mut Report>,
    cluster: &ClusterReport,
    headers: &mut HeaderMap,
) {
    if cluster.mesh_tls {
        cx.reporting.offer(headers);
    }
    if let Some(r) = report {
        r.cluster = Some(cluster.clone());
    }
}

impl Report {
    /// The route chose a cluster: its service, until the request reaches one.
    pub(super) fn destined(&mut self, cluster: &ClusterReport) {
        self.cluster = Some(cluster.clone());
    }

    /// The counter the request body adds its bytes to.
    pub(super) fn body_counter(&mut self) -> Arc<AtomicU64> {
        self.received.get_or_insert_with(Arc::default).clone()
    }

    /// Records the request, its response ended.
    pub(super) fn record(
        self,
        cx: &ConnContext,
        pick: Option<&Pick>,
        outcome: Outcome,
        ended: &Ended,
    ) {
        let edge = match self.edge {
            Some(edge) => edge,
            None => {
                let endpoint = pick.map(|p| &p.endpoint);
                let (service, mesh_tls) = match &self.cluster {
                    Some(c) => (c.service.clone(), c.mesh_tls),
                    None => (labels::unknown_service(), false),
                };
                cx.reporting.source_edge(&Destination {
                    service,
                    workload: endpoint.and_then(|e| e.workload.clone()),
                    mtls: mesh_tls && endpoint.is_some_and(|e| !e.plaintext),
                })
            }
        };
        let key = RequestKey {
            edge,
            protocol: if outcome.grpc {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            code: outcome.status,
            // Trailers, else a Trailers-Only response's headers.
            grpc_status: outcome
                .grpc
                .then(|| ended.grpc_status.or(outcome.grpc_status))
                .flatten(),
            flags: outcome.flags,
        };
        let sample = RequestSample {
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            request_bytes: self.received.map_or(0, |r| r.load(Relaxed)),
            response_bytes: ended.bytes,
        };
        cx.shared.metrics.request(key, sample);
    }
}
