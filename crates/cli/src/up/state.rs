//! The local mesh's state directory: what `weft up` writes and `weft apply`, `get`, `delete`
//! and `down` read.
//!
//! ```text
//! <state-dir>/builtin/            what every local mesh has: the ingress gateway's Service
//! <state-dir>/applied/            resources added by `weft apply`, one file each (watched)
//! <state-dir>/instances.yaml      the workload instances that run (watched by the control plane)
//! <state-dir>/proxies/NAME.yaml   each proxy's bootstrap
//! <state-dir>/mesh.json           the running mesh: pid, DIR, control plane addresses
//! ```
//!
//! The default directory does not depend on DIR (like a cluster, applied resources outlive one
//! `weft up`): `--state-dir`, else `$WEFT_STATE_DIR`, else `$XDG_STATE_HOME/weft`, else
//! `~/.local/state/weft`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Resolves the state directory from the flag and the environment.
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("WEFT_STATE_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("weft");
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/weft"),
        None => std::env::temp_dir().join("weft"),
    }
}

pub fn applied_dir(state: &Path) -> PathBuf {
    state.join("applied")
}

/// What `weft up` adds to every mesh (the ingress gateway's Service), rewritten at each start.
pub fn builtin_dir(state: &Path) -> PathBuf {
    state.join("builtin")
}

pub fn mesh_file(state: &Path) -> PathBuf {
    state.join("mesh.json")
}

/// What `weft up` records about the running mesh while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningMesh {
    /// The `weft up` process.
    pub pid: u32,
    /// The directory `weft up` was started on.
    pub dir: PathBuf,
    pub xds_address: Option<SocketAddr>,
    pub monitoring_address: Option<SocketAddr>,
    /// Where `weft up --prometheus` runs Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_address: Option<SocketAddr>,
    /// `weft up --capture`: the mesh octet its network namespaces are named after
    /// (`weft<M>-<namespace>-<pod>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_octet: Option<u8>,
}

impl RunningMesh {
    /// The mesh recorded in `state`, if one is running (its process still exists).
    pub fn read(state: &Path) -> Option<RunningMesh> {
        let text = std::fs::read_to_string(mesh_file(state)).ok()?;
        let mesh: RunningMesh = serde_json::from_str(&text).ok()?;
        alive(mesh.pid).then_some(mesh)
    }

    pub fn write(&self, state: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&mesh_file(state), text.as_bytes())
    }
}

/// Istio's monitoring address: where a control plane started without `--monitoring-address`
/// serves.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:15014";

/// Where a command finds the control plane: `--control-plane`, else the local mesh's state
/// directory (shared by `proxy-status`, `proxy-config` and `version`).
#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// The control plane's monitoring address. Default: the local mesh `weft up` runs (found
    /// in the state directory), else http://127.0.0.1:15014.
    #[arg(long = "control-plane", value_name = "URL")]
    pub control_plane: Option<String>,
    /// The local mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl ControlPlaneArgs {
    /// The monitoring URL ([`control_plane_url`]).
    pub fn url(&self) -> String {
        control_plane_url(self.control_plane.as_deref(), self.state_dir.as_deref())
    }
}

/// The control plane's monitoring URL for `proxy-status` and `proxy-config`: `flag` when
/// given, else the running local mesh's (recorded in the state directory `state`, as
/// `weft apply` finds it), else [`DEFAULT_CONTROL_PLANE`].
pub fn control_plane_url(flag: Option<&str>, state: Option<&Path>) -> String {
    if let Some(url) = flag {
        return url.to_owned();
    }
    RunningMesh::read(&state_dir(state))
        .and_then(|m| m.monitoring_address)
        .map_or_else(
            || DEFAULT_CONTROL_PLANE.to_owned(),
            |a| format!("http://{a}"),
        )
}

/// A proxy's admin URL: `proxy` as given when it is a URL, else the admin address in the
/// bootstrap `weft up` wrote for it (`<state>/proxies/NAME.yaml`), the proxy named as the CLI
/// prints it (`reviews-v1-0`, `reviews-v1-0.default`, `istio-ingressgateway`, or a Workload
/// with one replica).
pub fn admin_url(proxy: &str, state: Option<&Path>) -> Result<String, String> {
    if proxy.contains("://") {
        return Ok(proxy.to_owned());
    }
    let (_, bootstrap) = local_proxy(proxy, state)?;
    let admin = bootstrap.admin.map(|a| a.address).unwrap_or_default();
    if admin.is_empty() {
        return Err(format!("proxy {proxy:?} has no admin address"));
    }
    Ok(format!("http://{admin}"))
}

/// The outbound (explicit HTTP proxy) address of the sidecar of `workload` in the local mesh:
/// what its app has as `HTTP_PROXY`.
pub fn sidecar_outbound(workload: &str, state: Option<&Path>) -> Result<String, String> {
    let (node, _) = local_proxy(workload, state)?;
    if node.kind != weft_control::ProxyKind::Sidecar {
        return Err(format!("{workload:?} is no workload with a sidecar"));
    }
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(node.ip, super::plan::OUTBOUND_PORT)
    ))
}

/// Where `weft up --capture` with mesh octet `octet` writes the proxies' bootstraps and
/// credentials: readable by the sidecars' uid 1337, which a state directory under a home
/// directory is often not.
pub fn proxies_dir_captured(octet: u8) -> PathBuf {
    PathBuf::from(format!("/run/weft-{octet}/proxies"))
}

/// The proxy of the local mesh that `name` names best ([`weft_control::node::name_match`]),
/// from the bootstraps `weft up` wrote: its node and bootstrap.
fn local_proxy(
    name: &str,
    state: Option<&Path>,
) -> Result<(weft_control::ProxyNode, weft_xds::proto::Bootstrap), String> {
    let state = state_dir(state);
    // A captured mesh keeps them where its uid-1337 sidecars can read them.
    let dir = match RunningMesh::read(&state).and_then(|m| m.capture_octet) {
        Some(octet) => proxies_dir_captured(octet),
        None => state.join("proxies"),
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("no local mesh has proxies in {}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let Some(bootstrap) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| yaml_serde::from_str::<weft_xds::proto::Bootstrap>(&t).ok())
        else {
            continue;
        };
        let id = bootstrap.node.as_ref().map(|n| n.id.as_str()).unwrap_or("");
        let Ok(node) = weft_control::ProxyNode::parse_id(id) else {
            continue;
        };
        if let Some(how) = weft_control::node::name_match(&node.name, &node.namespace, name) {
            found.push((how, node, bootstrap));
        }
    }
    let best = found.iter().map(|(how, _, _)| *how).max();
    found.retain(|(how, _, _)| Some(*how) == best);
    match found.len() {
        1 => {
            let (_, node, bootstrap) = found.remove(0);
            Ok((node, bootstrap))
        }
        0 => Err(format!(
            "no proxy {name:?} in the local mesh ({})",
            dir.display()
        )),
        n => Err(format!("{name:?} names {n} proxies; name one replica")),
    }
}

/// True when process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Writes through a temporary file and a rename, so that a watcher never reads half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's permission bits: a Secret's file is the owner's alone
/// (`0o600`), set before its content is written.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The YAML and JSON files directly in `dir` (not in subdirectories), in name order: the files
/// `weft up DIR` reads.
pub fn top_level_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        // Editors' temporary and hidden files are not config.
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
