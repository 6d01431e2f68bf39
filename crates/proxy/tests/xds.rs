//! weft-proxy configured over delta xDS by a control plane in the test: ready after the first
//! push, new routing without restart, a NACK with its reason while traffic keeps flowing,
//! and serving on through a control-plane outage.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Proxy, backend, client, get};
use tokio::sync::watch;
use weft_xds::envoy::Node;
use weft_xds::proto;
use weft_xds::resource::{ProxyResources, ROUTE_CONFIGURATION_TYPE_URL};
use weft_xds::server::{ResourceSource, XdsServer};

const NODE: &str = "sidecar~127.0.0.1~productpage-v1-1.default~default.svc.cluster.local";

/// One proxy's resources, published on a watch channel.
struct Source(watch::Sender<Arc<ProxyResources>>);

impl ResourceSource for Source {
    fn subscribe(
        &self,
        node: &Node,
    ) -> Result<watch::Receiver<Arc<ProxyResources>>, tonic::Status> {
        if node.id != NODE {
            return Err(tonic::Status::not_found(format!(
                "unknown node {}",
                node.id
            )));
        }
        Ok(self.0.subscribe())
    }
}

/// A listener on `port`, routing everything to `cluster`, with clusters a and b.
fn resources(
    port: u16,
    cluster: &str,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
) -> ProxyResources {
    let yaml = format!(
        r#"
listeners:
- {{name: outbound, address: "127.0.0.1:{port}", http: {{routeConfig: outbound}}}}
routeConfigs:
- name: outbound
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: {cluster}}}]}}}}]}}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
"#
    );
    let b: proto::Bootstrap = yaml_serde::from_str(&yaml).expect("test resources");
    let mut r = ProxyResources::new();
    for l in &b.listeners {
        r.insert(l);
    }
    for rc in &b.route_configs {
        r.insert(rc);
    }
    for c in &b.clusters {
        r.insert(c);
    }
    r
}

/// Serves xDS on `listener` until the returned sender fires.
fn serve(
    server: &XdsServer<Source>,
    listener: tokio::net::TcpListener,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

/// Polls `f` every 20 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_the_control_plane() {
    let a = backend("a").await;
    let b = backend("b").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (tx, _) = watch::channel(Arc::new(resources(port, "a", a, b)));
    let server = XdsServer::new(Source(tx.clone()));
    let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_addr = xds_listener.local_addr().unwrap();
    let stop = serve(&server, xds_listener);

    let proxy = Proxy::start(&format!(
        "node: {{id: \"{NODE}\"}}\nxds: {{address: \"http://{xds_addr}\"}}\n"
    ));
    // Ready only after the first push: the listener came from xDS.
    let addr = proxy.addr("outbound");
    let c = client();
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("a "));

    // A new route, applied without a restart.
    tx.send_replace(Arc::new(resources(port, "b", a, b)));
    eventually("route to b", || async {
        get(&c, addr, "svc", "/", &[]).await.body.starts_with("b ")
    })
    .await;

    // An invalid route configuration is NACKed with the reason; b keeps serving.
    let mut bad = resources(port, "b", a, b);
    let yaml = r#"{name: outbound, virtualHosts: [{name: all, domains: ["*"], routes: [{matches: [{uri: {regex: "("}}], route: {clusters: [{cluster: a}]}}]}]}"#;
    let rc: proto::RouteConfiguration = yaml_serde::from_str(yaml).unwrap();
    bad.insert(&rc);
    tx.send_replace(Arc::new(bad));
    eventually("NACK in the server's status", || async {
        server.status().iter().any(|s| {
            s.types
                .get(ROUTE_CONFIGURATION_TYPE_URL)
                .and_then(|t| t.last_nack.as_ref())
                .is_some_and(|n| n.reason.contains("uri.regex"))
        })
    })
    .await;
    assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));

    // The control plane goes away: the proxy serves on with what it has.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert!(get(&c, addr, "svc", "/", &[]).await.body.starts_with("b "));
    }

    // It comes back (a new process: a new server) on the same port with new routing: the
    // proxy reconnects and resyncs.
    tx.send_replace(Arc::new(resources(port, "a", a, b)));
    let restarted = XdsServer::new(Source(tx.clone()));
    let again = tokio::net::TcpListener::bind(xds_addr).await.unwrap();
    let _stop = serve(&restarted, again);
    eventually("resync after reconnect", || async {
        get(&c, addr, "svc", "/", &[]).await.body.starts_with("a ")
    })
    .await;
}
