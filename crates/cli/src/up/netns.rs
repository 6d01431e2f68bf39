//! `weft up --capture`: each replica in a network namespace of its own, as a pod.
//!
//! - The pod network is a Linux bridge `weftM` on the host at [`plan::bridge_ip`] (the control
//!   plane listens there, so sidecars reach it), with the pods' addresses in
//!   [`plan::pod_cidr`]. The host routes to them through the bridge: the gateway and
//!   Prometheus, which run on the host, reach pods as they would on Kubernetes.
//! - A replica's namespace `weftM-<namespace>-<pod>` has a veth pair to the bridge (`eth0`
//!   inside, its pod IP, a default route via the bridge), loopback, a `resolv.conf` whose
//!   nameserver the capture rules send to the sidecar's DNS proxy, and the capture rules
//!   themselves, installed by `weft proxy capture` as Istio's init container would install
//!   them.
//! - The sidecar runs in the namespace as uid/gid 1337 (its own traffic is not captured); the
//!   application runs in it unchanged, with no `HTTP_PROXY`.
//!
//! Everything is named after the mesh octet, which no other running mesh holds: a start
//! sweeps what a crashed run with the same octet left (namespaces, the bridge, their
//! `/etc/netns` files), and a stop removes what this one made.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::plan::{self, Replica};

/// The sidecar's user and group (Istio's 1337): what the capture rules let out uncaptured.
pub const PROXY_UID: u32 = 1337;

/// Ports the capture rules leave alone inbound: Istio's (tunnel 15008, metrics 15090, health
/// 15021, merged metrics 15020) and the admin port 15000, which the host's `weft`
/// commands reach at the pod IP.
const INBOUND_EXCLUDED: &str = "15090,15021,15020,15000";

/// Why `--capture` cannot run here, or None when it can.
pub fn missing_privileges() -> Option<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces, veth links and iptables need it)".to_owned());
    }
    for tool in ["ip", "iptables-restore", "setpriv"] {
        if which(tool).is_none() {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "--capture needs {}; without --capture, `weft up` runs the mesh with each \
             sidecar as its application's explicit HTTP proxy (HTTP_PROXY), which needs \
             none of them",
            missing.join(", ")
        )
    })
}

/// Whether this process runs as root: the real uid in /proc/self/status.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The pod network of one mesh.
pub struct Network {
    octet: u8,
    bridge: String,
    /// `weft` itself, which installs the capture rules (`weft proxy capture`).
    exe: PathBuf,
    /// Namespaces made (and not yet removed).
    made: std::sync::Mutex<Vec<String>>,
}

impl Network {
    /// Sweeps what an earlier run with `octet` left, then makes the bridge.
    pub fn setup(octet: u8, exe: &Path) -> Result<Network, String> {
        let net = Network {
            octet,
            bridge: format!("weft{octet}"),
            exe: exe.to_owned(),
            made: std::sync::Mutex::new(Vec::new()),
        };
        net.sweep();
        let (_, bits) = plan::pod_cidr(octet);
        let gateway = format!("{}/{bits}", plan::bridge_ip(octet));
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &gateway, "dev", &net.bridge])?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        plan::bridge_ip(self.octet)
    }

    /// The namespace of replica `r`.
    pub fn namespace_of(octet: u8, r: &Replica) -> String {
        format!("weft{octet}-{}-{}", r.namespace, r.name)
    }

    /// Makes `r`'s namespace: link, addresses, route, resolv.conf, capture rules.
    pub fn add(&self, r: &Replica) -> Result<String, String> {
        let ns = Network::namespace_of(self.octet, r);
        // A namespace of this name left by a replica that ran before (a restart) goes first.
        let _ = self.remove_namespace(&ns);
        run("ip", &["netns", "add", &ns])?;
        lock(&self.made).push(ns.clone());
        let [_, _, w, h] = r.pod_ip.octets();
        let host_end = format!("wv{}-{w}-{h}", self.octet);
        let (_, bits) = plan::pod_cidr(self.octet);
        let address = format!("{}/{bits}", r.pod_ip);
        let gateway = self.bridge_ip().to_string();
        run(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &host_end, "master", &self.bridge, "up"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run(
            "ip",
            &["-n", &ns, "route", "add", "default", "via", &gateway],
        )?;
        // `ip netns exec` puts /etc/netns/NS/resolv.conf over /etc/resolv.conf: Kubernetes'
        // search path for the pod's namespace; the nameserver's queries are captured.
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let resolv = format!(
            "# Written by weft up --capture: port 53 is captured by the sidecar's DNS proxy.\n\
             nameserver {gateway}\nsearch {ns_name}.svc.cluster.local svc.cluster.local \
             cluster.local\noptions ndots:5\n",
            ns_name = r.namespace
        );
        std::fs::write(etc.join("resolv.conf"), resolv)
            .map_err(|e| format!("{}: {e}", etc.display()))?;
        let uid = PROXY_UID.to_string();
        let exe = self.exe.to_string_lossy().into_owned();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                &exe,
                "proxy",
                "capture",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                &uid,
                "-g",
                &uid,
                "-m",
                "REDIRECT",
                "-d",
                INBOUND_EXCLUDED,
                "--redirect-dns",
            ],
        )?;
        Ok(ns)
    }

    /// Removes `r`'s namespace (its processes must have exited).
    pub fn remove(&self, r: &Replica) {
        let ns = Network::namespace_of(self.octet, r);
        let _ = self.remove_namespace(&ns);
        lock(&self.made).retain(|n| n != &ns);
    }

    fn remove_namespace(&self, ns: &str) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        // Deleting the namespace deletes its end of the veth pair, and so the host's.
        run("ip", &["netns", "del", ns])
    }

    /// Removes every namespace this mesh's octet names, and the bridge.
    pub fn teardown(&self) {
        for ns in lock(&self.made).drain(..) {
            let _ = self.remove_namespace(&ns);
        }
        self.sweep();
    }

    /// Removes what a run with this octet left: its namespaces, `/etc/netns` files and
    /// bridge.
    fn sweep(&self) {
        let prefix = format!("weft{}-", self.octet);
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&prefix) {
                    eprintln!("weft up: removing network namespace {name}, left by an earlier run");
                    let _ = self.remove_namespace(name);
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/etc/netns") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let exists = Command::new("ip")
            .args(["link", "show", &self.bridge])
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            let _ = run("ip", &["link", "del", &self.bridge]);
        }
    }

    /// How a program runs in `r`'s namespace: `ip netns exec NS` before it, and for the
    /// sidecar `setpriv` to uid/gid 1337.
    pub fn wrap(
        &self,
        r: &Replica,
        proxy: bool,
        program: PathBuf,
        args: Vec<std::ffi::OsString>,
    ) -> (PathBuf, Vec<std::ffi::OsString>) {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "netns".into(),
            "exec".into(),
            Network::namespace_of(self.octet, r).into(),
        ];
        if proxy {
            let id = PROXY_UID.to_string();
            argv.extend([
                "setpriv".into(),
                format!("--reuid={id}").into(),
                format!("--regid={id}").into(),
                "--clear-groups".into(),
            ]);
        }
        argv.push(program.into_os_string());
        argv.extend(args);
        (PathBuf::from("ip"), argv)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `program args`; an error says the command and what it printed.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
