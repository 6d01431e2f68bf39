//! The control plane as a server (`weft control-plane`): the I/O around the pure translation.
//!
//! ```text
//! MeshFile (--mesh-config)  FileStore (config paths)  InstancesFile (--instances)  dns resolver
//!   all polled or timed; each a watch channel  ------------------------------------------+
//!         v
//!        push_loop: debounce 100 ms, then MeshSource::update
//!            ConfigView once, translate per subscribed proxy, send_if_modified
//!                    |  watch<ProxyResources> per node id
//!                    v
//!        XdsServer (weft-xds, delta ADS, :15010)  ----->  weft-proxy
//!        monitoring HTTP (:15014): /ready /debug/syncz /debug/config_dump /debug/config_errors
//! ```
//!
//! [`ConfigStore`] is the seam for a second source of resources (the Kubernetes API).

pub mod api;
pub mod dashboard;
pub mod dns;
pub mod instances;
pub mod jwks;
pub mod mesh_file;
pub mod monitor;
mod poll;
pub mod push;
pub mod scrape;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_xds::server::XdsServer;

pub use instances::{InstanceEntry, Instances, InstancesFile};
pub use mesh_file::{MeshFile, MeshSettings};
pub use push::{Inputs, MeshSource, PushStats, Watches};
pub use store::{ConfigSnapshot, ConfigStore, FileError, FileStore};

use crate::mesh_config::MeshConfig;

/// How a control plane runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files and directories of mesh resources.
    pub config_paths: Vec<PathBuf>,
    /// Directories among `config_paths` read without their subdirectories.
    pub shallow_dirs: Vec<PathBuf>,
    /// The instances file, if any.
    pub instances: Option<PathBuf>,
    /// The mesh config in force at start.
    pub mesh: MeshConfig,
    /// The file `mesh` was read from, watched for edits.
    pub mesh_path: Option<PathBuf>,
    /// Plaintext xDS (Istio's 15010).
    pub xds_address: SocketAddr,
    /// Monitoring and debug endpoints (Istio's 15014).
    pub monitoring_address: SocketAddr,
    /// How often files are looked at.
    pub poll_interval: Duration,
    /// The certificate authority and its certificate service (Istio's 15012), if run.
    pub ca: Option<CaConfig>,
    /// A Prometheus file_sd file listing the proxies' metrics addresses: scraped for the
    /// service graph (`/dashboard`).
    pub scrape_targets: Option<PathBuf>,
}

/// How the control plane runs its CA.
#[derive(Clone)]
pub struct CaConfig {
    pub options: crate::ca::CaOptions,
    /// The certificate service's address (TLS).
    pub address: SocketAddr,
    /// Who callers are.
    pub authenticator: Arc<dyn crate::ca::auth::Authenticator>,
}

impl std::fmt::Debug for CaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaConfig")
            .field("options", &self.options)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Options {
    pub fn new(config_paths: Vec<PathBuf>) -> Options {
        Options {
            config_paths,
            shallow_dirs: Vec::new(),
            instances: None,
            mesh: MeshConfig::default(),
            mesh_path: None,
            xds_address: SocketAddr::from(([127, 0, 0, 1], 15010)),
            monitoring_address: SocketAddr::from(([127, 0, 0, 1], 15014)),
            poll_interval: Duration::from_millis(200),
            ca: None,
            scrape_targets: None,
        }
    }
}

/// Why a control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("mesh config {path}: {reason}")]
    MeshConfig { path: PathBuf, reason: String },
    #[error("loading the config failed: {0}")]
    Load(String),
    #[error(transparent)]
    Serve(#[from] weft_xds::server::ServeError),
    #[error("CA: {0}")]
    Ca(#[from] crate::ca::CaError),
}

/// Reads an Istio mesh config file (YAML or JSON, `meshConfig`'s fields), checked.
pub fn read_mesh_config(path: &Path) -> Result<MeshConfig, Error> {
    mesh_file::read(path).map_err(|reason| Error::MeshConfig {
        path: path.to_owned(),
        reason,
    })
}

/// A control plane with its config loaded and its ports bound, not yet serving.
pub struct ControlPlane {
    mesh: Arc<MeshFile>,
    store: Arc<FileStore>,
    instances: Arc<InstancesFile>,
    xds: XdsServer<MeshSource>,
    xds_listener: TcpListener,
    monitoring_listener: TcpListener,
    poll_interval: Duration,
    ca: Option<RunningCa>,
    scrape_targets: Option<PathBuf>,
}

/// The CA, loaded and bound.
struct RunningCa {
    authority: Arc<crate::ca::Reloading>,
    service: Arc<crate::ca::serve::CaService>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
}

impl ControlPlane {
    /// Loads the config and the instances (so the first proxy gets a full config), then
    /// binds both ports.
    pub async fn bind(options: Options) -> Result<ControlPlane, Error> {
        let paths = options.config_paths.clone();
        let shallow = options.shallow_dirs.clone();
        let instances_path = options.instances.clone();
        // File reads are blocking; at startup nothing else runs, but keep the runtime's
        // workers free anyway.
        let (store, instances) = tokio::task::spawn_blocking(move || {
            (
                Arc::new(FileStore::with_shallow(paths, shallow)),
                Arc::new(InstancesFile::new(instances_path)),
            )
        })
        .await
        .map_err(|e| Error::Load(e.to_string()))?;
        let snapshot = store.current();
        tracing::info!(
            resources = snapshot.resources.len(),
            rejected_files = snapshot.errors.len(),
            instances = instances.current().instances.len(),
            "config loaded"
        );
        let trust_domain = options.mesh.trust_domain.clone();
        let mesh = Arc::new(MeshFile::new(options.mesh_path.clone(), options.mesh));
        let source = MeshSource::new(Inputs::new(
            (*mesh.current().config).clone(),
            snapshot,
            instances.current(),
        ));
        let bind = |what, address| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| Error::Bind {
                    what,
                    address,
                    source,
                })
        };
        let xds_listener = bind("xds", options.xds_address).await?;
        let monitoring_listener = bind("monitoring", options.monitoring_address).await?;
        let ca = match options.ca {
            None => None,
            Some(c) => {
                let ca_options = c.options.clone();
                // A first start writes the root's key: blocking file I/O.
                let authority =
                    tokio::task::spawn_blocking(move || crate::ca::Authority::load(ca_options))
                        .await
                        .map_err(|e| Error::Load(e.to_string()))??;
                let tls = crate::ca::serve::tls_config(&authority)?;
                let authority = Arc::new(crate::ca::Reloading::new(authority));
                let service = Arc::new(crate::ca::serve::CaService::new(
                    authority.clone(),
                    c.authenticator.clone(),
                    trust_domain,
                ));
                let listener = bind("ca", c.address).await?;
                Some(RunningCa {
                    authority,
                    service,
                    tls,
                    listener,
                })
            }
        };
        Ok(ControlPlane {
            ca,
            mesh,
            store,
            instances,
            xds: XdsServer::new(source),
            xds_listener,
            monitoring_listener,
            poll_interval: options.poll_interval,
            scrape_targets: options.scrape_targets,
        })
    }

    /// The bound xDS address (the real port when 0 was asked for).
    pub fn xds_address(&self) -> Option<SocketAddr> {
        self.xds_listener.local_addr().ok()
    }

    pub fn monitoring_address(&self) -> Option<SocketAddr> {
        self.monitoring_listener.local_addr().ok()
    }

    /// The certificate service's bound address, when the CA runs.
    pub fn ca_address(&self) -> Option<SocketAddr> {
        self.ca.as_ref()?.listener.local_addr().ok()
    }

    /// The CA's trust bundle (PEM roots), when the CA runs: what proxies verify the
    /// certificate service and each other with.
    pub fn trust_bundle(&self) -> Option<String> {
        Some(
            self.ca
                .as_ref()?
                .authority
                .current()
                .trust_bundle()
                .to_owned(),
        )
    }

    /// The xDS server (its status, its source).
    /// The instances file it watches: [`InstancesFile::poll`] reads a rewritten file at once,
    /// instead of at the next poll.
    pub fn instances_file(&self) -> Arc<InstancesFile> {
        self.instances.clone()
    }

    pub fn xds(&self) -> &XdsServer<MeshSource> {
        &self.xds
    }

    /// Serves until `shutdown` completes, then closes the xDS streams (proxies keep their
    /// config and reconnect) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (dns_tx, dns_rx) = tokio::sync::watch::channel(Arc::default());
        let (jwks_tx, jwks_rx) = tokio::sync::watch::channel(Arc::default());
        let mesh_config = {
            let (tx, rx) = tokio::sync::watch::channel(self.mesh.current().config.clone());
            let mut settings = self.mesh.subscribe();
            tokio::spawn(async move {
                while settings.changed().await.is_ok() {
                    let config = settings.borrow_and_update().config.clone();
                    tx.send_if_modified(|c| {
                        let changed = **c != *config;
                        *c = config;
                        changed
                    });
                }
            });
            rx
        };
        let mut ca_task = None;
        if let Some(ca) = self.ca {
            let stop = stop_rx.clone();
            let reloading = ca.authority.clone();
            let every = self.poll_interval.max(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let r = reloading.clone();
                    match tokio::task::spawn_blocking(move || r.poll()).await {
                        Ok(Err(e)) => tracing::error!("CA: {e}; the previous CA stays in force"),
                        Ok(Ok(_)) => {}
                        Err(_) => break,
                    }
                }
            });
            ca_task = Some(tokio::spawn(async move {
                if let Err(e) = crate::ca::serve::serve(ca.listener, ca.tls, ca.service, stop).await
                {
                    tracing::error!("CA certificate service stopped: {e}");
                }
            }));
        }
        let mesh_metrics = scrape::MeshMetrics::new(self.scrape_targets.is_some());
        let scrape_task = self
            .scrape_targets
            .clone()
            .map(|file| tokio::spawn(scrape::scrape_loop(file, mesh_metrics.clone())));
        let tasks = [
            tokio::spawn(self.mesh.clone().watch(self.poll_interval)),
            tokio::spawn(self.store.clone().watch(self.poll_interval)),
            tokio::spawn(self.instances.clone().watch(self.poll_interval)),
            tokio::spawn(dns::resolve_loop(
                self.store.subscribe(),
                mesh_config,
                dns_tx,
            )),
            tokio::spawn(jwks::fetch_loop(self.store.subscribe(), jwks_tx)),
            tokio::spawn(push::push_loop(
                self.xds.source().clone(),
                Watches {
                    mesh: self.mesh.subscribe(),
                    config: self.store.subscribe(),
                    instances: self.instances.subscribe(),
                    dns: dns_rx,
                    jwks: jwks_rx,
                },
            )),
            tokio::spawn(monitor::serve(
                self.monitoring_listener,
                self.xds.clone(),
                mesh_metrics,
                stop_rx,
            )),
        ];
        let served = self
            .xds
            .serve(self.xds_listener, async move {
                shutdown.await;
                tracing::info!("control plane stopping");
                let _ = stop_tx.send(true);
            })
            .await;
        for t in tasks.into_iter().chain(ca_task).chain(scrape_task) {
            t.abort();
        }
        served.map_err(Error::from)
    }
}

/// A fresh directory under the system temp dir, for tests.
#[cfg(test)]
pub(crate) fn test_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weft-control-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
