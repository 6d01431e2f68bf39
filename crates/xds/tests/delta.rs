//! The delta xDS transport end to end: a real server and real clients on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use weft_xds::client::{Backoff, ClientConfig, ConfigHandler, Update, XdsClient};
use weft_xds::envoy::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds::envoy::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use weft_xds::proto;
use weft_xds::resource::{
    CLUSTER_TYPE_URL, LISTENER_TYPE_URL, ProxyResources, ROUTE_CONFIGURATION_TYPE_URL,
    SECRET_TYPE_URL, WEFT_TYPE_URLS, unpack,
};
use weft_xds::server::{Nack, ProxyStatus, ResourceSource, ServerConfig, XdsServer};

/// Every wait in these tests is bounded by this; none should come near it.
const LIMIT: Duration = Duration::from_secs(10);

// ---- the control plane side ----

/// A control plane in miniature: one watch channel per node id, created on demand.
#[derive(Default, Clone)]
struct Source {
    nodes: Arc<Mutex<HashMap<String, watch::Sender<Arc<ProxyResources>>>>>,
    nacks: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Source {
    fn sender(&self, node: &str) -> watch::Sender<Arc<ProxyResources>> {
        self.nodes
            .lock()
            .unwrap()
            .entry(node.to_owned())
            .or_insert_with(|| watch::channel(Arc::new(ProxyResources::new())).0)
            .clone()
    }

    fn publish(&self, node: &str, resources: ProxyResources) {
        self.sender(node).send_replace(Arc::new(resources));
    }

    /// Ends the node's stream (the server sees its channel closed) and gives the node a
    /// fresh channel holding `resources`, which it finds when it reconnects.
    fn withdraw(&self, node: &str, resources: ProxyResources) {
        let fresh = watch::channel(Arc::new(resources)).0;
        self.nodes.lock().unwrap().insert(node.to_owned(), fresh);
    }
}

impl ResourceSource for Source {
    fn subscribe(&self, node: &Node) -> Result<watch::Receiver<Arc<ProxyResources>>, Status> {
        if node.id.starts_with("refused") {
            return Err(Status::permission_denied("node not allowed"));
        }
        Ok(self.sender(&node.id).subscribe())
    }

    fn on_nack(&self, node: &Node, type_url: &str, nack: &Nack) {
        self.nacks.lock().unwrap().push((
            node.id.clone(),
            type_url.to_owned(),
            nack.reason.clone(),
        ));
    }
}

struct ControlPlane {
    addr: SocketAddr,
    server: XdsServer<Source>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    async fn start(source: Source) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(source, listener)
    }

    fn start_on(source: Source, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let server = XdsServer::with_config(
            source,
            ServerConfig {
                drain_timeout: Duration::from_millis(500),
                ..ServerConfig::default()
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = server.clone();
        let done = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            server,
            stop: Some(stop),
            done,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(LIMIT, self.done)
            .await
            .expect("server stops")
            .unwrap();
    }

    /// Waits until the status of `node` satisfies `f`.
    async fn wait_status(&self, node: &str, f: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Some(s) = self
                .server
                .status()
                .into_iter()
                .find(|s| s.node_id == node && f(s))
            {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "status of {node} never matched: {:#?}",
                self.server.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---- the proxy side ----

/// What a handler saw of one response.
#[derive(Debug, Clone)]
struct Seen {
    type_url: String,
    changed: Vec<String>,
    removed: Vec<String>,
    all: Vec<String>,
    accepted: bool,
}

/// A proxy in miniature: decodes what arrives and rejects clusters named `bad*`.
struct Handler {
    seen: mpsc::UnboundedSender<Seen>,
}

impl ConfigHandler for Handler {
    async fn apply(&mut self, update: &Update<'_>) -> Result<(), String> {
        let mut result = Ok(());
        for r in update.changed {
            let Some(any) = &r.resource else { continue };
            let decoded = match update.type_url {
                CLUSTER_TYPE_URL => unpack::<proto::Cluster>(any).map(|c| c.name),
                ROUTE_CONFIGURATION_TYPE_URL => {
                    unpack::<proto::RouteConfiguration>(any).map(|c| c.name)
                }
                LISTENER_TYPE_URL => unpack::<proto::Listener>(any).map(|c| c.name),
                other => return Err(format!("unexpected {other}")),
            };
            match decoded {
                Ok(name) if name.starts_with("bad") => {
                    result = Err(format!("cluster {name}: rejected by the test proxy"));
                }
                Ok(_) => {}
                Err(e) => result = Err(e.to_string()),
            }
        }
        let _ = self.seen.send(Seen {
            type_url: update.type_url.to_owned(),
            changed: update.changed.iter().map(|r| r.name.clone()).collect(),
            removed: update.removed.to_vec(),
            all: update.resources.keys().cloned().collect(),
            accepted: result.is_ok(),
        });
        result
    }
}

struct Proxy {
    seen: mpsc::UnboundedReceiver<Seen>,
    ready: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    fn start(url: String, node_id: &str) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let node = Node {
            id: node_id.to_owned(),
            ..Default::default()
        };
        let mut config = ClientConfig::new(url, node);
        config.backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        };
        let client = XdsClient::new(config, Handler { seen: tx });
        let ready = client.ready();
        let connected = client.connected();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(client.run(async {
            let _ = stopped.await;
        }));
        Self {
            seen,
            ready,
            connected,
            stop: Some(stop),
        }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(LIMIT, self.seen.recv())
            .await
            .expect("an update arrives")
            .expect("client alive")
    }

    /// The next update of `type_url`, skipping others.
    async fn next_of(&mut self, type_url: &str) -> Seen {
        loop {
            let s = self.next().await;
            if s.type_url == type_url {
                return s;
            }
        }
    }

    async fn wait_ready(&mut self) {
        tokio::time::timeout(LIMIT, self.ready.wait_for(|r| *r))
            .await
            .expect("ready in time")
            .expect("client alive");
    }

    /// Nothing more arrives for a while (the server sends nothing it does not have to).
    async fn assert_quiet(&mut self) {
        if let Ok(Some(s)) =
            tokio::time::timeout(Duration::from_millis(200), self.seen.recv()).await
        {
            panic!("unexpected update {s:?}");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn cluster(name: &str, endpoint: &str) -> proto::Cluster {
    proto::Cluster {
        name: name.into(),
        endpoints: vec![proto::Endpoint {
            address: endpoint.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn config(clusters: &[proto::Cluster]) -> ProxyResources {
    let mut r = ProxyResources::new();
    for c in clusters {
        r.insert(c);
    }
    r.insert(&proto::RouteConfiguration {
        name: "outbound".into(),
        ..Default::default()
    });
    r.insert(&proto::Listener {
        name: "outbound".into(),
        address: "127.0.0.2:15001".into(),
        ..Default::default()
    });
    r
}

/// The three responses of a first connection, in the server's order.
async fn initial(proxy: &mut Proxy) -> Vec<Seen> {
    let mut got = Vec::new();
    for _ in WEFT_TYPE_URLS {
        got.push(proxy.next().await);
    }
    let order: Vec<&str> = got.iter().map(|s| s.type_url.as_str()).collect();
    assert_eq!(order, WEFT_TYPE_URLS);
    got
}

// ---- tests ----

#[tokio::test]
async fn initial_push_then_only_what_changed() {
    let source = Source::default();
    source.publish(
        "sidecar~a",
        config(&[cluster("a", "127.0.0.3:80"), cluster("b", "127.0.0.4:80")]),
    );
    let cp = ControlPlane::start(source.clone()).await;
    let mut proxy = Proxy::start(cp.url(), "sidecar~a");

    let first = initial(&mut proxy).await;
    // No secrets: an empty answer first.
    assert!(first[0].changed.is_empty());
    assert_eq!(first[1].changed, ["a", "b"]);
    assert_eq!(first[2].changed, ["outbound"]);
    assert_eq!(first[3].changed, ["outbound"]);
    assert!(first.iter().all(|s| s.accepted && s.removed.is_empty()));
    proxy.wait_ready().await;

    // b's endpoint changes: only b is sent.
    source.publish(
        "sidecar~a",
        config(&[cluster("a", "127.0.0.3:80"), cluster("b", "127.0.0.5:80")]),
    );
    let s = proxy.next().await;
    assert_eq!(s.type_url, CLUSTER_TYPE_URL);
    assert_eq!(s.changed, ["b"]);
    assert!(s.removed.is_empty());
    assert_eq!(s.all, ["a", "b"]);
    proxy.assert_quiet().await;

    // a is removed.
    source.publish("sidecar~a", config(&[cluster("b", "127.0.0.5:80")]));
    let s = proxy.next().await;
    assert_eq!(
        (s.changed.len(), s.removed.as_slice()),
        (0, &["a".to_string()][..])
    );
    assert_eq!(s.all, ["b"]);
    proxy.assert_quiet().await;

    // The same content published again sends nothing.
    source.publish("sidecar~a", config(&[cluster("b", "127.0.0.5:80")]));
    proxy.assert_quiet().await;

    let status = cp
        .wait_status("sidecar~a", |s| s.types.values().all(|t| t.in_sync()))
        .await;
    assert_eq!(status.types.len(), 4);
    cp.stop().await;
}

#[tokio::test]
async fn empty_config_still_makes_a_proxy_ready() {
    let source = Source::default();
    let cp = ControlPlane::start(source.clone()).await;
    let mut proxy = Proxy::start(cp.url(), "gateway~empty");
    let first = initial(&mut proxy).await;
    assert!(first.iter().all(|s| s.changed.is_empty() && s.accepted));
    proxy.wait_ready().await;
    cp.stop().await;
}

#[tokio::test]
async fn nack_reason_shows_in_status_and_the_acked_version_stays() {
    let source = Source::default();
    source.publish("sidecar~n", config(&[cluster("a", "127.0.0.3:80")]));
    let cp = ControlPlane::start(source.clone()).await;
    let mut proxy = Proxy::start(cp.url(), "sidecar~n");
    initial(&mut proxy).await;
    let good = cp
        .wait_status("sidecar~n", |s| s.types.values().all(|t| t.in_sync()))
        .await;
    let good_version = good.types[CLUSTER_TYPE_URL].acked_version.clone().unwrap();

    source.publish(
        "sidecar~n",
        config(&[
            cluster("a", "127.0.0.3:80"),
            cluster("bad-1", "127.0.0.9:80"),
        ]),
    );
    let s = proxy.next().await;
    assert_eq!(
        (s.changed.as_slice(), s.accepted),
        (&["bad-1".to_string()][..], false)
    );
    let status = cp
        .wait_status("sidecar~n", |s| {
            s.types[CLUSTER_TYPE_URL].last_nack.is_some()
        })
        .await;
    let t = &status.types[CLUSTER_TYPE_URL];
    let nack = t.last_nack.as_ref().unwrap();
    assert_eq!(nack.reason, "cluster bad-1: rejected by the test proxy");
    assert_eq!(t.acked_version.as_deref(), Some(good_version.as_str()));
    assert_ne!(t.sent_version.as_deref(), Some(good_version.as_str()));
    assert!(!t.in_sync());
    assert!(status.types[LISTENER_TYPE_URL].in_sync());
    assert_eq!(
        source.nacks.lock().unwrap().as_slice(),
        [(
            "sidecar~n".to_string(),
            CLUSTER_TYPE_URL.to_string(),
            nack.reason.clone()
        )]
    );
    // The rejected set is not pushed again in a loop.
    proxy.assert_quiet().await;

    // Fixed: the good cluster arrives, is ACKed, the NACK clears.
    source.publish(
        "sidecar~n",
        config(&[cluster("a", "127.0.0.3:80"), cluster("b", "127.0.0.9:80")]),
    );
    let s = proxy.next().await;
    assert!(s.accepted);
    assert_eq!(s.all, ["a", "b"]);
    let status = cp
        .wait_status("sidecar~n", |s| s.types[CLUSTER_TYPE_URL].in_sync())
        .await;
    assert!(status.types[CLUSTER_TYPE_URL].last_nack.is_none());
    cp.stop().await;
}

/// A raw ADS stream that subscribes to everything and then never reads.
async fn stuck_client(
    url: String,
    node: &str,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    tonic::Streaming<DeltaDiscoveryResponse>,
) {
    let mut client = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    for t in WEFT_TYPE_URLS {
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: node.into(),
                ..Default::default()
            }),
            type_url: t.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

/// A cluster of about `kib` KiB.
fn big_cluster(name: &str, kib: usize, generation: usize) -> proto::Cluster {
    proto::Cluster {
        name: name.into(),
        endpoints: (0..kib * 64)
            .map(|i| proto::Endpoint {
                address: format!("10.{}.{}.{}:80", generation % 250, i / 250 % 250, i % 250),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_proxy_that_never_reads_does_not_block_another() {
    let source = Source::default();
    let cp = ControlPlane::start(source.clone()).await;
    let (_keep, _stuck) = stuck_client(cp.url(), "sidecar~stuck").await;
    let mut proxy = Proxy::start(cp.url(), "sidecar~live");
    initial(&mut proxy).await;
    cp.wait_status("sidecar~stuck", |s| s.types.len() == 4)
        .await;

    // Far more than the stuck stream's buffers and HTTP/2 windows can take: its task ends
    // up waiting on a full channel, and must wait alone.
    for generation in 0..12 {
        source.publish(
            "sidecar~stuck",
            config(&[big_cluster("huge", 512, generation)]),
        );
        source.publish(
            "sidecar~live",
            config(&[cluster("a", &format!("127.0.0.{}:80", generation + 1))]),
        );
        let s = proxy.next_of(CLUSTER_TYPE_URL).await;
        assert_eq!(s.changed, ["a"]);
        tokio::task::yield_now().await;
    }
    // The stuck stream stopped taking snapshots: its last computed version is not the
    // source's current one.
    let stuck = cp.wait_status("sidecar~stuck", |_| true).await;
    let current = source
        .sender("sidecar~stuck")
        .borrow()
        .type_version(CLUSTER_TYPE_URL);
    assert_ne!(
        stuck.types[CLUSTER_TYPE_URL].latest_version.as_deref(),
        Some(current.as_str())
    );
    cp.stop().await;
}

#[tokio::test]
async fn reconnect_sends_initial_versions_and_gets_only_what_changed() {
    let source = Source::default();
    source.publish(
        "sidecar~r",
        config(&[cluster("a", "127.0.0.3:80"), cluster("b", "127.0.0.4:80")]),
    );
    let cp = ControlPlane::start(source.clone()).await;
    let mut proxy = Proxy::start(cp.url(), "sidecar~r");
    initial(&mut proxy).await;
    proxy.wait_ready().await;
    let first_stream = cp.wait_status("sidecar~r", |_| true).await.stream_id;

    // The stream ends; while the proxy is away, b changes and a is deleted.
    source.withdraw("sidecar~r", config(&[cluster("b", "127.0.0.9:80")]));
    let back = cp
        .wait_status("sidecar~r", |s| {
            s.stream_id != first_stream && s.types.values().all(|t| t.in_sync())
        })
        .await;
    assert_eq!(back.types.len(), 4);
    // Clusters: the change, then (in a response of its own, after every update) the
    // removal; unchanged types get an empty answer, which also tells the proxy it is in
    // sync.
    let mut again = Vec::new();
    for _ in 0..5 {
        again.push(proxy.next().await);
    }
    let secrets = again.remove(0);
    assert_eq!(secrets.type_url, SECRET_TYPE_URL);
    assert!(secrets.changed.is_empty() && secrets.removed.is_empty());
    let order: Vec<&str> = again.iter().map(|s| s.type_url.as_str()).collect();
    assert_eq!(
        order,
        [
            CLUSTER_TYPE_URL,
            CLUSTER_TYPE_URL,
            ROUTE_CONFIGURATION_TYPE_URL,
            LISTENER_TYPE_URL
        ]
    );
    assert_eq!(
        (again[0].changed.as_slice(), again[0].removed.len()),
        (&["b".to_string()][..], 0)
    );
    assert_eq!(
        (again[1].changed.len(), again[1].removed.as_slice()),
        (0, &["a".to_string()][..])
    );
    assert!(again[2].changed.is_empty() && again[2].removed.is_empty());
    assert!(again[3].changed.is_empty() && again[3].removed.is_empty());
    assert_eq!(again[2].all, ["outbound"]);
    proxy.assert_quiet().await;
    cp.stop().await;
}

#[tokio::test]
async fn control_plane_restart_keeps_the_config_and_resyncs() {
    let source = Source::default();
    source.publish("sidecar~x", config(&[cluster("a", "127.0.0.3:80")]));
    let cp = ControlPlane::start(source.clone()).await;
    let addr = cp.addr;
    let mut proxy = Proxy::start(cp.url(), "sidecar~x");
    initial(&mut proxy).await;
    tokio::time::timeout(LIMIT, proxy.connected.wait_for(|c| *c))
        .await
        .unwrap()
        .unwrap();

    cp.stop().await;
    tokio::time::timeout(LIMIT, proxy.connected.wait_for(|c| !*c))
        .await
        .unwrap()
        .unwrap();
    assert!(
        *proxy.ready.borrow(),
        "readiness survives a lost control plane"
    );

    source.publish(
        "sidecar~x",
        config(&[cluster("a", "127.0.0.3:80"), cluster("c", "127.0.0.6:80")]),
    );
    let listener = TcpListener::bind(addr).await.unwrap();
    let cp = ControlPlane::start_on(source.clone(), listener);
    let s = proxy.next_of(CLUSTER_TYPE_URL).await;
    assert_eq!(s.changed, ["c"]);
    assert_eq!(s.all, ["a", "c"]);
    cp.stop().await;
}

async fn raw_stream_error(url: String, requests: Vec<DeltaDiscoveryRequest>) -> Status {
    let mut client = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let stream = tokio_stream::iter(requests);
    let result = async {
        let mut inbound = client
            .delta_aggregated_resources(stream)
            .await?
            .into_inner();
        while inbound.message().await?.is_some() {}
        Ok::<(), Status>(())
    };
    tokio::time::timeout(LIMIT, result)
        .await
        .expect("the server answers")
        .expect_err("the stream fails")
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let source = Source::default();
    let cp = ControlPlane::start(source.clone()).await;
    let node = Some(Node {
        id: "sidecar~bad".into(),
        ..Default::default()
    });

    let err = raw_stream_error(
        cp.url(),
        vec![DeltaDiscoveryRequest {
            node: node.clone(),
            type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown type URL"), "{err:?}");

    // An unknown type URL later in a healthy stream ends it the same way.
    let err = raw_stream_error(
        cp.url(),
        vec![
            DeltaDiscoveryRequest {
                node: node.clone(),
                type_url: CLUSTER_TYPE_URL.into(),
                ..Default::default()
            },
            DeltaDiscoveryRequest {
                type_url: "\u{0}garbage\u{fffd}".into(),
                response_nonce: "no-such-nonce".into(),
                ..Default::default()
            },
        ],
    )
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = raw_stream_error(
        cp.url(),
        vec![DeltaDiscoveryRequest {
            type_url: CLUSTER_TYPE_URL.into(),
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node"), "{err:?}");

    let err = raw_stream_error(
        cp.url(),
        vec![DeltaDiscoveryRequest {
            node: Some(Node {
                id: "refused~1".into(),
                ..Default::default()
            }),
            type_url: CLUSTER_TYPE_URL.into(),
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Still serving after all that, and nothing left behind in status.
    let mut proxy = Proxy::start(cp.url(), "sidecar~ok");
    initial(&mut proxy).await;
    let all = cp.server.status();
    assert_eq!(all.len(), 1, "{all:#?}");
    cp.stop().await;
}

#[tokio::test]
async fn state_of_the_world_is_refused_plainly() {
    let cp = ControlPlane::start(Source::default()).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(cp.url())
        .await
        .unwrap();
    let err = client
        .stream_aggregated_resources(tokio_stream::iter(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    cp.stop().await;
}

/// The value of the sample `line_start` (metric name and labels as written) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn pilot_metrics_count_connections_pushes_convergence_and_rejects() {
    let source = Source::default();
    source.publish("sidecar~m", config(&[cluster("a", "127.0.0.3:80")]));
    let cp = ControlPlane::start(source.clone()).await;
    let metrics = || cp.server.metrics().encode();
    let mut proxy = Proxy::start(cp.url(), "sidecar~m");
    initial(&mut proxy).await;
    cp.wait_status("sidecar~m", |s| s.types.values().all(|t| t.in_sync()))
        .await;
    let text = metrics();
    assert_eq!(
        sample(&text, "pilot_xds{version=\"unknown\"}"),
        Some(1.0),
        "{text}"
    );
    let cds_pushes = sample(&text, "pilot_xds_pushes{type=\"cds\"}").expect("cds pushed");
    assert!(cds_pushes >= 1.0);
    assert_eq!(
        sample(&text, "pilot_xds_push_time_count{type=\"cds\"}"),
        Some(cds_pushes)
    );
    // A first config is no change: nothing converged yet.
    assert_eq!(
        sample(&text, "pilot_proxy_convergence_time_count"),
        Some(0.0)
    );

    // A change, ACKed: one convergence, measured from when the change was seen.
    let mut changed = config(&[cluster("a", "127.0.0.3:80"), cluster("b", "127.0.0.4:80")]);
    let seen_at = std::time::Instant::now() - Duration::from_millis(700);
    changed.set_changed_at(seen_at);
    source.publish("sidecar~m", changed);
    assert!(proxy.next_of(CLUSTER_TYPE_URL).await.accepted);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while sample(&metrics(), "pilot_proxy_convergence_time_count") != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "{}", metrics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics();
    assert_eq!(
        sample(&text, "pilot_xds_pushes{type=\"cds\"}"),
        Some(cds_pushes + 1.0),
        "{text}"
    );
    // 0.7 s before it was published: above the 0.5 bucket, within 1.
    assert_eq!(
        sample(&text, "pilot_proxy_convergence_time_bucket{le=\"0.5\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "pilot_proxy_convergence_time_bucket{le=\"1\"}"),
        Some(1.0),
        "{text}"
    );

    // A NACK is a reject of its type, and no convergence.
    let mut bad = config(&[
        cluster("a", "127.0.0.3:80"),
        cluster("bad-1", "127.0.0.9:80"),
    ]);
    bad.set_changed_at(std::time::Instant::now());
    source.publish("sidecar~m", bad);
    assert!(!proxy.next_of(CLUSTER_TYPE_URL).await.accepted);
    cp.wait_status("sidecar~m", |s| {
        s.types[CLUSTER_TYPE_URL].last_nack.is_some()
    })
    .await;
    let text = metrics();
    assert_eq!(
        sample(&text, "pilot_total_xds_rejects{type=\"cds\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "pilot_total_xds_rejects{type=\"lds\"}"), None);
    assert_eq!(
        sample(&text, "pilot_proxy_convergence_time_count"),
        Some(1.0)
    );

    // The proxy goes: no connected proxy left.
    drop(proxy);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while sample(&metrics(), "pilot_xds{version=\"unknown\"}") != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "{}", metrics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cp.stop().await;
}
