//! The delta ADS client: one stream to the control plane, kept up for the life of the
//! proxy.
//!
//! It subscribes (wildcard) to each configured type URL, hands every response to a
//! [`ConfigHandler`] together with the full set of that type the response leads to, and
//! ACKs it or NACKs it with the handler's reason. It remembers what the handler accepted,
//! so after a reconnect it tells the server (`initial_resource_versions`) and is sent only
//! what changed. While disconnected it does nothing: the proxy keeps serving the config it
//! last accepted. Reconnects wait a jittered, exponentially growing delay.

mod backoff;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

pub use backoff::Backoff;
use backoff::Delays;

use crate::resource::{VersionedResource, WEFT_TYPE_URLS};

/// gRPC `INVALID_ARGUMENT`, the code a NACK carries.
const INVALID_ARGUMENT: i32 = 3;

/// What the proxy does with configuration: implemented by the proxy.
pub trait ConfigHandler: Send + 'static {
    /// Applies one response. `Err(reason)` NACKs it: the client then keeps its previous set
    /// of this type and reports the reason to the control plane. A handler that applies the
    /// good resources and rejects the bad ones alone still returns `Err`, naming them.
    ///
    /// A future, so that a handler can do heavy work (building its config) off the runtime
    /// that serves traffic and await it; the client answers once it resolves.
    fn apply(&mut self, update: &Update<'_>) -> impl Future<Output = Result<(), String>> + Send;

    /// The stream to the control plane came up (true) or went down (false).
    fn connection_changed(&mut self, _connected: bool) {}
}

/// One response, for one type URL.
#[derive(Debug)]
pub struct Update<'a> {
    pub type_url: &'a str,
    /// The server's version of the whole type (a content hash).
    pub system_version: &'a str,
    /// Resources added or changed by this response.
    pub changed: &'a [Resource],
    /// Names removed by this response.
    pub removed: &'a [String],
    /// Every resource of this type once the response is applied, by name.
    pub resources: &'a BTreeMap<String, VersionedResource>,
}

/// Where to connect and who to say we are.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The control plane's xDS address, `http://HOST:15010`.
    pub address: String,
    /// Sent in each subscribing request; `id` is Istio's
    /// `sidecar~IP~name.namespace~namespace.svc.cluster.local` form.
    pub node: Node,
    /// Type URLs to subscribe to (wildcard), in the order subscribed.
    pub type_urls: Vec<String>,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive pings, to notice a control plane that vanished without closing.
    pub keepalive: Option<Duration>,
    /// Largest response accepted; a sidecar that sees a large mesh gets large responses.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    pub fn new(address: impl Into<String>, node: Node) -> Self {
        Self {
            address: address.into(),
            node,
            type_urls: WEFT_TYPE_URLS.iter().map(|s| s.to_string()).collect(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(30)),
            max_response_bytes: 256 << 20,
        }
    }
}

/// Why one connection ended (logged; the client reconnects after every one).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("invalid control plane address {0:?}")]
    Address(String),
    #[error("connecting: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the control plane ended the stream")]
    Ended,
}

/// The xDS client. Build it, take the signals it offers, then [`run`](Self::run) it.
pub struct XdsClient<H> {
    config: ClientConfig,
    handler: H,
    /// What the handler accepted, per type URL.
    accepted: HashMap<String, BTreeMap<String, VersionedResource>>,
    /// Type URLs that have had a response handled (accepted or not) since start.
    seen: HashSet<String>,
    ready: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    delays: Delays,
}

impl<H: ConfigHandler> XdsClient<H> {
    pub fn new(config: ClientConfig, handler: H) -> Self {
        let delays = Delays::new(config.backoff, fastrand::Rng::new());
        Self {
            config,
            handler,
            accepted: HashMap::new(),
            seen: HashSet::new(),
            ready: watch::channel(false).0,
            connected: watch::channel(false).0,
            delays,
        }
    }

    /// Becomes true once every subscribed type has had a first response handled (even a
    /// rejected one, as Envoy's initialization does: a bad resource must not keep a proxy
    /// unready forever), and stays true across reconnects.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// True while a stream to the control plane is up.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Runs until `shutdown` completes, reconnecting whenever the stream ends; returns the
    /// handler.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> H {
        tokio::pin!(shutdown);
        loop {
            let ended = tokio::select! {
                e = self.connect_and_stream() => e,
                () = &mut shutdown => break,
            };
            if self.connected.send_replace(false) {
                self.handler.connection_changed(false);
            }
            let delay = self.delays.next_delay();
            tracing::warn!(
                address = self.config.address,
                error = %ended,
                retry_in = ?delay,
                "xDS connection lost; serving the last accepted config"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => break,
            }
        }
        if self.connected.send_replace(false) {
            self.handler.connection_changed(false);
        }
        self.handler
    }

    /// One connection, from connect to its end.
    async fn connect_and_stream(&mut self) -> ConnectionError {
        match self.stream().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn stream(&mut self) -> Result<std::convert::Infallible, ConnectionError> {
        let mut endpoint = Endpoint::from_shared(self.config.address.clone())
            .map_err(|_| ConnectionError::Address(self.config.address.clone()))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = self.config.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_while_idle(true);
        }
        let channel = endpoint.connect().await.map_err(ConnectionError::Connect)?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(self.config.max_response_bytes);

        // Requests are answers to responses, one at a time, plus the initial subscriptions.
        let (tx, rx) = mpsc::channel(self.config.type_urls.len() + 4);
        for type_url in &self.config.type_urls {
            let initial_resource_versions = self
                .accepted
                .get(type_url)
                .into_iter()
                .flatten()
                .map(|(name, r)| (name.clone(), r.version.clone()))
                .collect();
            let req = DeltaDiscoveryRequest {
                node: Some(self.config.node.clone()),
                type_url: type_url.clone(),
                initial_resource_versions,
                ..Default::default()
            };
            tx.send(req).await.map_err(|_| ConnectionError::Ended)?;
        }
        let mut inbound = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        if !self.connected.send_replace(true) {
            self.handler.connection_changed(true);
        }
        tracing::info!(address = self.config.address, "xDS stream up");
        loop {
            let Some(response) = inbound.message().await? else {
                return Err(ConnectionError::Ended);
            };
            // The control plane answered: the next loss starts the backoff afresh.
            self.delays.reset();
            let answer = self.handle(response).await;
            tx.send(answer).await.map_err(|_| ConnectionError::Ended)?;
        }
    }

    /// Applies one response and builds its ACK or NACK.
    async fn handle(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let result = self.apply(&response).await;
        if let Err(reason) = &result {
            tracing::warn!(
                type_url = response.type_url,
                nonce = response.nonce,
                reason,
                "rejecting xDS response"
            );
        }
        if self.config.type_urls.contains(&response.type_url) {
            self.seen.insert(response.type_url.clone());
            if !*self.ready.borrow() && self.config.type_urls.iter().all(|t| self.seen.contains(t))
            {
                tracing::info!("first full xDS config received");
                self.ready.send_replace(true);
            }
        }
        DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail: result.err().map(|message| RpcStatus {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }

    async fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Result<(), String> {
        let type_url = response.type_url.as_str();
        if !self.config.type_urls.iter().any(|t| t == type_url) {
            return Err(format!("not subscribed to type URL {type_url:?}"));
        }
        for r in &response.resources {
            check_resource(type_url, r)?;
        }
        let set = self.accepted.entry(type_url.to_owned()).or_default();
        // Apply in place and undo on rejection, rather than copying the whole set.
        let mut undo: Vec<(String, Option<VersionedResource>)> = Vec::new();
        for r in &response.resources {
            let Some(any) = &r.resource else { continue };
            let prev = set.insert(
                r.name.clone(),
                VersionedResource {
                    version: r.version.clone(),
                    resource: any.clone(),
                },
            );
            undo.push((r.name.clone(), prev));
        }
        for name in &response.removed_resources {
            if let Some(prev) = set.remove(name) {
                undo.push((name.clone(), Some(prev)));
            }
        }
        let update = Update {
            type_url,
            system_version: &response.system_version_info,
            changed: &response.resources,
            removed: &response.removed_resources,
            resources: set,
        };
        let result = self.handler.apply(&update).await;
        if result.is_err() {
            for (name, prev) in undo.into_iter().rev() {
                match prev {
                    Some(p) => set.insert(name, p),
                    None => set.remove(&name),
                };
            }
        }
        result
    }
}

/// A resource the transport can carry at all; what it means is the handler's business.
fn check_resource(type_url: &str, r: &Resource) -> Result<(), String> {
    if r.name.is_empty() {
        return Err("a resource has no name".to_owned());
    }
    match &r.resource {
        None => Err(format!("resource {:?} has no body", r.name)),
        Some(any) if any.type_url != type_url => Err(format!(
            "resource {:?} is a {:?} in a response of {type_url:?}",
            r.name, any.type_url
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Any;

    use super::*;
    use crate::proto;
    use crate::resource::{CLUSTER_TYPE_URL, LISTENER_TYPE_URL, pack};

    /// Accepts everything except resources whose name starts with "bad"; records the full
    /// set it was shown each time.
    #[derive(Default)]
    struct Recorder {
        shown: Vec<Vec<String>>,
    }

    impl ConfigHandler for Recorder {
        async fn apply(&mut self, update: &Update<'_>) -> Result<(), String> {
            self.shown.push(update.resources.keys().cloned().collect());
            match update.changed.iter().find(|r| r.name.starts_with("bad")) {
                Some(r) => Err(format!("{} is bad", r.name)),
                None => Ok(()),
            }
        }
    }

    fn client() -> XdsClient<Recorder> {
        let node = Node {
            id: "sidecar~t".into(),
            ..Default::default()
        };
        XdsClient::new(
            ClientConfig::new("http://127.0.0.1:1", node),
            Recorder::default(),
        )
    }

    fn resource(name: &str) -> Resource {
        Resource {
            name: name.into(),
            version: format!("v-{name}"),
            resource: Some(pack(&proto::Cluster {
                name: name.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn response(
        type_url: &str,
        nonce: &str,
        add: &[&str],
        remove: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources: add.iter().map(|n| resource(n)).collect(),
            removed_resources: remove.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn held(c: &XdsClient<Recorder>, type_url: &str) -> Vec<String> {
        c.accepted
            .get(type_url)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn ack_applies_and_nack_keeps_the_previous_set() {
        let mut c = client();
        let ack = c
            .handle(response(CLUSTER_TYPE_URL, "1", &["a", "b"], &[]))
            .await;
        assert_eq!((ack.response_nonce.as_str(), ack.error_detail), ("1", None));
        assert_eq!(held(&c, CLUSTER_TYPE_URL), ["a", "b"]);

        let nack = c
            .handle(response(CLUSTER_TYPE_URL, "2", &["bad", "c"], &["a"]))
            .await;
        assert_eq!(nack.response_nonce, "2");
        let detail = nack.error_detail.expect("a NACK");
        assert_eq!((detail.code, detail.message.as_str()), (3, "bad is bad"));
        // The handler saw the set the response would lead to; the client kept the old one.
        assert_eq!(c.handler.shown.last().unwrap(), &["b", "bad", "c"]);
        assert_eq!(held(&c, CLUSTER_TYPE_URL), ["a", "b"]);
        assert_eq!(c.accepted[CLUSTER_TYPE_URL]["a"].version, "v-a");

        let ack = c
            .handle(response(CLUSTER_TYPE_URL, "3", &[], &["a", "never-had"]))
            .await;
        assert!(ack.error_detail.is_none());
        assert_eq!(held(&c, CLUSTER_TYPE_URL), ["b"]);
    }

    #[tokio::test]
    async fn malformed_responses_are_nacked_without_the_handler() {
        let mut c = client();
        let cases = [
            (
                response("type.googleapis.com/x.Y", "1", &["a"], &[]),
                "not subscribed",
            ),
            (
                DeltaDiscoveryResponse {
                    resources: vec![Resource {
                        name: "a".into(),
                        ..Default::default()
                    }],
                    ..response(CLUSTER_TYPE_URL, "2", &[], &[])
                },
                "no body",
            ),
            (
                DeltaDiscoveryResponse {
                    resources: vec![Resource {
                        name: "a".into(),
                        resource: Some(Any {
                            type_url: LISTENER_TYPE_URL.into(),
                            value: vec![],
                        }),
                        ..Default::default()
                    }],
                    ..response(CLUSTER_TYPE_URL, "3", &[], &[])
                },
                "in a response of",
            ),
            (response(CLUSTER_TYPE_URL, "4", &[""], &[]), "no name"),
        ];
        for (r, want) in cases {
            let nonce = r.nonce.clone();
            let nack = c.handle(r).await;
            assert_eq!(nack.response_nonce, nonce);
            let msg = nack.error_detail.expect("NACK").message;
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        }
        assert!(c.handler.shown.is_empty());
        assert!(held(&c, CLUSTER_TYPE_URL).is_empty());
    }

    #[tokio::test]
    async fn ready_after_every_type_answered_even_if_rejected() {
        let mut c = client();
        let ready = c.ready();
        c.handle(response(CLUSTER_TYPE_URL, "1", &["bad"], &[]))
            .await;
        c.handle(response("type.googleapis.com/x.Y", "2", &[], &[]))
            .await;
        c.handle(response(LISTENER_TYPE_URL, "3", &[], &[])).await;
        assert!(!*ready.borrow());
        c.handle(response(
            crate::resource::ROUTE_CONFIGURATION_TYPE_URL,
            "4",
            &[],
            &[],
        ))
        .await;
        assert!(!*ready.borrow());
        c.handle(response(crate::resource::SECRET_TYPE_URL, "5", &[], &[]))
            .await;
        assert!(*ready.borrow());
    }

    /// With the clock paused, the reconnect loop's waits can be read off the virtual clock:
    /// a control plane that accepts and drops every connection sees attempts spaced by the
    /// backoff, growing to the cap, and none while the proxy is shut down.
    #[tokio::test(start_paused = true)]
    async fn reconnects_back_off_to_the_cap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (attempt_tx, mut attempts) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = attempt_tx.send(tokio::time::Instant::now());
                drop(conn);
            }
        });
        let mut config = ClientConfig::new(
            format!("http://{addr}"),
            Node {
                id: "sidecar~b".into(),
                ..Default::default()
            },
        );
        config.backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(XdsClient::new(config, Recorder::default()).run(async {
            let _ = stopped.await;
        }));
        // tonic's channel makes a second connection at once when the first breaks before
        // the stream is up, so one attempt may show as two accepts in the same instant.
        let mut times: Vec<tokio::time::Instant> = Vec::new();
        while times.len() < 10 {
            let t = attempts.recv().await.unwrap();
            if times
                .last()
                .is_none_or(|last| t - *last > Duration::from_millis(10))
            {
                times.push(t);
            }
        }
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let steps_ms = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (gap, step) in gaps.iter().zip(steps_ms) {
            let step = Duration::from_millis(step);
            // The connection attempt itself may add a little virtual time.
            assert!(
                *gap >= step / 2 && *gap <= step + Duration::from_millis(50),
                "gap {gap:?} for step {step:?}: {gaps:?}"
            );
        }
        stop.send(()).unwrap();
        run.await.unwrap();
    }
}
