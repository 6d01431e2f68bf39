//! The Workload replicas that run, each a sidecar and an app process, and how they follow the
//! Workloads in force while the mesh runs.
//!
//! The control plane in this process reads DIR's top-level files and the applied resources
//! (the inputs of the start-up plan) and keeps a rejected file's last good version in force.
//! [`Replicas::follow`] looks at what it has in force; when that changes, it makes the next
//! plan ([`Plan::replan`]) and moves to it:
//!
//! 1. the instances file is rewritten, and the control plane has read it, so that the other
//!    proxies stop sending to replicas that go and new sidecars find their instance;
//! 2. replicas that go, or run differently now, are stopped (app and sidecar, SIGTERM and the
//!    grace period, as at shutdown);
//! 3. new replicas start as at start-up: sidecar, its first config, then the app.
//!
//! Replicas that [`Replica::runs_as`] before are not touched.
//!
//! Readiness, as Kubernetes' readiness probes give it: a replica is an endpoint of its services
//! only while its app listens on every port it declares. The instances file marks it
//! `ready: false` from its start until the app accepts connections, and again from the moment
//! the app exits until its restart listens; each change is written and read by the control
//! plane at once, so other proxies stop sending to a crashed app within a push.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use weft_api::Severity;
use weft_control::server::{ConfigSnapshot, InstancesFile, MeshSource, monitor};
use weft_xds::server::XdsServer;

use super::plan::{self, Plan, Replica};
use super::state;
use super::supervise::{Child, ChildSpec, Output, Readiness, Supervisor};
use super::wait_ready;

/// How often the control plane's config in force is looked at.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a move waits for the control plane to read the rewritten instances file.
const INSTANCES_TIMEOUT: Duration = Duration::from_secs(5);
/// How long starting replicas waits for the proxies to have their endpoints.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long starting replicas waits for their apps to listen before going on.
pub const APP_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a proxy or a workload's process.
pub struct Launch {
    /// This `weft` executable.
    pub exe: PathBuf,
    pub xds: SocketAddr,
    /// Where the proxies' bootstraps are written.
    pub proxies: PathBuf,
    pub log_level: String,
    /// `--capture`: the pod network replicas' namespaces join.
    pub network: Option<Arc<super::netns::Network>>,
    /// The control plane's CA: every proxy gets a credential for its identity.
    pub ca: Option<LocalCa>,
}

/// The CA of `weft up`'s control plane, as proxies reach it.
pub struct LocalCa {
    pub address: SocketAddr,
    /// The trust bundle (the root the CA's service certificate chains to).
    pub root_file: PathBuf,
    pub tokens: Arc<weft_control::ca::auth::LocalTokens>,
}

/// Who a proxy is: its node id, and the identity its certificate names.
pub struct Who<'a> {
    pub node_id: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

impl Launch {
    /// A `weft proxy` with its bootstrap written to `<proxies>/<name>.yaml`.
    pub fn proxy(
        &self,
        label: String,
        name: &str,
        who: Who<'_>,
        admin: SocketAddr,
        app_probes: &[SocketAddr],
        color: usize,
    ) -> std::io::Result<ChildSpec> {
        let file = self.bootstrap_file(name);
        let identity = match &self.ca {
            Some(ca) => Some(self.credential(ca, name, (who.namespace, who.service_account))?),
            None => None,
        };
        let bootstrap =
            plan::bootstrap(who.node_id, self.xds, admin, app_probes, identity.as_ref());
        state::write_atomic(&file, bootstrap.as_bytes())?;
        Ok(ChildSpec {
            label,
            program: self.exe.clone(),
            args: vec![
                "proxy".into(),
                "--config".into(),
                file.into_os_string(),
                "--concurrency".into(),
                "1".into(),
                "--log-level".into(),
                self.log_level.clone().into(),
            ],
            env: Vec::new(),
            cwd: None,
            color,
            readiness: Readiness::ProxyLine,
        })
    }

    /// A fresh token bound to `(namespace, service account)`, written where only this proxy
    /// reads it (mode 0600), and what its bootstrap says of its identity.
    fn credential(
        &self,
        ca: &LocalCa,
        name: &str,
        (namespace, service_account): (&str, &str),
    ) -> std::io::Result<plan::IdentityBootstrap> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token = ca.tokens.issue(weft_control::ca::auth::WorkloadIdentity {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        });
        let token_file = self.proxies.join(format!("{name}.token"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&token_file)?;
        f.write_all(token.as_bytes())?;
        Ok(plan::IdentityBootstrap {
            ca_address: ca.address,
            ca_root_file: ca.root_file.clone(),
            token_file,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    fn bootstrap_file(&self, name: &str) -> PathBuf {
        self.proxies.join(format!("{name}.yaml"))
    }

    /// A replica's sidecar (under `--capture`, in the replica's new network namespace, as
    /// uid 1337, which then owns its bootstrap and token).
    fn sidecar(&self, r: &Replica, color: usize) -> std::io::Result<ChildSpec> {
        let label = format!("{}.proxy", r.name);
        if let Some(net) = &self.network {
            net.add(r).map_err(std::io::Error::other)?;
        }
        let mut spec = self.proxy(
            label,
            &r.name,
            Who {
                node_id: &r.node_id(),
                namespace: &r.namespace,
                service_account: r.spec.service_account(),
            },
            r.admin_addr(),
            &r.probe_addrs(),
            color,
        )?;
        if let Some(net) = &self.network {
            let uid = Some(super::netns::PROXY_UID);
            std::os::unix::fs::chown(self.bootstrap_file(&r.name), uid, uid)?;
            let token = self.proxies.join(format!("{}.token", r.name));
            if token.exists() {
                std::os::unix::fs::chown(token, uid, uid)?;
            }
            (spec.program, spec.args) = net.wrap(r, true, spec.program, spec.args);
        }
        Ok(spec)
    }

    /// A replica's process: `weft ...` runs this executable, anything else is found in PATH.
    fn workload(&self, r: &Replica, color: usize) -> ChildSpec {
        let mut argv = r.spec.command.iter();
        let program = match argv.next().map(String::as_str) {
            Some("weft") | None => self.exe.clone(),
            Some(p) => PathBuf::from(p),
        };
        let args = argv.map(OsString::from).collect();
        let (program, args, readiness) = match &self.network {
            // Captured, a connection from the host to the app would be taken by the sidecar:
            // its readiness is the sidecar's, which probes the app inside the namespace.
            Some(net) => {
                let (program, args) = net.wrap(r, false, program, args);
                let health = SocketAddr::new(std::net::IpAddr::V4(r.pod_ip), plan::HEALTH_PORT);
                (program, args, Readiness::Healthy(health))
            }
            None => (program, args, Readiness::Listening(r.app_addrs())),
        };
        ChildSpec {
            label: r.name.clone(),
            program,
            args,
            env: r.env(),
            cwd: r.spec.working_dir.as_ref().map(|d| r.base_dir.join(d)),
            color,
            readiness,
        }
    }
}

/// A replica's processes.
struct Processes {
    sidecar: Child,
    /// None until the sidecar is ready.
    app: Option<Child>,
    /// Which start of an app this is: events of an app stopped since are told apart.
    serial: u64,
    /// The app has listened once (a later ready is a restart rejoining).
    listened: bool,
    /// The app has exited without ever listening (crashing at start).
    exited_unready: bool,
    color: usize,
}

/// An app turned ready (listening) or not (exited): its replica, the start it belongs to.
struct AppEvent {
    key: Key,
    serial: u64,
    ready: bool,
}

/// (namespace, workload, replica number): [`Replica::key`], owned.
type Key = (String, String, u32);

fn key(r: &Replica) -> Key {
    let (namespace, workload, index) = r.key();
    (namespace.to_owned(), workload.to_owned(), index)
}

/// The replicas that run: the plan in force and every replica's processes.
pub struct Replicas {
    plan: Plan,
    running: BTreeMap<Key, Processes>,
    launch: Launch,
    /// The instances file the control plane reads...
    instances: PathBuf,
    /// ...and the control plane's watch of it, told to read it as soon as it is rewritten.
    instances_file: Arc<InstancesFile>,
    /// The control plane's xDS server: whether the proxies have what it pushed.
    xds: XdsServer<MeshSource>,
    /// The replicas whose app listens: the endpoints of their services.
    ready: BTreeSet<Key>,
    /// Every running app's readiness changes.
    events: mpsc::UnboundedReceiver<AppEvent>,
    events_tx: mpsc::UnboundedSender<AppEvent>,
    next_serial: u64,
    out: Arc<Output>,
    /// The label color of the next replica started.
    next_color: usize,
}

impl Replicas {
    /// Nothing running yet; `plan` is what [`Replicas::start_sidecars`] and
    /// [`Replicas::start_apps`] start.
    pub fn new(
        plan: Plan,
        launch: Launch,
        instances: PathBuf,
        instances_file: Arc<InstancesFile>,
        xds: XdsServer<MeshSource>,
        out: Arc<Output>,
    ) -> Replicas {
        let (events_tx, events) = mpsc::unbounded_channel();
        Replicas {
            plan,
            running: BTreeMap::new(),
            launch,
            instances,
            instances_file,
            xds,
            ready: BTreeSet::new(),
            events,
            events_tx,
            next_serial: 0,
            out,
            next_color: 0,
        }
    }

    /// The instances file's content for `plan`, with the readiness known now.
    pub fn instances_yaml(&self, plan: &Plan) -> Result<String, yaml_serde::Error> {
        plan.instances_yaml(|r| self.ready.contains(&key(r)))
    }

    /// Writes the instances file for the plan in force and has the control plane read it now.
    async fn write_instances(&self) -> Result<(), String> {
        let yaml = self.instances_yaml(&self.plan).map_err(|e| e.to_string())?;
        state::write_atomic(&self.instances, yaml.as_bytes())
            .map_err(|e| format!("{}: {e}", self.instances.display()))?;
        let file = self.instances_file.clone();
        let _ = tokio::task::spawn_blocking(move || file.poll()).await;
        Ok(())
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Takes the next label color (the gateway takes one too).
    pub fn color(&mut self) -> usize {
        self.next_color += 1;
        self.next_color - 1
    }

    /// Starts the sidecars of `replicas`; returns each one's label and ready watch.
    pub fn start_sidecars(
        &mut self,
        sup: &mut Supervisor,
        replicas: &[Replica],
    ) -> std::io::Result<Vec<(String, watch::Receiver<bool>)>> {
        let mut ready = Vec::new();
        for r in replicas {
            let color = self.color();
            let spec = self.launch.sidecar(r, color)?;
            let label = spec.label.clone();
            let sidecar = sup.spawn(spec);
            ready.push((label, sidecar.ready()));
            self.running.insert(
                key(r),
                Processes {
                    sidecar,
                    app: None,
                    serial: 0,
                    listened: false,
                    exited_unready: false,
                    color,
                },
            );
        }
        Ok(ready)
    }

    /// Starts the apps of `replicas`, whose sidecars run. Each becomes an endpoint once it
    /// listens ([`Replicas::wait_apps_ready`], or [`Replicas::follow`]).
    pub fn start_apps(&mut self, sup: &mut Supervisor, replicas: &[Replica]) {
        for r in replicas {
            let Some(p) = self.running.get_mut(&key(r)) else {
                continue;
            };
            let app = sup.spawn(self.launch.workload(r, p.color));
            self.next_serial += 1;
            p.serial = self.next_serial;
            // Forward the app's readiness changes until its task ends.
            let (mut ready, events, k, serial) =
                (app.ready(), self.events_tx.clone(), key(r), p.serial);
            tokio::spawn(async move {
                while ready.changed().await.is_ok() {
                    let event = AppEvent {
                        key: k.clone(),
                        serial,
                        ready: *ready.borrow_and_update(),
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            });
            p.app = Some(app);
        }
    }

    /// Waits until the app of every replica in `replicas` listens, or `timeout` passes (those
    /// still not listening are named). False when a stop was asked for first.
    pub async fn wait_apps_ready(
        &mut self,
        replicas: &[Replica],
        timeout: Duration,
        quit: &mut watch::Receiver<bool>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Not listening yet, and not crashing before it does.
        let waiting = |me: &Self| {
            replicas.iter().any(|r| {
                let k = key(r);
                !me.ready.contains(&k) && me.running.get(&k).is_some_and(|p| !p.exited_unready)
            })
        };
        while waiting(self) {
            tokio::select! {
                Some(event) = self.events.recv() => self.on_app_event(event).await,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = quit.wait_for(|q| *q) => return false,
            }
        }
        // The apps listen; so that "started" means reachable, wait until the proxies have the
        // endpoints their readiness made.
        self.wait_pushed(quit).await;
        let late: Vec<&Replica> = replicas
            .iter()
            .filter(|r| !self.ready.contains(&key(r)))
            .collect();
        if !late.is_empty() {
            self.out.event(
                false,
                &format!(
                    "{} not listening yet; going on (each becomes an endpoint once its app \
                     listens on its ports)",
                    names(late.into_iter())
                ),
            );
        }
        true
    }

    /// Waits (at most [`PUSH_TIMEOUT`]) until the control plane has pushed the instances file
    /// as last written and every proxy has ACKed what it has.
    async fn wait_pushed(&self, quit: &mut watch::Receiver<bool>) {
        let written = self.instances_file.current().generation;
        let source = self.xds.source();
        let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
        loop {
            let pushed = source.state().instances.generation >= written;
            if pushed && monitor::syncz(&self.xds).iter().all(|s| s.in_sync) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = quit.wait_for(|q| *q) => return,
            }
        }
    }

    /// An app turned ready or not: its replica joins or leaves the endpoints.
    async fn on_app_event(&mut self, event: AppEvent) {
        let Some(r) = self.plan.replicas.iter().find(|r| key(r) == event.key) else {
            return;
        };
        let Some(p) = self
            .running
            .get_mut(&event.key)
            .filter(|p| p.serial == event.serial)
        else {
            return;
        };
        if self.ready.contains(&event.key) == event.ready {
            if !event.ready && !p.listened {
                p.exited_unready = true;
            }
            return;
        }
        // The first time is the start (its caller says so); later ones are restarts.
        let restart = std::mem::replace(&mut p.listened, true);
        let (name, listen) = (r.name.clone(), r.app_addrs());
        if event.ready {
            self.ready.insert(event.key);
        } else {
            self.ready.remove(&event.key);
        }
        let written = self.write_instances().await;
        let listening = listen
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match (event.ready, written) {
            (_, Err(e)) => self
                .out
                .event(false, &format!("{e}; {name}'s readiness not recorded")),
            (true, Ok(())) if !restart => {}
            (true, Ok(())) => self.out.event(
                true,
                &format!("{name} rejoined the endpoints: its app listens again ({listening})"),
            ),
            (false, Ok(())) => self.out.event(
                false,
                &format!("{name} left the endpoints: its app exited (back when it listens again)"),
            ),
        }
    }

    /// Follows the Workloads the control plane has in force until a stop is asked for.
    pub async fn follow(
        &mut self,
        sup: &mut Supervisor,
        source: &MeshSource,
        base_dir: &Path,
        quit: &mut watch::Receiver<bool>,
    ) {
        let mut seen = None;
        let mut reported = BTreeSet::new();
        // Where the gateway listens, as last printed.
        let mut gateway = super::gateway::reachable_now(source);
        // A plan error stands until the resources change it; it is reported once.
        let mut plan_error = None;
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(event) = self.events.recv() => {
                    self.on_app_event(event).await;
                    continue;
                }
                _ = quit.wait_for(|q| *q) => return,
            }
            let config = source.state().config.clone();
            if seen == Some(config.generation) {
                continue;
            }
            seen = Some(config.generation);
            self.report_rejected(&config, &mut reported);
            let now = super::gateway::reachable_now(source);
            if now != gateway {
                if now.is_empty() {
                    self.out
                        .event(true, "Ingress gateway: no Gateway server selects it now");
                }
                for line in &now {
                    self.out.event(true, &format!("Ingress gateway {line}"));
                }
                gateway = now;
            }
            let next = match self.plan.replan(&config.resources, base_dir) {
                Ok(p) => p,
                Err(e) => {
                    let e = e.to_string();
                    if plan_error.as_ref() != Some(&e) {
                        self.out.event(
                            false,
                            &format!(
                                "{e}; no Workload change applies until this is fixed, and \
                                 the running workloads stay as they are"
                            ),
                        );
                        plan_error = Some(e);
                    }
                    continue;
                }
            };
            plan_error = None;
            if !self.move_to(next, sup, source, quit).await {
                return;
            }
        }
    }

    /// Reports each rejected version of a file once, with its errors: the control plane keeps
    /// the file's last good version, and so do the running replicas. (The control plane's own
    /// warning of it is silenced in `weft up`, so that it is said once.)
    fn report_rejected(
        &self,
        config: &ConfigSnapshot,
        reported: &mut BTreeSet<(PathBuf, SystemTime)>,
    ) {
        reported.retain(|(path, since)| {
            config
                .errors
                .iter()
                .any(|e| (&e.path, &e.since) == (path, since))
        });
        for e in &config.errors {
            if !reported.insert((e.path.clone(), e.since)) {
                continue;
            }
            let errors: Vec<_> = e
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .collect();
            let workloads = errors
                .iter()
                .any(|d| d.resource.as_ref().is_some_and(|r| r.kind == "Workload"));
            let kept = if e.previous_in_force {
                "its previous version stays in force"
            } else {
                "none of its resources are in force"
            };
            let what = if workloads {
                "Workload change not applied"
            } else {
                "edit not applied"
            };
            self.out
                .event(false, &format!("{}: {what} ({kept}):", e.path.display()));
            for d in errors {
                self.out.text(&format!("  {d}"));
            }
        }
    }

    /// Moves from the plan in force to `next`. False when a stop was asked for meanwhile.
    async fn move_to(
        &mut self,
        next: Plan,
        sup: &mut Supervisor,
        source: &MeshSource,
        quit: &mut watch::Receiver<bool>,
    ) -> bool {
        let changes = self.plan.diff(&next);
        if changes.is_empty() {
            self.plan = next;
            return true;
        }
        let stop: Vec<Replica> = changes.stop.iter().map(|r| (*r).clone()).collect();
        let start: Vec<Replica> = changes.start.iter().map(|r| (*r).clone()).collect();
        self.out.event(true, &describe(&stop, &start));

        // Replicas stopped or restarted are endpoints no more; a kept one stays as it is.
        self.ready
            .retain(|k| changes.keep.iter().any(|r| key(r) == *k));
        let yaml = match self.instances_yaml(&next) {
            Ok(y) => y,
            Err(e) => {
                self.out.event(
                    false,
                    &format!("instances: {e}; Workload changes not applied"),
                );
                return true;
            }
        };
        let before = source.state().instances.generation;
        if let Err(e) = state::write_atomic(&self.instances, yaml.as_bytes()) {
            self.out.event(
                false,
                &format!(
                    "{}: {e}; Workload changes not applied",
                    self.instances.display()
                ),
            );
            return true;
        }
        if !self.instances_read(source, before, quit).await {
            return false;
        }

        let mut stopping = JoinSet::new();
        for r in &stop {
            let Some(p) = self.running.remove(&key(r)) else {
                continue;
            };
            stopping.spawn(p.sidecar.stop());
            if let Some(app) = p.app {
                stopping.spawn(app.stop());
            }
            if !start.iter().any(|s| s.key() == r.key()) {
                let _ = std::fs::remove_file(self.launch.bootstrap_file(&r.name));
            }
        }
        while stopping.join_next().await.is_some() {}
        if let Some(net) = &self.launch.network {
            for r in &stop {
                net.remove(r);
            }
        }
        if !stop.is_empty() {
            self.out
                .event(true, &format!("Stopped {}", names(stop.iter())));
        }
        self.plan = next;
        // Prometheus's targets follow the replicas (it rereads the file by itself).
        if let Some(state) = self.instances.parent()
            && let Err(e) = super::prometheus::write_proxies(state, &self.plan)
        {
            self.out.event(false, &format!("prometheus targets: {e}"));
        }
        if start.is_empty() {
            return true;
        }

        let mut ready = match self.start_sidecars(sup, &start) {
            Ok(r) => r,
            Err(e) => {
                self.out
                    .event(false, &format!("{}: {e}", self.launch.proxies.display()));
                return true;
            }
        };
        if !wait_ready(&self.out, &mut ready, quit).await {
            return false;
        }
        self.start_apps(sup, &start);
        if !self.wait_apps_ready(&start, APP_READY_TIMEOUT, quit).await {
            return false;
        }
        for r in start.iter().filter(|r| self.ready.contains(&key(r))) {
            self.out.event(
                true,
                &format!(
                    "Started {} (pod IP {}, app {})",
                    r.name,
                    r.pod_ip,
                    r.listen_addr()
                        .map_or_else(|| r.app_ip.to_string(), |a| a.to_string())
                ),
            );
        }
        true
    }

    /// Waits until the control plane has read the instances file written after it had
    /// generation `before`. False when a stop was asked for first.
    async fn instances_read(
        &self,
        source: &MeshSource,
        before: u64,
        quit: &mut watch::Receiver<bool>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + INSTANCES_TIMEOUT;
        while source.state().instances.generation <= before {
            if tokio::time::Instant::now() >= deadline {
                self.out.event(
                    false,
                    &format!(
                        "the control plane has not read {} after {INSTANCES_TIMEOUT:?}; going on",
                        self.instances.display()
                    ),
                );
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = quit.wait_for(|q| *q) => return false,
            }
        }
        true
    }
}

/// `Workloads changed: starting c-0; stopping b-0; restarting a-0, a-1`.
fn describe(stop: &[Replica], start: &[Replica]) -> String {
    let restarted = |r: &&Replica, others: &[Replica]| others.iter().any(|o| o.key() == r.key());
    let mut parts = Vec::new();
    let starting: Vec<&Replica> = start.iter().filter(|r| !restarted(r, stop)).collect();
    let stopping: Vec<&Replica> = stop.iter().filter(|r| !restarted(r, start)).collect();
    let restarting: Vec<&Replica> = start.iter().filter(|r| restarted(r, stop)).collect();
    for (verb, list) in [
        ("starting", starting),
        ("stopping", stopping),
        ("restarting", restarting),
    ] {
        if !list.is_empty() {
            parts.push(format!("{verb} {}", names(list.into_iter())));
        }
    }
    format!("Workloads changed: {}", parts.join("; "))
}

fn names<'a>(replicas: impl Iterator<Item = &'a Replica>) -> String {
    replicas
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
