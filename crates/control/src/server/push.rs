//! Push: from a config snapshot and the running instances to every connected proxy's
//! resources.
//!
//! [`MeshSource`] is the xDS server's [`ResourceSource`]. It keeps one `watch` channel per
//! node id with a subscribed stream. A change of the config or the instances is debounced
//! ([`push_loop`]), then one [`State`] is built and every subscribed proxy's resources are
//! computed again; a proxy whose resources did not change is not woken
//! (`send_if_modified`), and the xDS streams send only the resources that differ.
//!
//! A sidecar's outbound half (its clusters and `outbound` route configuration, most of its
//! config) is translated once per [`OutboundKey`] and version of the mesh, and shared: the
//! sidecars with one key hold the same `Arc`'d resources, so a thousand sidecars cost one
//! translation and one copy, and each only its own listeners and inbound clusters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weft_xds::envoy::Node;
use weft_xds::resource::{
    CLUSTER_TYPE_URL, ProxyResources as XdsResources, ROUTE_CONFIGURATION_TYPE_URL, ResourceMap,
    XdsResource, versioned,
};
use weft_xds::server::{Nack, ResourceSource};

use super::instances::{Instances, InstancesError};
use super::mesh_file::MeshSettings;
use super::store::ConfigSnapshot;
use crate::dns::DnsTable;
use crate::mesh_config::MeshConfig;
use crate::node::{ProxyKind, ProxyNode};
use crate::translate::{self, OutboundKey, ProxyResources};
use crate::unsupported::Unsupported;
use crate::view::ConfigView;

/// How long a burst of changes is gathered before a push: the push follows the last change
/// by this much, or the first one by [`MAX_DEBOUNCE`], whichever comes first.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a push waits while changes keep coming.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(500);

/// Everything a push is computed from; each part has its own watcher (files, the instances
/// file, the DNS resolver).
#[derive(Clone)]
pub struct Inputs {
    pub mesh: Arc<MeshConfig>,
    /// Why the mesh config file's latest version is not in force, if it is not.
    pub mesh_error: Option<InstancesError>,
    pub config: Arc<ConfigSnapshot>,
    pub instances: Arc<Instances>,
    pub dns: Arc<DnsTable>,
    /// The keys fetched from jwksUri.
    pub jwks: Arc<crate::jwks::JwksTable>,
    /// When the change these inputs carry was seen (the first of a debounced burst): where
    /// `pilot_proxy_convergence_time` starts.
    pub changed_at: Option<Instant>,
}

impl Inputs {
    pub fn new(mesh: MeshConfig, config: Arc<ConfigSnapshot>, instances: Arc<Instances>) -> Self {
        Inputs {
            mesh: Arc::new(mesh),
            mesh_error: None,
            config,
            instances,
            dns: Arc::default(),
            jwks: Arc::default(),
            changed_at: None,
        }
    }
}

/// What every translation reads: one version of the mesh, and the outbound halves
/// translated from it so far.
pub struct State {
    pub mesh: Arc<MeshConfig>,
    pub mesh_error: Option<InstancesError>,
    pub config: Arc<ConfigSnapshot>,
    pub instances: Arc<Instances>,
    pub view: ConfigView,
    /// The label keys selectors read (what an [`OutboundKey`] keeps of a node's labels).
    label_keys: BTreeSet<String>,
    outbound: Mutex<HashMap<OutboundKey, Arc<SharedOutbound>>>,
    /// The previous version's outbound halves: a set whose content did not change is
    /// reused (the same `Arc`), so proxies and streams see it unchanged without comparing.
    previous: HashMap<OutboundKey, Arc<SharedOutbound>>,
}

/// A sidecar outbound half as the transport carries it, shared by every sidecar with its
/// key.
struct SharedOutbound {
    clusters: Arc<ResourceMap>,
    route_configs: Arc<ResourceMap>,
    unsupported: Vec<Unsupported>,
}

impl State {
    fn new(inputs: Inputs, previous: Option<&State>) -> State {
        let Inputs {
            mesh,
            mesh_error,
            config,
            instances,
            dns,
            jwks,
            changed_at: _,
        } = inputs;
        let view = ConfigView::new(config.resources.clone(), instances.instances.clone())
            .with_dns(dns)
            .with_jwks(jwks);
        let label_keys = translate::selector_label_keys(&view, &mesh);
        State {
            previous: previous
                .map(|p| lock(&p.outbound).clone())
                .unwrap_or_default(),
            mesh,
            mesh_error,
            config,
            instances,
            view,
            label_keys,
            outbound: Mutex::new(HashMap::new()),
        }
    }

    /// The inputs this state was built from.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            mesh: self.mesh.clone(),
            mesh_error: self.mesh_error.clone(),
            config: self.config.clone(),
            instances: self.instances.clone(),
            dns: self.view.dns_table(),
            jwks: self.view.jwks_table(),
            changed_at: None,
        }
    }

    /// The outbound half for `key`, translated on first use.
    fn outbound(&self, key: OutboundKey) -> Arc<SharedOutbound> {
        let mesh = &*self.mesh;
        let mut cache = lock(&self.outbound);
        cache
            .entry(key)
            .or_insert_with_key(|key| {
                let t = translate::sidecar_outbound(key, mesh, &self.view);
                let route_configs: Vec<_> = t
                    .route_configs
                    .into_iter()
                    .flat_map(translate::split_outbound)
                    .collect();
                let before = self.previous.get(key);
                Arc::new(SharedOutbound {
                    clusters: reuse(resource_map(&t.clusters), before.map(|b| &b.clusters)),
                    route_configs: reuse(
                        resource_map(&route_configs),
                        before.map(|b| &b.route_configs),
                    ),
                    unsupported: t.unsupported,
                })
            })
            .clone()
    }
}

fn resource_map<R: XdsResource>(resources: &[R]) -> ResourceMap {
    resources.iter().map(versioned).collect()
}

/// `fresh`, or `before` when it holds the same names at the same versions.
fn reuse(fresh: ResourceMap, before: Option<&Arc<ResourceMap>>) -> Arc<ResourceMap> {
    match before {
        Some(b) if **b == fresh => b.clone(),
        _ => Arc::new(fresh),
    }
}

/// A node id with a subscribed stream.
struct Subscribed {
    node: ProxyNode,
    /// Shared so that a push can send to it without holding the proxies lock.
    tx: Arc<watch::Sender<Arc<XdsResources>>>,
    /// Open streams of this node id (a reconnecting proxy can briefly have two).
    streams: usize,
}

/// The control plane's [`ResourceSource`]. Cheap to clone.
#[derive(Clone)]
pub struct MeshSource {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<Arc<State>>,
    /// Held only to look up, add or remove entries, never while translating: a proxy that
    /// connects during a long push is translated and served at once.
    proxies: Mutex<BTreeMap<String, Subscribed>>,
    /// Serializes pushes (one [`MeshSource::update`] at a time); subscribers never take it.
    pushing: Mutex<()>,
    /// Called before each proxy a push translates (tests pause a push with it).
    #[cfg(test)]
    on_push_translate: Mutex<Option<Box<dyn Fn() + Send>>>,
    /// Every unsupported note of the last push (and of proxies translated since).
    unsupported: Mutex<BTreeSet<Unsupported>>,
}

/// What one push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Proxies computed.
    pub proxies: usize,
    /// Proxies whose resources changed (and so were sent something).
    pub changed: usize,
    /// Distinct sidecar outbound halves translated.
    pub outbound_translations: usize,
    pub duration: Duration,
}

impl MeshSource {
    pub fn new(inputs: Inputs) -> Self {
        let state = State::new(inputs, None);
        let source = MeshSource {
            inner: Arc::new(Inner {
                state: RwLock::new(Arc::new(state)),
                proxies: Mutex::new(BTreeMap::new()),
                pushing: Mutex::new(()),
                #[cfg(test)]
                on_push_translate: Mutex::new(None),
                unsupported: Mutex::new(BTreeSet::new()),
            }),
        };
        let state = source.state();
        let mut notes: Vec<Unsupported> = state.view.unsupported().to_vec();
        notes.extend(state.mesh.notes());
        drop(state);
        source.note_unsupported(notes, true);
        source
    }

    /// The mesh version in force.
    pub fn state(&self) -> Arc<State> {
        read(&self.inner.state).clone()
    }

    /// The mesh config in force.
    pub fn mesh(&self) -> Arc<MeshConfig> {
        self.state().mesh.clone()
    }

    /// The unsupported notes in force, sorted.
    pub fn unsupported(&self) -> Vec<Unsupported> {
        lock(&self.inner.unsupported).iter().cloned().collect()
    }

    /// Parses a node id and completes it from the registry: labels, service account,
    /// locality, app host.
    fn node(state: &State, node_id: &str) -> Result<ProxyNode, String> {
        let mut node = ProxyNode::parse_id(node_id).map_err(|e| e.to_string())?;
        state.view.complete_node(&mut node);
        let app_host = state
            .view
            .instance_of(&node)
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
        node.capture = state.view.instance_of(&node).is_some_and(|i| {
            state
                .instances
                .captured
                .contains(&(i.namespace.clone(), i.name.clone()))
        });
        Ok(node)
    }

    /// What `node` gets now as the transport carries it, and the unsupported notes of its
    /// translation. A sidecar's outbound half comes from `state`'s shared ones.
    fn resources_for(&self, state: &State, node: &ProxyNode) -> (XdsResources, Vec<Unsupported>) {
        let mesh = &*state.mesh;
        match node.kind {
            ProxyKind::Sidecar => {
                let key = OutboundKey::of(node, &state.label_keys);
                let shared = state.outbound(key);
                let own = translate::sidecar_own(node, mesh, &state.view);
                let mut xds = to_xds(&own);
                xds.share(CLUSTER_TYPE_URL, shared.clusters.clone());
                xds.share(ROUTE_CONFIGURATION_TYPE_URL, shared.route_configs.clone());
                let mut notes = own.unsupported;
                notes.extend(shared.unsupported.iter().cloned());
                (xds, notes)
            }
            ProxyKind::Gateway => {
                let t = translate::gateway(node, mesh, &state.view);
                (to_xds(&t), t.unsupported)
            }
        }
    }

    /// Installs a new mesh version and recomputes every subscribed proxy; proxies whose
    /// resources changed are woken. Blocking (CPU): call it off the async workers.
    ///
    /// The proxies lock is held only to list the subscribers, not while translating them;
    /// a proxy subscribing meanwhile translates from the new state itself (see
    /// [`ResourceSource::subscribe`]), so none is left on the old one.
    pub fn update(&self, inputs: Inputs) -> PushStats {
        let _one_push = lock(&self.inner.pushing);
        let started = Instant::now();
        let changed_at = inputs.changed_at;
        let previous = self.state();
        let state = Arc::new(State::new(inputs, Some(&previous)));
        drop(previous);
        *write(&self.inner.state) = state.clone();
        let subscribers: Vec<(String, Arc<watch::Sender<Arc<XdsResources>>>)> =
            lock(&self.inner.proxies)
                .iter()
                .map(|(id, sub)| (id.clone(), sub.tx.clone()))
                .collect();
        let mut notes: BTreeSet<Unsupported> = state.view.unsupported().iter().cloned().collect();
        notes.extend(state.mesh.notes());
        let mut completed = Vec::with_capacity(subscribers.len());
        let mut changed = 0;
        for (id, tx) in &subscribers {
            #[cfg(test)]
            if let Some(hook) = &*lock(&self.inner.on_push_translate) {
                hook();
            }
            // Ids are parsed on subscribe; an id that parsed then parses now.
            let Ok(node) = Self::node(&state, id) else {
                continue;
            };
            let (mut xds, translated_notes) = self.resources_for(&state, &node);
            if let Some(at) = changed_at {
                xds.set_changed_at(at);
            }
            notes.extend(translated_notes);
            completed.push((id, tx, node));
            // Unchanged shared sets are the same Arcs (see `State::previous`), so this
            // check does not walk them; sets that differ hold different content.
            if tx.send_if_modified(|cur| {
                if cur.same_sets(&xds) {
                    false
                } else {
                    *cur = Arc::new(xds);
                    true
                }
            }) {
                changed += 1;
            }
        }
        {
            let mut proxies = lock(&self.inner.proxies);
            for (id, tx, node) in completed {
                // Unless the proxy went away (and perhaps came back) meanwhile.
                if let Some(sub) = proxies.get_mut(id.as_str())
                    && Arc::ptr_eq(&sub.tx, tx)
                {
                    sub.node = node;
                }
            }
        }
        self.note_unsupported(notes.into_iter().collect(), true);
        PushStats {
            proxies: subscribers.len(),
            changed,
            outbound_translations: lock(&state.outbound).len(),
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

    /// Another stream of a node id already subscribed shares its channel.
    fn join_stream(&self, id: &str) -> Option<watch::Receiver<Arc<XdsResources>>> {
        let mut proxies = lock(&self.inner.proxies);
        let sub = proxies.get_mut(id)?;
        sub.streams += 1;
        Some(sub.tx.subscribe())
    }

    /// The resources the control plane has for a proxy, in the translation's own types: a
    /// connected one by node id or by `name.namespace` / `name`, else a registry instance's
    /// sidecar as it would get them. Translated on demand (this is for debugging), from the
    /// mesh version the proxy was last pushed.
    pub fn config_of(&self, proxy: &str) -> Option<(ProxyNode, Arc<ProxyResources>)> {
        let connected = {
            let proxies = lock(&self.inner.proxies);
            proxies
                .get(proxy)
                .map(|s| s.node.clone())
                .or_else(|| best_named(proxies.values().map(|s| &s.node), proxy).cloned())
        };
        let state = self.state();
        let node = match connected {
            Some(node) => node,
            None => {
                let parsed = ProxyNode::parse_id(proxy).ok().or_else(|| {
                    let probes: Vec<ProxyNode> = state
                        .view
                        .registry()
                        .instances()
                        .iter()
                        .map(|i| ProxyNode::for_instance(ProxyKind::Sidecar, i))
                        .collect();
                    best_named(probes.iter(), proxy).cloned()
                })?;
                Self::node(&state, &parsed.id()).ok()?
            }
        };
        let translated = crate::translate(&node, &state.mesh, &state.view);
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

/// The one node `wanted` names best ([`crate::node::name_match`]): an exact pod name, else
/// the only proxy of the workload named. None when nothing, or more than one, matches best.
fn best_named<'a>(
    nodes: impl Iterator<Item = &'a ProxyNode>,
    wanted: &str,
) -> Option<&'a ProxyNode> {
    let mut best: Option<(crate::node::NameMatch, &ProxyNode, bool)> = None;
    for node in nodes {
        let Some(how) = crate::node::name_match(&node.name, &node.namespace, wanted) else {
            continue;
        };
        best = match best {
            Some((b, first, _)) if b == how => Some((b, first, true)),
            Some((b, first, twice)) if b > how => Some((b, first, twice)),
            _ => Some((how, node, false)),
        };
    }
    best.and_then(|(_, node, twice)| (!twice).then_some(node))
}

/// The translation's resources as the transport carries them.
pub fn to_xds(r: &ProxyResources) -> XdsResources {
    let mut out = XdsResources::new();
    for s in &r.secrets {
        out.insert(s);
    }
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
        if let Some(rx) = self.join_stream(&node.id) {
            return Ok(rx);
        }
        // Translated without the proxies lock, so a push in progress does not hold this up;
        // when a push installs a newer state before this one is in the table, translate
        // again: that push may have listed the subscribers before this one was added.
        let mut state = self.state();
        loop {
            let parsed = Self::node(&state, &node.id).map_err(tonic::Status::invalid_argument)?;
            let (xds, notes) = self.resources_for(&state, &parsed);
            let mut proxies = lock(&self.inner.proxies);
            if let Some(sub) = proxies.get_mut(&node.id) {
                // Another stream of this id subscribed meanwhile.
                sub.streams += 1;
                return Ok(sub.tx.subscribe());
            }
            let now = self.state();
            if !Arc::ptr_eq(&now, &state) {
                drop(proxies);
                state = now;
                continue;
            }
            if state.view.instance_of(&parsed).is_none() {
                tracing::info!(
                    node = node.id,
                    "proxy connected for no known instance; it gets the resources its id implies"
                );
            }
            let (tx, rx) = watch::channel(Arc::new(xds));
            proxies.insert(
                node.id.clone(),
                Subscribed {
                    node: parsed,
                    tx: Arc::new(tx),
                    streams: 1,
                },
            );
            drop(proxies);
            self.note_unsupported(notes, false);
            return Ok(rx);
        }
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

/// The watchers a push follows: the mesh config file, the config store, the instances file
/// and the DNS resolver.
pub struct Watches {
    pub mesh: watch::Receiver<Arc<MeshSettings>>,
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
    pub instances: watch::Receiver<Arc<Instances>>,
    pub dns: watch::Receiver<Arc<DnsTable>>,
    pub jwks: watch::Receiver<Arc<crate::jwks::JwksTable>>,
}

impl Watches {
    /// Resolves when any watcher has a change; false once every sender is gone.
    async fn changed(&mut self, closed: &mut [bool; 5]) -> bool {
        loop {
            let (which, r) = tokio::select! {
                r = self.mesh.changed(), if !closed[0] => (0, r),
                r = self.config.changed(), if !closed[1] => (1, r),
                r = self.instances.changed(), if !closed[2] => (2, r),
                r = self.dns.changed(), if !closed[3] => (3, r),
                r = self.jwks.changed(), if !closed[4] => (4, r),
                else => return false,
            };
            match r {
                Ok(()) => return true,
                Err(_) => closed[which] = true,
            }
        }
    }

    fn current(&mut self) -> Inputs {
        let mesh = self.mesh.borrow_and_update().clone();
        Inputs {
            mesh: mesh.config.clone(),
            mesh_error: mesh.error.clone(),
            config: self.config.borrow_and_update().clone(),
            instances: self.instances.borrow_and_update().clone(),
            dns: self.dns.borrow_and_update().clone(),
            jwks: self.jwks.borrow_and_update().clone(),
            changed_at: None,
        }
    }
}

/// Waits for a change of any input, gathers a burst ([`DEBOUNCE`]), then pushes. Runs until
/// the returned future is dropped.
pub async fn push_loop(source: MeshSource, mut watches: Watches) {
    watches.current();
    let mut closed = [false; 5];
    loop {
        if !watches.changed(&mut closed).await {
            return;
        }
        let first = Instant::now();
        loop {
            let left = MAX_DEBOUNCE.saturating_sub(first.elapsed());
            let quiet = tokio::time::sleep(DEBOUNCE.min(left));
            tokio::select! {
                () = quiet => break,
                more = watches.changed(&mut closed) => if !more { return },
            }
        }
        let mut inputs = watches.current();
        inputs.changed_at = Some(first);
        let (generation, inst_generation) = (inputs.config.generation, inputs.instances.generation);
        let s = source.clone();
        match tokio::task::spawn_blocking(move || s.update(inputs)).await {
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

    #[test]
    fn a_workload_name_names_its_only_replica() {
        let node = |id: &str| ProxyNode::parse_id(id).expect("node id");
        let nodes = [
            node("sidecar~127.0.1.1~reviews-v1-0.default~default.svc.cluster.local"),
            node("sidecar~127.0.1.2~reviews-v2-0.default~default.svc.cluster.local"),
            node("sidecar~127.0.1.3~reviews-v2-1.default~default.svc.cluster.local"),
            node(
                "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
            ),
        ];
        let named = |wanted: &str| best_named(nodes.iter(), wanted).map(|n| n.name.as_str());
        assert_eq!(named("reviews-v1"), Some("reviews-v1-0"));
        assert_eq!(named("reviews-v2-1.default"), Some("reviews-v2-1"));
        assert_eq!(named("reviews-v2"), None, "two replicas: ambiguous");
        assert_eq!(
            named("istio-ingressgateway"),
            Some("istio-ingressgateway-0")
        );
        assert_eq!(named("ratings"), None);
    }
    use super::*;
    use crate::server::instances::parse;

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
        let source = MeshSource::new(Inputs::new(
            MeshConfig::default(),
            config(1, "v1"),
            instances(),
        ));
        let mut rx = source.subscribe(&node(ID)).expect("subscribes");
        let first = rx.borrow_and_update().clone();
        assert!(first.len(CLUSTER_TYPE_URL) > 0);
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
        let stats = source.update(Inputs::new(
            MeshConfig::default(),
            config(2, "v1"),
            instances(),
        ));
        assert_eq!((stats.proxies, stats.changed), (1, 0));
        assert_eq!(stats.outbound_translations, 1);
        assert!(!rx.has_changed().expect("open"));

        // A routing change wakes the proxy with new route configurations.
        let stats = source.update(Inputs::new(
            MeshConfig::default(),
            config(3, "v2"),
            instances(),
        ));
        assert_eq!((stats.proxies, stats.changed), (1, 1));
        assert!(rx.has_changed().expect("open"));
        let next = rx.borrow_and_update().clone();
        assert_ne!(
            next.type_version(ROUTE_CONFIGURATION_TYPE_URL),
            first.type_version(ROUTE_CONFIGURATION_TYPE_URL)
        );
        // The outbound table travels as one resource per virtual host: only reviews' own
        // changed, so only it is sent.
        let changed: Vec<&str> = next
            .iter(ROUTE_CONFIGURATION_TYPE_URL)
            .filter(|(name, r)| {
                first
                    .get(ROUTE_CONFIGURATION_TYPE_URL, name)
                    .is_none_or(|f| f.version != r.version)
            })
            .map(|(name, _)| &**name)
            .collect();
        assert_eq!(changed, ["outbound/reviews.default.svc.cluster.local:9080"]);
        assert!(next.get(ROUTE_CONFIGURATION_TYPE_URL, "outbound").is_some());

        // Two streams of one node id share it; it is forgotten when both are gone.
        let _second = source.subscribe(&node(ID)).expect("second stream");
        source.on_disconnect(&node(ID));
        assert_eq!(source.subscribed().len(), 1);
        source.on_disconnect(&node(ID));
        assert!(source.subscribed().is_empty());
        assert_eq!(
            source
                .update(Inputs::new(
                    MeshConfig::default(),
                    config(4, "v1"),
                    instances()
                ))
                .proxies,
            0
        );
    }

    /// The packed route configuration for reviews names subset `subset`'s cluster.
    fn routes_to_subset(xds: &XdsResources, subset: &str) -> bool {
        let route = xds
            .get(
                ROUTE_CONFIGURATION_TYPE_URL,
                "outbound/reviews.default.svc.cluster.local:9080",
            )
            .expect("reviews' routes");
        let cluster = format!("outbound|9080|{subset}|reviews.default.svc.cluster.local");
        route
            .resource
            .value
            .windows(cluster.len())
            .any(|w| w == cluster.as_bytes())
    }

    #[test]
    fn a_proxy_connecting_during_a_push_is_served_without_waiting_for_it() {
        use std::sync::mpsc;
        let source = MeshSource::new(Inputs::new(
            MeshConfig::default(),
            config(1, "v1"),
            instances(),
        ));
        let mut first = source.subscribe(&node(ID)).expect("subscribes");
        assert!(routes_to_subset(&first.borrow_and_update(), "v1"));

        // Pause the next push inside its work, before it translates the first proxy.
        let (started_tx, started) = mpsc::channel::<()>();
        let (resume, resume_rx) = mpsc::channel::<()>();
        let resume_rx = Mutex::new(resume_rx);
        *lock(&source.inner.on_push_translate) = Some(Box::new(move || {
            let _ = started_tx.send(());
            let _ = lock(&resume_rx).recv_timeout(Duration::from_secs(10));
        }));
        let pushing = {
            let source = source.clone();
            std::thread::spawn(move || {
                source.update(Inputs::new(
                    MeshConfig::default(),
                    config(2, "v2"),
                    instances(),
                ))
            })
        };
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the push started");

        // A new proxy subscribes while the push is paused: it gets its resources at once,
        // from the new mesh version.
        let (subscribed_tx, subscribed) = mpsc::channel();
        let connecting = {
            let source = source.clone();
            std::thread::spawn(move || {
                let id = "sidecar~10.0.0.9~other-0.default~default.svc.cluster.local";
                let _ = subscribed_tx.send(source.subscribe(&node(id)));
            })
        };
        let late = subscribed
            .recv_timeout(Duration::from_secs(5))
            .expect("subscribe returned while the push was still running")
            .expect("subscribes");
        assert!(routes_to_subset(&late.borrow(), "v2"));

        resume.send(()).expect("push waiting");
        let stats = pushing.join().expect("push thread");
        connecting.join().expect("subscribe thread");
        // The push went through the proxies it listed when it started; the first one was
        // woken with the new routes.
        assert_eq!((stats.proxies, stats.changed), (1, 1));
        assert!(routes_to_subset(&first.borrow_and_update(), "v2"));
        assert_eq!(source.subscribed().len(), 2);
    }

    #[test]
    fn a_delegate_change_is_pushed_through_its_root() {
        // The root does not change; only the delegate it pulls routes from does.
        let config = |generation, subset: &str| {
            let yaml = format!(
                "{SERVICES}---\n\
                 apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: reviews}}\n\
                 spec: {{hosts: [reviews], http: [{{delegate: {{name: reviews-routes}}}}]}}\n\
                 ---\n\
                 apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: reviews-routes}}\n\
                 spec: {{http: [{{route: [{{destination: {{host: reviews, subset: {subset}}}}}]}}]}}\n"
            );
            let loaded = weft_api::load_str("config.yaml", &yaml);
            assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
            Arc::new(ConfigSnapshot {
                generation,
                resources: loaded.resources,
                errors: Vec::new(),
            })
        };
        let source = MeshSource::new(Inputs::new(
            MeshConfig::default(),
            config(1, "v1"),
            instances(),
        ));
        let mut rx = source.subscribe(&node(ID)).expect("subscribes");
        let first = rx.borrow_and_update().clone();
        let stats = source.update(Inputs::new(
            MeshConfig::default(),
            config(2, "v2"),
            instances(),
        ));
        assert_eq!((stats.proxies, stats.changed), (1, 1));
        let next = rx.borrow_and_update().clone();
        let name = "outbound/reviews.default.svc.cluster.local:9080";
        let version = |x: &XdsResources| {
            x.get(ROUTE_CONFIGURATION_TYPE_URL, name)
                .map(|r| r.version.clone())
        };
        assert!(version(&first).is_some());
        assert_ne!(version(&next), version(&first));
        let (_, translated) = source.config_of("reviews-v1-0.default").expect("by name");
        let routes = translated
            .route_configs
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .find(|vh| vh.name == "reviews.default.svc.cluster.local:9080")
            .map(|vh| vh.routes.clone())
            .unwrap_or_default();
        let cluster = routes.first().and_then(|r| match &r.action {
            Some(weft_xds::proto::route::Action::Route(a)) => {
                a.clusters.first().map(|c| c.cluster.clone())
            }
            _ => None,
        });
        assert_eq!(
            cluster.as_deref(),
            Some("outbound|9080|v2|reviews.default.svc.cluster.local")
        );
    }

    #[test]
    fn malformed_node_ids_are_refused() {
        let source = MeshSource::new(Inputs::new(
            MeshConfig::default(),
            config(1, "v1"),
            instances(),
        ));
        let err = source
            .subscribe(&node("sidecar~not-an-ip~a.b~b.svc.cluster.local"))
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(source.subscribed().is_empty());
        assert!(source.config_of("nobody").is_none());
    }
}
