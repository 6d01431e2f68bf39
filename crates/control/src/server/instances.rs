//! The instances file: the workload instances that run, with their addresses.
//!
//! In local mode nothing like the Kubernetes API knows which replicas run where: the runner
//! starts each replica, gives it a loopback address, and writes the list to this file, which
//! the control plane watches like the config. On Kubernetes, Pods take its place.
//!
//! The file is a YAML (or JSON) list; every field is camelCase and unknown fields are errors:
//!
//! ```yaml
//! - name: reviews-v1-0            # the instance (pod) name, unique in its namespace
//!   namespace: default            # optional, default "default"
//!   labels: {app: reviews, version: v1}
//!   serviceAccount: bookinfo-reviews   # optional, default "default"
//!   ip: 127.0.1.3                 # the instance's address ("pod IP"); its sidecar binds it
//!   appHost: 127.0.2.3            # optional: where the application listens, so where the
//!                                 # sidecar's inbound listeners forward (default 127.0.0.1)
//!   ports:                        # what the application listens on
//!   - {name: http, port: 9080, protocol: HTTP}   # protocol optional: HTTP, HTTP2, GRPC, TCP, ...
//!   ready: false                  # optional, default true: false takes the instance out of
//!                                 # every service's endpoints (a NotReady pod)
//! ```
//!
//! A missing file is an empty list (the runner may not have written it yet). A file that does
//! not parse is reported and the previous good list stays in force.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weft_api::networking::gateway::Protocol;

use super::poll::{self, Stamp};
use crate::registry::{InstancePort, WorkloadInstance};

/// One entry of the instances file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceEntry {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_host: Option<IpAddr>,
    #[serde(default)]
    pub ports: Vec<PortEntry>,
    /// Whether the instance takes traffic (its app is up and listening).
    #[serde(default = "ready_by_default", skip_serializing_if = "is_ready")]
    pub ready: bool,
    /// How the instance's traffic reaches its sidecar, in Istio's words
    /// (`sidecar.istio.io/interceptionMode`): `REDIRECT`, iptables capture (`weft up
    /// --capture`), or `NONE` (unset), the sidecar as an explicit proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<String>,
}

fn ready_by_default() -> bool {
    true
}

fn is_ready(ready: &bool) -> bool {
    *ready
}

/// A port the instance's application listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortEntry {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// Istio's protocol names (`HTTP`, `HTTP2`, `GRPC`, `HTTPS`, `TLS`, `TCP`, ...);
    /// unset: not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// The instances in force.
#[derive(Debug, Clone, Default)]
pub struct Instances {
    pub instances: Vec<WorkloadInstance>,
    /// (namespace, name) -> the application's address, for instances that set `appHost`.
    pub app_hosts: HashMap<(String, String), IpAddr>,
    /// (namespace, name) of the instances whose traffic iptables captures.
    pub captured: HashSet<(String, String)>,
    /// Why the file's latest version is not in force, if it is not.
    pub error: Option<InstancesError>,
    /// Increases with every change published.
    pub generation: u64,
}

impl Instances {
    /// The instances an instances file lists (generation 0).
    pub fn from_entries(entries: &[InstanceEntry]) -> Instances {
        Instances {
            instances: entries.iter().map(InstanceEntry::to_instance).collect(),
            app_hosts: entries
                .iter()
                .filter_map(|e| Some(((e.namespace.clone(), e.name.clone()), e.app_host?)))
                .collect(),
            captured: entries
                .iter()
                .filter(|e| e.interception_mode.as_deref() == Some("REDIRECT"))
                .map(|e| (e.namespace.clone(), e.name.clone()))
                .collect(),
            error: None,
            generation: 0,
        }
    }
}

/// The instances file's latest version was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancesError {
    pub path: PathBuf,
    pub message: String,
    pub since: SystemTime,
}

/// Parses and checks an instances file's text.
pub fn parse(text: &str) -> Result<Vec<InstanceEntry>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Option<Vec<InstanceEntry>> =
        yaml_serde::from_str(text).map_err(|e| e.to_string())?;
    let entries = entries.unwrap_or_default();
    let mut names = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if e.name.is_empty() {
            return Err(format!("[{i}].name: must not be empty"));
        }
        if !names.insert((e.namespace.as_str(), e.name.as_str())) {
            return Err(format!(
                "[{i}].name: instance {}/{} is listed twice",
                e.namespace, e.name
            ));
        }
        match e.interception_mode.as_deref() {
            None | Some("REDIRECT" | "NONE") => {}
            Some("TPROXY") => {
                return Err(format!(
                    "[{i}].interceptionMode: TPROXY is not supported; use REDIRECT"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "[{i}].interceptionMode: {other:?} is not REDIRECT or NONE"
                ));
            }
        }
        for (j, p) in e.ports.iter().enumerate() {
            if let Some(proto) = &p.protocol
                && Protocol::parse(proto).is_none()
            {
                return Err(format!(
                    "[{i}].ports[{j}].protocol: unknown protocol {proto:?}"
                ));
            }
            if p.port == 0 {
                return Err(format!("[{i}].ports[{j}].port: must be 1-65535"));
            }
        }
    }
    Ok(entries)
}

impl InstanceEntry {
    /// The registry's view of this entry.
    pub fn to_instance(&self) -> WorkloadInstance {
        WorkloadInstance {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.service_account.clone(),
            ip: self.ip,
            ports: self
                .ports
                .iter()
                .map(|p| InstancePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: p.protocol.as_deref().and_then(Protocol::parse),
                })
                .collect(),
            ready: self.ready,
        }
    }
}

/// A watched instances file (or none: an empty list, never changing).
pub struct InstancesFile {
    path: Option<PathBuf>,
    /// The stamp last read; `None` while the file is missing.
    stamp: Mutex<Option<Stamp>>,
    tx: watch::Sender<Arc<Instances>>,
}

impl InstancesFile {
    /// Reads `path` now.
    pub fn new(path: Option<PathBuf>) -> InstancesFile {
        let file = InstancesFile {
            path,
            stamp: Mutex::new(None),
            tx: watch::channel(Arc::new(Instances::default())).0,
        };
        file.poll();
        file
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Instances>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Instances> {
        self.tx.borrow().clone()
    }

    /// Re-reads the file if it changed; returns whether a new list (or error) was published.
    pub fn poll(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let Some(now) = poll::changed(path, &self.stamp) else {
            return false;
        };
        let prev = self.current();
        let next = match now {
            None => {
                tracing::info!(file = %path.display(), "instances file missing: no instances");
                Instances::default()
            }
            Some(_) => match read(path) {
                Ok(entries) => {
                    tracing::info!(
                        file = %path.display(),
                        instances = entries.len(),
                        "instances file loaded"
                    );
                    Instances::from_entries(&entries)
                }
                Err(message) => {
                    tracing::warn!(
                        file = %path.display(),
                        "instances file rejected; the previous list stays in force: {message}"
                    );
                    Instances {
                        error: Some(InstancesError {
                            path: path.clone(),
                            message,
                            since: SystemTime::now(),
                        }),
                        ..(*prev).clone()
                    }
                }
            },
        };
        self.tx.send_replace(Arc::new(Instances {
            generation: prev.generation + 1,
            ..next
        }));
        true
    }

    /// Polls every `interval` until the returned future is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        if self.path.is_none() {
            return std::future::pending().await;
        }
        poll::every(interval, "instances", move || {
            self.poll();
        })
        .await
    }
}

fn read(path: &Path) -> Result<Vec<InstanceEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let text = r#"
- name: reviews-v1-0
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
  ip: 127.0.1.3
  appHost: 127.0.2.3
  ports:
  - {name: http, port: 9080, protocol: HTTP}
- {name: ratings-v1-0, namespace: prod, ip: 127.0.1.4, ready: false}
"#;
        let entries = parse(text).expect("parses");
        assert_eq!(entries.len(), 2);
        let i = entries[0].to_instance();
        assert_eq!(i.namespace, "default");
        assert_eq!(i.service_account, "bookinfo-reviews");
        assert_eq!(i.ports[0].protocol, Some(Protocol::Http));
        assert_eq!(entries[0].app_host, Some("127.0.2.3".parse().unwrap()));
        assert_eq!(entries[1].service_account, "default");
        assert!(i.ready, "ready unless said otherwise");
        assert!(!entries[1].to_instance().ready);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing yet\n").unwrap().is_empty());
    }

    #[test]
    fn bad_files_are_errors() {
        for (text, want) in [
            ("- {name: a, ip: nope}", "ip"),
            ("- {name: a, ip: 127.0.0.2, lables: {}}", "lables"),
            (
                "- {name: a, ip: 127.0.0.2}\n- {name: a, ip: 127.0.0.3}",
                "twice",
            ),
            (
                "- {name: a, ip: 127.0.0.2, ports: [{port: 80, protocol: HTTQ}]}",
                "HTTQ",
            ),
            ("- {name: '', ip: 127.0.0.2}", "empty"),
            ("{name: a}", "sequence"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_bad_version_keeps_the_previous_list() {
        let dir = crate::server::test_dir("instances");
        let path = dir.join("instances.yaml");
        let file = InstancesFile::new(Some(path.clone()));
        assert!(file.current().instances.is_empty());
        std::fs::write(&path, "- {name: a-0, ip: 127.0.0.2, appHost: 127.0.0.9}\n").unwrap();
        assert!(file.poll());
        assert_eq!(file.current().instances.len(), 1);
        assert_eq!(
            file.current().app_hosts[&("default".to_owned(), "a-0".to_owned())],
            "127.0.0.9".parse::<IpAddr>().unwrap()
        );
        std::fs::write(&path, "- {name: a-0, ip: x}\n- broken").unwrap();
        assert!(file.poll());
        assert_eq!(file.current().instances.len(), 1);
        assert!(file.current().error.is_some());
        std::fs::remove_file(&path).unwrap();
        assert!(file.poll());
        assert!(file.current().instances.is_empty());
        assert!(file.current().error.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
