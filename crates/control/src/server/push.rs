//! Push: from a config snapshot and the running instances to every connected proxy's
//! resources.
//!
//! [`MeshSource`] is the xDS server's [`ResourceSource`]. It keeps one `watch` channel per
//! node id with a subscribed stream. A change of the config or the instances is debounced
//! ([`push_loop`]), then one [`ConfigView`] is built and every subscribed proxy's resources
//! are translated again; a proxy whose resources did not change is not woken
//! (`send_if_modified`), and the xDS streams send only the resources that differ.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weft_xds::envoy::Node;
use weft_xds::resource::ProxyResources as XdsResources;
use weft_xds::server::{Nack, ResourceSource};

use super::instances::Instances;
use super::store::ConfigSnapshot;
use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::translate::ProxyResources;
use crate::unsupported::Unsupported;
use crate::view::ConfigView;

/// How long a burst of changes is gathered before a push: the push follows the last change
/// by this much, or the first one by [`MAX_DEBOUNCE`], whichever comes first.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a push waits while changes keep coming.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(500);

/// What every translation reads: one version of the mesh.
pub struct State {
    pub config: Arc<ConfigSnapshot>,
    pub instances: Arc<Instances>,
    pub view: ConfigView,
}

/// A node id with a subscribed stream.
struct Subscribed {
    node: ProxyNode,
    tx: watch::Sender<Arc<XdsResources>>,
    /// What the proxy was last given, in the translation's own types (for config_dump).
    translated: Arc<ProxyResources>,
    /// Open streams of this node id (a reconnecting proxy can briefly have two).
    streams: usize,
}

/// The control plane's [`ResourceSource`]. Cheap to clone.
#[derive(Clone)]
pub struct MeshSource {
    inner: Arc<Inner>,
}

struct Inner {
    mesh: MeshConfig,
    state: RwLock<Arc<State>>,
    proxies: Mutex<BTreeMap<String, Subscribed>>,
    /// Every unsupported note of the last push (and of proxies translated since).
    unsupported: Mutex<BTreeSet<Unsupported>>,
}

/// What one push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Proxies translated.
    pub proxies: usize,
    /// Proxies whose resources changed (and so were sent something).
    pub changed: usize,
    pub duration: Duration,
}

impl MeshSource {
    pub fn new(mesh: MeshConfig, config: Arc<ConfigSnapshot>, instances: Arc<Instances>) -> Self {
        let state = build_state(config, instances);
        let source = MeshSource {
            inner: Arc::new(Inner {
                mesh,
                state: RwLock::new(Arc::new(state)),
                proxies: Mutex::new(BTreeMap::new()),
                unsupported: Mutex::new(BTreeSet::new()),
            }),
        };
        let notes: Vec<Unsupported> = source.state().view.unsupported().to_vec();
        source.note_unsupported(notes, true);
        source
    }

    /// The mesh version in force.
    pub fn state(&self) -> Arc<State> {
        read(&self.inner.state).clone()
    }

    pub fn mesh(&self) -> &MeshConfig {
        &self.inner.mesh
    }

    /// The unsupported notes in force, sorted.
    pub fn unsupported(&self) -> Vec<Unsupported> {
        lock(&self.inner.unsupported).iter().cloned().collect()
    }

    /// Completes a parsed node from the registry: labels, service account, app host.
    fn complete(state: &State, node: &mut ProxyNode) {
        state.view.complete_node(node);
        let app_host = state
            .view
            .instance_of(node)
            .and_then(|i| {
                state
                    .instances
                    .app_hosts
                    .get(&(i.namespace.clone(), i.name.clone()))
            })
            .copied();
        if let Some(host) = app_host {
            node.app_host = host;
        }
    }

    /// The resources `node_id` gets now.
    fn translate_for(
        &self,
        state: &State,
        node_id: &str,
    ) -> Result<(ProxyNode, ProxyResources), String> {
        let mut node = ProxyNode::parse_id(node_id).map_err(|e| e.to_string())?;
        Self::complete(state, &mut node);
        let resources = crate::translate(&node, &self.inner.mesh, &state.view);
        Ok((node, resources))
    }

    /// Installs a new mesh version and recomputes every subscribed proxy; proxies whose
    /// resources changed are woken. Blocking (CPU): call it off the async workers.
    pub fn update(&self, config: Arc<ConfigSnapshot>, instances: Arc<Instances>) -> PushStats {
        let started = Instant::now();
        let state = Arc::new(build_state(config, instances));
        *write(&self.inner.state) = state.clone();
        let mut notes: Vec<Unsupported> = state.view.unsupported().to_vec();
        let mut proxies = lock(&self.inner.proxies);
        let mut changed = 0;
        for (id, sub) in proxies.iter_mut() {
            let (node, translated) = match self.translate_for(&state, id) {
                Ok(t) => t,
                // Ids are parsed on subscribe; an id that parsed then parses now.
                Err(_) => continue,
            };
            notes.extend(translated.unsupported.iter().cloned());
            let xds = Arc::new(to_xds(&translated));
            sub.node = node;
            sub.translated = Arc::new(translated);
            if sub.tx.send_if_modified(|cur| {
                if same_versions(cur, &xds) {
                    false
                } else {
                    *cur = xds.clone();
                    true
                }
            }) {
                changed += 1;
            }
        }
        let n = proxies.len();
        drop(proxies);
        self.note_unsupported(notes, true);
        PushStats {
            proxies: n,
            changed,
            duration: started.elapsed(),
        }
    }

    /// Records notes; logs the ones not seen in force before. `replace`: these are all the
    /// notes of a full push (older ones are dropped).
    fn note_unsupported(&self, notes: Vec<Unsupported>, replace: bool) {
        let mut known = lock(&self.inner.unsupported);
        let fresh: BTreeSet<Unsupported> = notes.into_iter().collect();
        for n in fresh.difference(&known) {
            match &n.location {
                Some(at) => tracing::warn!("{at}: not applied: {n}"),
                None => tracing::warn!("not applied: {n}"),
            }
        }
        if replace {
            *known = fresh;
        } else {
            known.extend(fresh);
        }
    }

    /// The resources the control plane has for a proxy: a connected one by node id or by
    /// `name.namespace` / `name`, else a registry instance's sidecar as it would get them.
    pub fn config_of(&self, proxy: &str) -> Option<(ProxyNode, Arc<ProxyResources>)> {
        {
            let proxies = lock(&self.inner.proxies);
            let found = proxies.get(proxy).or_else(|| {
                let mut named = proxies
                    .values()
                    .filter(|s| proxy_name_matches(&s.node, proxy));
                let first = named.next()?;
                named.next().is_none().then_some(first)
            });
            if let Some(s) = found {
                return Some((s.node.clone(), s.translated.clone()));
            }
        }
        let state = self.state();
        let node = ProxyNode::parse_id(proxy).ok().or_else(|| {
            let inst = state.view.registry().instances().iter().find(|i| {
                let probe = ProxyNode::for_instance(crate::ProxyKind::Sidecar, i);
                proxy_name_matches(&probe, proxy)
            })?;
            Some(ProxyNode::for_instance(crate::ProxyKind::Sidecar, inst))
        })?;
        let (node, translated) = self.translate_for(&state, &node.id()).ok()?;
        Some((node, Arc::new(translated)))
    }

    /// The node ids with a subscribed stream, and what the control plane has for each.
    pub fn subscribed(&self) -> HashMap<String, (ProxyNode, Arc<XdsResources>)> {
        lock(&self.inner.proxies)
            .iter()
            .map(|(id, s)| (id.clone(), (s.node.clone(), s.tx.borrow().clone())))
            .collect()
    }
}

/// `name.namespace` or, without a dot, `name`.
fn proxy_name_matches(node: &ProxyNode, wanted: &str) -> bool {
    wanted == format!("{}.{}", node.name, node.namespace) || wanted == node.name
}

fn build_state(config: Arc<ConfigSnapshot>, instances: Arc<Instances>) -> State {
    let view = ConfigView::new(config.resources.clone(), instances.instances.clone());
    State {
        config,
        instances,
        view,
    }
}

/// Whether two resource sets hold the same names at the same content versions. Not `==`:
/// prost encodes map fields (labels, header matches) in `HashMap` order, so equal resources
/// translated twice may differ in their packed bytes; versions hash their content.
fn same_versions(a: &XdsResources, b: &XdsResources) -> bool {
    let types: BTreeSet<&str> = a.type_urls().chain(b.type_urls()).collect();
    types.into_iter().all(|t| {
        let names = |r: &XdsResources| r.of_type(t).map(|m| m.len()).unwrap_or(0);
        names(a) == names(b) && a.type_version(t) == b.type_version(t)
    })
}

/// The translation's resources as the transport carries them.
pub fn to_xds(r: &ProxyResources) -> XdsResources {
    let mut out = XdsResources::new();
    for c in &r.clusters {
        out.insert(c);
    }
    for rc in &r.route_configs {
        out.insert(rc);
    }
    for l in &r.listeners {
        out.insert(l);
    }
    out
}

impl ResourceSource for MeshSource {
    fn subscribe(&self, node: &Node) -> Result<watch::Receiver<Arc<XdsResources>>, tonic::Status> {
        let mut proxies = lock(&self.inner.proxies);
        if let Some(sub) = proxies.get_mut(&node.id) {
            sub.streams += 1;
            return Ok(sub.tx.subscribe());
        }
        let state = self.state();
        let (parsed, translated) = self
            .translate_for(&state, &node.id)
            .map_err(tonic::Status::invalid_argument)?;
        if state.view.instance_of(&parsed).is_none() {
            tracing::info!(
                node = node.id,
                "proxy connected for no known instance; it gets the resources its id implies"
            );
        }
        let notes = translated.unsupported.clone();
        let (tx, rx) = watch::channel(Arc::new(to_xds(&translated)));
        proxies.insert(
            node.id.clone(),
            Subscribed {
                node: parsed,
                tx,
                translated: Arc::new(translated),
                streams: 1,
            },
        );
        drop(proxies);
        self.note_unsupported(notes, false);
        Ok(rx)
    }

    fn on_nack(&self, node: &Node, type_url: &str, nack: &Nack) {
        tracing::warn!(
            node = node.id,
            type_url,
            version = nack.version,
            "NACK: {}",
            nack.reason
        );
    }

    fn on_disconnect(&self, node: &Node) {
        let mut proxies = lock(&self.inner.proxies);
        if let Some(sub) = proxies.get_mut(&node.id) {
            sub.streams = sub.streams.saturating_sub(1);
            if sub.streams == 0 {
                proxies.remove(&node.id);
            }
        }
    }
}

/// Waits for changes of the config or the instances, gathers a burst ([`DEBOUNCE`]), then
/// pushes. Runs until the returned future is dropped.
pub async fn push_loop(
    source: MeshSource,
    mut config: watch::Receiver<Arc<ConfigSnapshot>>,
    mut instances: watch::Receiver<Arc<Instances>>,
) {
    config.borrow_and_update();
    instances.borrow_and_update();
    loop {
        if !changed(&mut config, &mut instances).await {
            return;
        }
        let first = Instant::now();
        loop {
            let left = MAX_DEBOUNCE.saturating_sub(first.elapsed());
            let quiet = tokio::time::sleep(DEBOUNCE.min(left));
            tokio::select! {
                () = quiet => break,
                more = changed(&mut config, &mut instances) => if !more { return },
            }
        }
        let c = config.borrow_and_update().clone();
        let i = instances.borrow_and_update().clone();
        let (generation, inst_generation) = (c.generation, i.generation);
        let s = source.clone();
        match tokio::task::spawn_blocking(move || s.update(c, i)).await {
            Ok(stats) => tracing::info!(
                config = generation,
                instances = inst_generation,
                proxies = stats.proxies,
                changed = stats.changed,
                duration_ms = format!("{:.1}", stats.duration.as_secs_f64() * 1000.0),
                "push"
            ),
            Err(e) => tracing::error!("push failed: {e}"),
        }
    }
}

/// Resolves when either receiver has a change; false when both senders are gone.
async fn changed(
    config: &mut watch::Receiver<Arc<ConfigSnapshot>>,
    instances: &mut watch::Receiver<Arc<Instances>>,
) -> bool {
    tokio::select! {
        r = config.changed() => r.is_ok() || instances.changed().await.is_ok(),
        r = instances.changed() => r.is_ok() || config.changed().await.is_ok(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::instances::parse;
    use weft_xds::resource::{CLUSTER_TYPE_URL, ROUTE_CONFIGURATION_TYPE_URL};

    const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
"#;

    fn vs(subset: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
             spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
        )
    }

    fn config(generation: u64, subset: &str) -> Arc<ConfigSnapshot> {
        let mut resources = weft_api::load_str("services.yaml", SERVICES).resources;
        resources.extend(weft_api::load_str("vs.yaml", &vs(subset)).resources);
        Arc::new(ConfigSnapshot {
            generation,
            resources,
            errors: Vec::new(),
        })
    }

    fn instances() -> Arc<Instances> {
        let entries = parse(
            "- {name: reviews-v1-0, labels: {app: reviews, version: v1}, ip: 10.0.0.3, \
             appHost: 10.0.1.3, ports: [{name: http, port: 9080, protocol: HTTP}]}\n",
        )
        .expect("instances");
        Arc::new(Instances {
            generation: 1,
            ..Instances::from_entries(&entries)
        })
    }

    fn node(id: &str) -> Node {
        Node {
            id: id.to_owned(),
            ..Default::default()
        }
    }

    const ID: &str = "sidecar~10.0.0.3~reviews-v1-0.default~default.svc.cluster.local";

    #[test]
    fn only_proxies_whose_resources_change_are_woken() {
        let source = MeshSource::new(MeshConfig::default(), config(1, "v1"), instances());
        let mut rx = source.subscribe(&node(ID)).expect("subscribes");
        let first = rx.borrow_and_update().clone();
        assert!(first.of_type(CLUSTER_TYPE_URL).is_some());
        // The node was completed from the instances file: labels, and the app host the
        // inbound cluster forwards to.
        let (n, translated) = source.config_of("reviews-v1-0.default").expect("by name");
        assert_eq!(n.labels.get("version").map(String::as_str), Some("v1"));
        let inbound = translated
            .clusters
            .iter()
            .find(|c| c.name == "inbound|9080||")
            .expect("inbound cluster");
        assert_eq!(inbound.endpoints[0].address, "10.0.1.3:9080");

        // A new config generation with the same content: nothing is sent.
        let stats = source.update(config(2, "v1"), instances());
        assert_eq!((stats.proxies, stats.changed), (1, 0));
        assert!(!rx.has_changed().expect("open"));

        // A routing change wakes the proxy with new route configurations.
        let stats = source.update(config(3, "v2"), instances());
        assert_eq!((stats.proxies, stats.changed), (1, 1));
        assert!(rx.has_changed().expect("open"));
        let next = rx.borrow_and_update().clone();
        assert_ne!(
            next.type_version(ROUTE_CONFIGURATION_TYPE_URL),
            first.type_version(ROUTE_CONFIGURATION_TYPE_URL)
        );

        // Two streams of one node id share it; it is forgotten when both are gone.
        let _second = source.subscribe(&node(ID)).expect("second stream");
        source.on_disconnect(&node(ID));
        assert_eq!(source.subscribed().len(), 1);
        source.on_disconnect(&node(ID));
        assert!(source.subscribed().is_empty());
        assert_eq!(source.update(config(4, "v1"), instances()).proxies, 0);
    }

    #[test]
    fn malformed_node_ids_are_refused() {
        let source = MeshSource::new(MeshConfig::default(), config(1, "v1"), instances());
        let err = source
            .subscribe(&node("sidecar~not-an-ip~a.b~b.svc.cluster.local"))
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(source.subscribed().is_empty());
        assert!(source.config_of("nobody").is_none());
    }
}
