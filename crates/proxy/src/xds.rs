//! The proxy's side of xDS: resources from the control plane go through the same conversion
//! as a static file (`Snapshot::build`), joined with the bootstrap's static resources, and are
//! put in force the same way (`server::apply`). Whatever fails is NACKed with every reason;
//! the proxy keeps serving what it had.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use weft_xds::client::{ClientConfig, ConfigHandler, Update, XdsClient};
use weft_xds::envoy::Node;
use weft_xds::proto;
use weft_xds::resource::{
    CLUSTER_TYPE_URL, LISTENER_TYPE_URL, ROUTE_CONFIGURATION_TYPE_URL, SECRET_TYPE_URL,
    XdsResource, unpack,
};

use crate::server::{Proxy, apply, build};

/// Applies xDS updates to the running proxy.
pub struct Handler {
    proxy: Arc<Proxy>,
    /// The bootstrap file's own resources (and node, admin): the base every update joins.
    base: proto::Bootstrap,
    listeners: BTreeMap<String, proto::Listener>,
    route_configs: BTreeMap<String, proto::RouteConfiguration>,
    clusters: BTreeMap<String, proto::Cluster>,
    /// Key material, in memory only: never written anywhere.
    secrets: BTreeMap<String, proto::Secret>,
}

/// Builds the client for `bootstrap.xds`; its `ready()` says when the first full config is in.
pub fn client(proxy: Arc<Proxy>, bootstrap: &proto::Bootstrap) -> Option<XdsClient<Handler>> {
    let xds = bootstrap.xds.as_ref()?;
    let node = Node {
        id: bootstrap
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default(),
        // The control plane's `pilot_xds{version}` reads it.
        user_agent_name: "weft-proxy".into(),
        user_agent_version_type: Some(weft_xds::envoy::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        )),
        ..Default::default()
    };
    let handler = Handler {
        proxy,
        base: bootstrap.clone(),
        listeners: BTreeMap::new(),
        route_configs: BTreeMap::new(),
        clusters: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    Some(XdsClient::new(
        ClientConfig::new(&xds.address, node),
        handler,
    ))
}

/// Decodes every resource of one type, naming each that fails.
fn decode<R: XdsResource>(update: &Update<'_>) -> Result<BTreeMap<String, R>, String> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, r) in update.resources {
        match unpack::<R>(&r.resource) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("; "))
    }
}

/// Static resources first, then dynamic ones, which replace static ones of the same name.
fn join<T: Clone>(
    static_: &[T],
    dynamic: &BTreeMap<String, T>,
    name: impl Fn(&T) -> &str,
) -> Vec<T> {
    let mut out: Vec<T> = static_
        .iter()
        .filter(|s| !dynamic.contains_key(name(s)))
        .cloned()
        .collect();
    out.extend(dynamic.values().cloned());
    out
}

impl Handler {
    fn bootstrap(&self) -> proto::Bootstrap {
        let mut b = self.base.clone();
        b.listeners = join(&self.base.listeners, &self.listeners, |l| &l.name);
        b.route_configs = join(&self.base.route_configs, &self.route_configs, |r| &r.name);
        b.clusters = join(&self.base.clusters, &self.clusters, |c| &c.name);
        b.secrets = join(&self.base.secrets, &self.secrets, |s| &s.name);
        b
    }

    /// Builds and applies the config with this type's new set; on failure nothing changes.
    async fn try_apply(&mut self, update: &Update<'_>) -> Result<(), String> {
        let mut next = Handler {
            proxy: self.proxy.clone(),
            base: self.base.clone(),
            listeners: self.listeners.clone(),
            route_configs: self.route_configs.clone(),
            clusters: self.clusters.clone(),
            secrets: self.secrets.clone(),
        };
        match update.type_url {
            LISTENER_TYPE_URL => next.listeners = decode(update)?,
            ROUTE_CONFIGURATION_TYPE_URL => next.route_configs = decode(update)?,
            CLUSTER_TYPE_URL => next.clusters = decode(update)?,
            SECRET_TYPE_URL => next.secrets = decode(update)?,
            other => return Err(format!("type {other} is not one weft-proxy takes")),
        }
        let snapshot = build(&self.proxy.shared, next.bootstrap()).await?;
        apply(&self.proxy, snapshot)?;
        *self = next;
        Ok(())
    }
}

impl ConfigHandler for Handler {
    async fn apply(&mut self, update: &Update<'_>) -> Result<(), String> {
        let result = self.try_apply(update).await;
        match &result {
            Ok(()) => {
                let stats = &self.proxy.shared.stats;
                stats.config_reloads.fetch_add(1, Relaxed);
                stats.xds_version(update.type_url, update.system_version);
                tracing::info!(
                    type_url = update.type_url,
                    version = update.system_version,
                    resources = update.resources.len(),
                    "xds: config applied"
                );
            }
            Err(reason) => {
                self.proxy
                    .shared
                    .stats
                    .config_rejections
                    .fetch_add(1, Relaxed);
                tracing::error!(
                    type_url = update.type_url,
                    "xds: config rejected (NACK), the previous config keeps serving: {reason}"
                );
            }
        }
        result
    }

    fn connection_changed(&mut self, connected: bool) {
        let stats = &self.proxy.shared.stats;
        stats.xds_connected.store(u64::from(connected), Relaxed);
        if connected {
            tracing::info!("xds: connected");
        } else if self.proxy.is_stopping() {
            // Stopping: the stream ends because the proxy does; nothing to warn of.
            tracing::debug!("xds: disconnected (stopping)");
        } else {
            tracing::warn!("xds: disconnected; serving the last config while reconnecting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::resource::{VersionedResource, pack};

    #[tokio::test(flavor = "current_thread")]
    async fn config_is_built_off_the_runtime_that_serves_requests() {
        let proxy = Proxy::for_test();
        let shared = proxy.shared.clone();
        let bootstrap = proto::Bootstrap::default();
        let mut handler = Handler {
            proxy: proxy.clone(),
            base: bootstrap,
            listeners: BTreeMap::new(),
            route_configs: BTreeMap::new(),
            clusters: BTreeMap::new(),
            secrets: BTreeMap::new(),
        };
        // A cluster with a Maglev table to build.
        let cluster = proto::Cluster {
            name: "big".into(),
            lb_policy: proto::LbPolicy::Maglev.into(),
            consistent_hash: Some(yaml_serde::from_str("{header: x}").unwrap()),
            endpoints: (1..=50)
                .map(|i| proto::Endpoint {
                    address: format!("10.0.0.{i}:80"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let resources = BTreeMap::from([(
            "big".to_owned(),
            VersionedResource {
                version: "1".into(),
                resource: pack(&cluster),
            },
        )]);
        let update = Update {
            type_url: CLUSTER_TYPE_URL,
            system_version: "1",
            changed: &[],
            removed: &[],
            resources: &resources,
        };
        // A request's task on the proxy's one worker: it must get turns during the build.
        let turns = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let request = tokio::spawn({
            let turns = turns.clone();
            async move {
                loop {
                    turns.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        handler.apply(&update).await.expect("applies");
        request.abort();
        assert!(shared.snapshot.load().clusters.contains_key("big"));
        assert!(
            turns.load(Relaxed) > 0,
            "requests waited for the whole build"
        );
    }

    #[test]
    fn dynamic_resources_replace_static_ones_of_the_same_name() {
        let static_ = vec![("a", 1), ("b", 2)];
        let mut dynamic = BTreeMap::new();
        dynamic.insert("b".to_owned(), ("b", 20));
        dynamic.insert("c".to_owned(), ("c", 30));
        let joined = join(&static_, &dynamic, |t| t.0);
        assert_eq!(joined, [("a", 1), ("b", 20), ("c", 30)]);
    }
}
