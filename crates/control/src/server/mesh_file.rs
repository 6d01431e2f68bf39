//! The mesh config file (`--mesh-config`, Istio's `mesh` key of the `istio` ConfigMap),
//! watched like the resources: an edit is read and pushed; a version that does not parse or
//! fails `MeshConfig::check` is reported (log, `/debug/config_errors`) and the previous one
//! stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::instances::InstancesError;
use super::poll::{self, Stamp};
use crate::mesh_config::MeshConfig;

/// The mesh config in force, and why the file's latest version is not, if it is not.
#[derive(Debug, Clone, Default)]
pub struct MeshSettings {
    pub config: Arc<MeshConfig>,
    pub error: Option<InstancesError>,
}

/// Reads and checks a mesh config file's text (YAML or JSON, `meshConfig`'s fields; empty is
/// the default). Errors name the field.
pub fn parse(text: &str) -> Result<MeshConfig, String> {
    if text.trim().is_empty() {
        return Ok(MeshConfig::default());
    }
    let mesh: MeshConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
    let errors: Vec<String> = mesh
        .check()
        .into_iter()
        .filter(|f| f.severity == weft_api::diag::Severity::Error)
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect();
    if errors.is_empty() {
        Ok(mesh)
    } else {
        Err(errors.join("; "))
    }
}

/// Reads a mesh config file.
pub fn read(path: &Path) -> Result<MeshConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse(&text)
}

/// A watched mesh config file (or none: the config given, never changing).
pub struct MeshFile {
    path: Option<PathBuf>,
    stamp: Mutex<Option<Stamp>>,
    tx: watch::Sender<Arc<MeshSettings>>,
}

impl MeshFile {
    /// `initial` is the config read at start (from `path`, when there is one).
    pub fn new(path: Option<PathBuf>, initial: MeshConfig) -> MeshFile {
        let stamp = path.as_deref().and_then(poll::stamp);
        MeshFile {
            path,
            stamp: Mutex::new(stamp),
            tx: watch::channel(Arc::new(MeshSettings {
                config: Arc::new(initial),
                error: None,
            }))
            .0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshSettings>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<MeshSettings> {
        self.tx.borrow().clone()
    }

    /// Re-reads the file if it changed; returns whether something new was published. A
    /// missing file keeps the config in force (a ConfigMap volume swaps its files by renames).
    pub fn poll(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        if !matches!(poll::changed(path, &self.stamp), Some(Some(_))) {
            return false;
        }
        let prev = self.current();
        let next = match read(path) {
            Ok(config) => {
                tracing::info!(file = %path.display(), "mesh config loaded");
                MeshSettings {
                    config: Arc::new(config),
                    error: None,
                }
            }
            Err(message) => {
                tracing::warn!(
                    file = %path.display(),
                    "mesh config rejected; the previous one stays in force: {message}"
                );
                MeshSettings {
                    config: prev.config.clone(),
                    error: Some(InstancesError {
                        path: path.clone(),
                        message,
                        since: SystemTime::now(),
                    }),
                }
            }
        };
        self.tx.send_replace(Arc::new(next));
        true
    }

    /// Polls every `interval` until the returned future is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        if self.path.is_none() {
            return std::future::pending().await;
        }
        poll::every(interval, "mesh config", move || {
            self.poll();
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::Mode;

    #[test]
    fn edits_are_read_and_bad_versions_keep_the_last_good_one() {
        let dir = super::super::test_dir("mesh");
        let path = dir.join("mesh.yaml");
        std::fs::write(&path, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n").expect("write");
        let file = MeshFile::new(Some(path.clone()), read(&path).expect("reads"));
        let mode = |f: &MeshFile| f.current().config.outbound_traffic_policy.mode;
        assert_eq!(mode(&file), Mode::RegistryOnly);
        assert!(!file.poll(), "unchanged");

        std::fs::write(
            &path,
            "outboundTrafficPolicy: {mode: ALLOW_ANY}\nrootNamespace: x\n",
        )
        .expect("write");
        assert!(file.poll());
        assert_eq!(mode(&file), Mode::AllowAny);
        assert_eq!(file.current().config.root_namespace, "x");

        for bad in [
            "outboundTrafficPolicy: {mode: SOMETIMES}\n",
            "dnsRefreshRate: soon\n",
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(file.poll());
            let now = file.current();
            assert_eq!(
                now.config.outbound_traffic_policy.mode,
                Mode::AllowAny,
                "{bad}"
            );
            let error = now.error.as_ref().expect("an error");
            assert_eq!(error.path, path);
            assert!(!error.message.is_empty());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
