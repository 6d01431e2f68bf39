//! Prometheus for the local mesh: `weft up` writes a scrape config and file_sd target files
//! to `<state>/prometheus/` (kept current as replicas come and go; Prometheus rereads
//! file_sd files by itself), and with `--prometheus` runs Debian's `prometheus` on them.
//!
//! Jobs, after the names Istio's Prometheus configuration uses:
//! - `envoy-stats`: every proxy's `<pod ip>:15090/stats/prometheus` (the gateway's at its
//!   admin IP), labelled `namespace`, `pod`, `app`, `version` as Kubernetes service discovery
//!   would label a pod.
//! - `pilot`: the control plane's `/metrics` on its monitoring address.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::plan::{self, Plan};
use super::state;
use super::supervise::{ChildSpec, Readiness};

/// Where every proxy serves `/stats/prometheus` (on its admin address's IP).
pub const PROXY_METRICS_PORT: u16 = 15090;
/// How often the local Prometheus scrapes: short, so a few seconds of traffic show.
const SCRAPE_INTERVAL: &str = "5s";

/// `<state>/prometheus`.
pub fn dir(state: &Path) -> PathBuf {
    state.join("prometheus")
}

pub fn config_file(state: &Path) -> PathBuf {
    dir(state).join("prometheus.yml")
}

pub fn proxies_file(state: &Path) -> PathBuf {
    dir(state).join("proxies.json")
}

fn control_plane_file(state: &Path) -> PathBuf {
    dir(state).join("control-plane.json")
}

/// One file_sd target group.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The proxies of `plan` as file_sd target groups: each sidecar, then the gateway.
pub fn proxy_targets(plan: &Plan) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = plan
        .replicas
        .iter()
        .map(|r| {
            let mut labels = BTreeMap::from([
                ("namespace".to_owned(), r.namespace.clone()),
                ("pod".to_owned(), r.name.clone()),
            ]);
            for key in ["app", "version"] {
                if let Some(v) = r.labels.get(key) {
                    labels.insert(key.to_owned(), v.clone());
                }
            }
            TargetGroup {
                targets: vec![metrics_address(r.admin_addr().ip())],
                labels,
            }
        })
        .collect();
    groups.push(TargetGroup {
        targets: vec![metrics_address(plan.gateway_admin().ip())],
        labels: BTreeMap::from([
            ("namespace".to_owned(), plan::GATEWAY_NAMESPACE.to_owned()),
            ("pod".to_owned(), "istio-ingressgateway".to_owned()),
            ("app".to_owned(), "istio-ingressgateway".to_owned()),
        ]),
    });
    groups
}

fn metrics_address(ip: IpAddr) -> String {
    SocketAddr::new(ip, PROXY_METRICS_PORT).to_string()
}

/// The scrape config: both jobs read their targets from the file_sd files beside it.
pub fn scrape_config(state: &Path) -> String {
    let proxies = proxies_file(state);
    let cp = control_plane_file(state);
    format!(
        "# Written by `weft up`; targets follow the mesh's replicas (file_sd).\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n\
         - job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  file_sd_configs:\n  - files: [{proxies:?}]\n\
         - job_name: pilot\n  metrics_path: /metrics\n  file_sd_configs:\n  - files: [{cp:?}]\n",
        proxies = proxies.display().to_string(),
        cp = cp.display().to_string(),
    )
}

/// Writes the scrape config and both target files.
pub fn write_all(state: &Path, plan: &Plan, monitoring: Option<SocketAddr>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir(state))?;
    state::write_atomic(&config_file(state), scrape_config(state).as_bytes())?;
    let cp: Vec<TargetGroup> = monitoring
        .map(|m| TargetGroup {
            targets: vec![m.to_string()],
            labels: BTreeMap::from([("app".to_owned(), "istiod".to_owned())]),
        })
        .into_iter()
        .collect();
    state::write_atomic(&control_plane_file(state), &to_json(&cp))?;
    write_proxies(state, plan)
}

/// Rewrites the proxies' targets (when replicas start or stop).
pub fn write_proxies(state: &Path, plan: &Plan) -> std::io::Result<()> {
    state::write_atomic(&proxies_file(state), &to_json(&proxy_targets(plan)))
}

fn to_json(groups: &[TargetGroup]) -> Vec<u8> {
    // Plain strings and maps: serialization cannot fail.
    serde_json::to_vec_pretty(groups).unwrap_or_default()
}

/// The proxies' metrics addresses in the target file `weft up` keeps (for `weft stat` and
/// the dashboard), with their labels.
pub fn read_proxy_targets(state: &Path) -> Result<Vec<TargetGroup>, String> {
    let file = proxies_file(state);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Debian's (or any) `prometheus` on PATH.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// An address for Prometheus's web UI: 127.0.0.1:9090 when free, else a free port.
pub fn listen_address() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:9090")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?;
    l.local_addr()
}

/// How to run it by hand (what `weft up` prints without `--prometheus`).
pub fn command_line(state: &Path) -> String {
    format!(
        "prometheus --config.file={} --storage.tsdb.path={} --web.listen-address=127.0.0.1:9090",
        config_file(state).display(),
        dir(state).join("data").display()
    )
}

/// The supervised child that runs `binary` on the scrape config, ready once its web port
/// accepts connections.
pub fn child(binary: PathBuf, state: &Path, listen: SocketAddr, color: usize) -> ChildSpec {
    let arg = |s: String| OsString::from(s);
    ChildSpec {
        label: "prometheus".to_owned(),
        program: binary,
        args: vec![
            arg(format!("--config.file={}", config_file(state).display())),
            arg(format!(
                "--storage.tsdb.path={}",
                dir(state).join("data").display()
            )),
            arg(format!("--web.listen-address={listen}")),
            // Its own log is verbose; warnings and errors show with the mesh's.
            arg("--log.level=warn".to_owned()),
        ],
        env: Vec::new(),
        cwd: Some(dir(state)),
        color,
        readiness: Readiness::Listening(vec![listen]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_config_reads_both_target_files() {
        let state = Path::new("/tmp/weft state");
        let c = scrape_config(state);
        assert!(
            c.contains("job_name: envoy-stats\n  metrics_path: /stats/prometheus"),
            "{c}"
        );
        assert!(
            c.contains("- files: [\"/tmp/weft state/prometheus/proxies.json\"]"),
            "{c}"
        );
        assert!(
            c.contains("job_name: pilot\n  metrics_path: /metrics"),
            "{c}"
        );
        assert!(
            c.contains("- files: [\"/tmp/weft state/prometheus/control-plane.json\"]"),
            "{c}"
        );
        // It is YAML Prometheus can read.
        let v: yaml_serde::Value = yaml_serde::from_str(&c).unwrap();
        assert_eq!(
            v["scrape_configs"][0]["file_sd_configs"][0]["files"][0].as_str(),
            Some("/tmp/weft state/prometheus/proxies.json")
        );
    }
}
