//! The delta ADS server: a tonic `AggregatedDiscoveryService` that serves each proxy the
//! resources a [`ResourceSource`] publishes for it.
//!
//! Every stream runs on its own task. It subscribes once to the source's `watch` channel
//! for its node, then answers requests and snapshot changes with the difference between
//! what the client has and what the snapshot holds. A slow or stuck proxy fills its own
//! response channel and blocks only its own task; `watch` coalesces the snapshots it
//! misses meanwhile, so nothing queues up behind it.

mod held;
mod metrics;
mod status;
mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

pub use metrics::{XdsMetrics, type_label};
pub use status::{Nack, ProxyStatus, TypeStatus};
use stream::{Outgoing, StreamState};

use crate::resource::{ProxyResources, WEFT_TYPE_URLS};

/// Where the server gets each proxy's resources: implemented by the control plane.
pub trait ResourceSource: Send + Sync + 'static {
    /// Called once per stream, with the node of its first request. The receiver's current
    /// value is sent first; every later value is diffed against what the proxy has. An
    /// error ends the stream with that status (an unknown or malformed node, say).
    fn subscribe(&self, node: &Node) -> Result<watch::Receiver<Arc<ProxyResources>>, Status>;

    /// The proxy ACKed `version` (a type version) of `type_url`.
    fn on_ack(&self, _node: &Node, _type_url: &str, _version: &str) {}

    /// The proxy NACKed a response of `type_url`; it keeps its last ACKed version.
    fn on_nack(&self, _node: &Node, _type_url: &str, _nack: &Nack) {}

    /// The stream of this node ended.
    fn on_disconnect(&self, _node: &Node) {}
}

/// Tuning of an [`XdsServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Type URLs served, in the order responses are sent after a change. A request for any
    /// other type URL ends its stream with `INVALID_ARGUMENT`.
    pub type_urls: Vec<String>,
    /// Responses queued per stream before its task waits for the client to read.
    pub stream_buffer: usize,
    /// HTTP/2 keepalive pings, to find proxies that vanished without closing.
    pub keepalive: Option<Duration>,
    /// On shutdown, how long [`XdsServer::serve`] waits for connections to close before
    /// dropping them (a proxy that stopped reading never finishes its stream).
    pub drain_timeout: Duration,
    /// Streams that may be pushing at once (Istio's `PILOT_PUSH_THROTTLE`). A stream holds
    /// its turn from computing a push until the proxy has answered it, or for
    /// `push_ack_timeout`: what is in flight, and so the memory a change of every proxy's
    /// config takes, is bounded by this many pushes rather than by the number of proxies.
    /// Default 32 (Istio's is 100): on bench/xds-scale.sh fewer pushes in flight lowered
    /// peak memory without raising the time to the last ACK.
    pub max_concurrent_pushes: usize,
    /// How long a stream keeps its push turn waiting for the proxy's ACK or NACK.
    pub push_ack_timeout: Duration,
    /// Responses are cut at about this size (a single larger resource travels alone).
    /// tonic keeps, per stream, a buffer the size of the largest message it sent: with
    /// thousands of streams this bounds the server's memory.
    pub max_response_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            type_urls: WEFT_TYPE_URLS.iter().map(|s| s.to_string()).collect(),
            stream_buffer: 1,
            keepalive: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(5),
            max_concurrent_pushes: 32,
            push_ack_timeout: Duration::from_secs(5),
            max_response_bytes: stream::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The delta ADS server. Cheap to clone: clones share the streams and their status.
pub struct XdsServer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for XdsServer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S> {
    source: S,
    type_urls: Arc<[String]>,
    stream_buffer: usize,
    keepalive: Option<Duration>,
    drain_timeout: Duration,
    pushes: Arc<Semaphore>,
    push_ack_timeout: Duration,
    max_response_bytes: usize,
    next_stream: AtomicU64,
    status: Mutex<HashMap<u64, ProxyStatus>>,
    metrics: XdsMetrics,
    /// Set when the server shuts down, so open streams end and the connections can close.
    shutdown: watch::Sender<bool>,
}

/// Why [`XdsServer::serve`] stopped.
#[derive(Debug, thiserror::Error)]
#[error("xDS server: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

impl<S: ResourceSource> XdsServer<S> {
    pub fn new(source: S) -> Self {
        Self::with_config(source, ServerConfig::default())
    }

    pub fn with_config(source: S, config: ServerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                type_urls: config.type_urls.into(),
                stream_buffer: config.stream_buffer.max(1),
                keepalive: config.keepalive,
                drain_timeout: config.drain_timeout,
                pushes: Arc::new(Semaphore::new(config.max_concurrent_pushes.max(1))),
                push_ack_timeout: config.push_ack_timeout,
                max_response_bytes: config.max_response_bytes,
                next_stream: AtomicU64::new(1),
                status: Mutex::new(HashMap::new()),
                metrics: XdsMetrics::default(),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// The resource source this server was built with.
    pub fn source(&self) -> &S {
        &self.shared.source
    }

    /// The `pilot_*` metrics of this server.
    pub fn metrics(&self) -> &XdsMetrics {
        &self.shared.metrics
    }

    /// Every open stream, ordered by node id.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<ProxyStatus> = lock(&self.shared.status).values().cloned().collect();
        all.sort_by(|a, b| (&a.node_id, a.stream_id).cmp(&(&b.node_id, b.stream_id)));
        all
    }

    /// The tonic service, for a caller that builds its own server.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self.clone())
            // A proxy's requests are small; its whole config goes the other way.
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(usize::MAX)
    }

    /// Serves plaintext gRPC on `listener` until `shutdown` completes, then ends every
    /// open stream (proxies see the stream end and reconnect elsewhere or later) and
    /// returns once the connections have closed, or after the drain timeout.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let shared = self.shared.clone();
        let (fired, signalled) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            shared.shutdown.send_replace(true);
            let _ = fired.send(());
        };
        let serving = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(self.shared.keepalive)
            .serve_with_incoming_shutdown(self.service(), TcpListenerStream::new(listener), signal);
        let drain_timeout = self.shared.drain_timeout;
        let deadline = async move {
            match signalled.await {
                Ok(()) => tokio::time::sleep(drain_timeout).await,
                // The server ended on its own; it alone decides what to return.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = serving => result?,
            () = deadline => tracing::warn!(
                "xDS connections still open after the drain timeout; closing them"
            ),
        }
        Ok(())
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<S: ResourceSource> AggregatedDiscoveryService for XdsServer<S> {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "weft serves delta xDS only: use DeltaAggregatedResources",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.shared.stream_buffer);
        let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run_stream(self.shared.clone(), id, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How long the status that ends a stream waits for room in its queue.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(1);

type Outbound = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// One stream from its first request to its end.
async fn run_stream<S: ResourceSource>(
    shared: Arc<Shared<S>>,
    id: u64,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: Outbound,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let first = tokio::select! {
        first = inbound.message() => first,
        () = shutting_down(&mut shutdown) => return,
    };
    let first = match first {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(stream = id, error = %e, "xDS stream ended before its first request");
            return;
        }
    };
    let node = match first.node.clone() {
        Some(node) if !node.id.is_empty() => node,
        _ => {
            let _ = tx.try_send(Err(Status::invalid_argument(
                "the first request of a stream must carry a node with an id",
            )));
            return;
        }
    };
    let span = tracing::info_span!("xds", stream = id, node = %node.id);
    let snapshots = match shared.source.subscribe(&node) {
        Ok(rx) => rx,
        Err(status) => {
            tracing::info!(parent: &span, %status, "xDS subscription refused");
            let _ = tx.try_send(Err(status));
            return;
        }
    };
    tracing::info!(parent: &span, "proxy connected");
    shared.metrics.connected(&proxy_version(&node));
    let mut state = StreamState::new(id, node.id.clone(), shared.type_urls.clone())
        .with_max_response_bytes(shared.max_response_bytes);
    let _registered = Registered {
        shared: &shared,
        id,
        node: &node,
    };
    publish(&shared, &state);
    let end = serve_stream(&shared, &node, &mut state, first, inbound, snapshots, &tx)
        .instrument(span.clone())
        .await;
    match end {
        Ok(()) => tracing::info!(parent: &span, "proxy disconnected"),
        Err(status) if status.code() == tonic::Code::Cancelled => {
            tracing::info!(parent: &span, "proxy disconnected")
        }
        Err(status) => {
            tracing::info!(parent: &span, %status, "xDS stream ended with an error");
            // Wait a little for room behind the responses still queued, not forever: a
            // proxy that stopped reading gets only the end of the stream.
            let _ = tokio::time::timeout(ERROR_SEND_TIMEOUT, tx.send(Err(status))).await;
        }
    }
}

/// The loop of one stream: requests in, responses out, until either side goes away.
/// Returns Err with the status to end the stream with.
async fn serve_stream<S: ResourceSource>(
    shared: &Shared<S>,
    node: &Node,
    state: &mut StreamState,
    first: DeltaDiscoveryRequest,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    mut snapshots: watch::Receiver<Arc<ProxyResources>>,
    tx: &Outbound,
) -> Result<(), Status> {
    let mut shutdown = shared.shutdown.subscribe();
    let mut snapshot = snapshots.borrow_and_update().clone();
    let mut next = Some(first);
    // This stream's push turn, and until when it may keep it waiting for answers.
    let mut turn: Option<(OwnedSemaphorePermit, tokio::time::Instant)> = None;
    // The oldest config change whose responses the proxy has not all ACKed yet.
    let mut converging: Option<Instant> = None;
    loop {
        if let Some(req) = next.take() {
            let outcome = state.on_request(&req)?;
            if let Some(version) = &outcome.acked {
                shared.source.on_ack(node, &req.type_url, version);
                if !state.awaiting_answers()
                    && let Some(since) = converging.take()
                {
                    shared.metrics.converged(since.elapsed());
                }
            }
            if let Some(nack) = &outcome.nacked {
                shared.metrics.rejected(&req.type_url);
                // The change did not converge; a later one that does is measured from then.
                converging = None;
                tracing::warn!(
                    type_url = req.type_url,
                    reason = nack.reason,
                    "proxy NACKed"
                );
                shared.source.on_nack(node, &req.type_url, nack);
            }
            let (responses, started) = if outcome.resend {
                take_turn(shared, &mut turn, &mut shutdown).await?;
                let started = Instant::now();
                (state.plan(&snapshot, Some(&req.type_url)), started)
            } else {
                (Vec::new(), Instant::now())
            };
            publish(shared, state);
            send_all(
                tx,
                responses,
                &snapshot,
                &mut shutdown,
                &shared.metrics,
                started,
            )
            .await?;
        }
        if turn.is_some() && !state.awaiting_answers() {
            turn = None;
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => next = Some(req),
                Ok(None) => return Ok(()),
                Err(status) => {
                    tracing::debug!(%status, "xDS stream read failed");
                    return Ok(());
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("this proxy's configuration was withdrawn"));
                }
                // Waiting for a turn coalesces the snapshots published meanwhile.
                take_turn(shared, &mut turn, &mut shutdown).await?;
                snapshot = snapshots.borrow_and_update().clone();
                let started = Instant::now();
                let responses = state.plan(&snapshot, None);
                if !responses.is_empty()
                    && let Some(at) = snapshot.changed_at()
                {
                    converging = Some(converging.map_or(at, |c| c.min(at)));
                }
                publish(shared, state);
                send_all(tx, responses, &snapshot, &mut shutdown, &shared.metrics, started).await?;
            }
            () = turn_expires(&turn) => {
                tracing::debug!("no answer to a push in time; giving up the push turn");
                turn = None;
            }
            () = shutting_down(&mut shutdown) => return Err(shutdown_status()),
        }
    }
}

/// Waits for a push turn unless the stream holds one already.
async fn take_turn<S>(
    shared: &Shared<S>,
    turn: &mut Option<(OwnedSemaphorePermit, tokio::time::Instant)>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Status> {
    if turn.is_none() {
        let permit = tokio::select! {
            permit = shared.pushes.clone().acquire_owned() => permit
                .map_err(|_| shutdown_status())?,
            () = shutting_down(shutdown) => return Err(shutdown_status()),
        };
        *turn = Some((
            permit,
            tokio::time::Instant::now() + shared.push_ack_timeout,
        ));
    }
    Ok(())
}

/// Resolves when a held turn's time is up; never when no turn is held.
async fn turn_expires(turn: &Option<(OwnedSemaphorePermit, tokio::time::Instant)>) {
    match turn {
        Some((_, until)) => tokio::time::sleep_until(*until).await,
        None => std::future::pending().await,
    }
}

/// Sends in order, waiting as long as the client is slow, but not past shutdown; each
/// response's resources are copied from `snapshot` only when there is room to send it.
/// Err ends the stream: with a status to send, or with none when the client has gone.
/// Each type's push is counted, and timed from `started`, when its last response is handed
/// to the stream.
async fn send_all(
    tx: &Outbound,
    responses: Vec<Outgoing>,
    snapshot: &ProxyResources,
    shutdown: &mut watch::Receiver<bool>,
    metrics: &XdsMetrics,
    started: Instant,
) -> Result<(), Status> {
    let last_of_type: Vec<bool> = (0..responses.len())
        .map(|i| {
            responses[i + 1..]
                .iter()
                .all(|later| later.type_url() != responses[i].type_url())
        })
        .collect();
    for (r, last) in responses.into_iter().zip(last_of_type) {
        let type_url = r.type_url().to_owned();
        let (resources, removed) = r.counts();
        tracing::debug!(
            type_url = r.type_url(),
            nonce = r.nonce(),
            resources,
            removed,
            "sending"
        );
        tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(permit) => permit.send(Ok(r.fill(snapshot))),
                Err(_) => return Err(Status::cancelled("the proxy went away")),
            },
            () = shutting_down(shutdown) => return Err(shutdown_status()),
        }
        if last {
            metrics.pushed(&type_url, started.elapsed());
        }
    }
    Ok(())
}

async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the server (and its sender) is gone: that is shutdown too.
    drop(shutdown.wait_for(|stop| *stop).await);
}

fn shutdown_status() -> Status {
    Status::unavailable("the control plane is shutting down")
}

fn publish<S>(shared: &Shared<S>, state: &StreamState) {
    let status = state.status();
    lock(&shared.status).insert(status.stream_id, status.clone());
}

/// A stream's entry in the status table, removed when the stream ends however it ends.
struct Registered<'a, S: ResourceSource> {
    shared: &'a Shared<S>,
    id: u64,
    node: &'a Node,
}

impl<S: ResourceSource> Drop for Registered<'_, S> {
    fn drop(&mut self) {
        lock(&self.shared.status).remove(&self.id);
        self.shared.metrics.disconnected(&proxy_version(self.node));
        self.shared.source.on_disconnect(self.node);
    }
}

/// The version a proxy reports (`Node.user_agent_version`), empty when it sent none.
fn proxy_version(node: &Node) -> String {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        _ => String::new(),
    }
}

/// The status table is plain data; a panic elsewhere while it was held leaves nothing
/// half-written that matters, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
