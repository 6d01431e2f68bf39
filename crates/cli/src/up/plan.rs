//! What `weft up` runs: the Workload replicas with their addresses, the proxies' bootstraps and
//! the instances file, computed from the loaded resources before anything starts.
//!
//! Addresses: the mesh takes a "mesh octet" `M` (the first free one from 1, so that two meshes
//! on one machine do not collide). Each workload takes an address block `w` (1..=254; at
//! start-up, in load order), and its replica `r` gets the pod IP `127.M.w.(r+1)`, which its
//! sidecar binds (inbound on each workload port, outbound on 15001, admin on 15000, health on
//! 15021), and the app address `127.(M+100).w.(r+1)`, where the application listens and the
//! sidecar's inbound cluster forwards. The ingress gateway's node IP is 127.0.0.1, so a Gateway
//! server on port 8080 listens on 127.0.0.1:8080; its admin and health ports are on
//! `127.M.0.1`.
//!
//! While the mesh runs, [`Plan::replan`] makes the next plan from the resources in force: a
//! workload keeps its block for as long as it exists (so a replica keeps its addresses), and a
//! new workload takes the lowest block that neither plan uses (so no address still in use is
//! handed out again). [`Plan::diff`] says which replicas to keep, stop and start.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use weft_api::Resource;
use weft_api::resource::Spec;
use weft_api::weft::WorkloadSpec;
use weft_control::server::InstanceEntry;
use weft_control::server::instances::PortEntry;

/// Istio's ingress gateway, as Kubernetes installs it.
pub const GATEWAY_NAME: &str = "istio-ingressgateway-0";
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// The ingress gateway's Service as Istio's default profile installs it: Gateway servers on
/// ports 80 and 443 are served on its target ports 8080 and 8443, which need no root.
pub const GATEWAY_SERVICE: &str = "\
# Written by `weft up`: the ingress gateway's Service, as Istio installs it. A Gateway server's
# port is a port of this Service; the gateway listens on its targetPort. A Service of the same
# name in the mesh's directory or applied with `weft apply` replaces this one.
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  selector: {app: istio-ingressgateway, istio: ingressgateway}
  ports:
  - {name: status-port, port: 15021, targetPort: 15021, protocol: TCP}
  - {name: http2, port: 80, targetPort: 8080, protocol: TCP}
  - {name: https, port: 443, targetPort: 8443, protocol: TCP}
";

/// The sidecar's outbound (explicit HTTP proxy) port, `HTTP_PROXY` for the app.
pub const OUTBOUND_PORT: u16 = 15001;
const ADMIN_PORT: u16 = 15000;
pub const HEALTH_PORT: u16 = 15021;
/// Where each proxy serves Istio's metrics (`/stats/prometheus`).
pub const PROMETHEUS_PORT: u16 = 15090;

/// One replica of a Workload: a process and its sidecar.
#[derive(Debug, Clone)]
pub struct Replica {
    /// `<workload>-<replica>`: the pod name.
    pub name: String,
    pub namespace: String,
    /// The Workload's name.
    pub workload: String,
    /// The replica's number, from 0.
    pub index: u32,
    pub labels: BTreeMap<String, String>,
    pub pod_ip: Ipv4Addr,
    pub app_ip: Ipv4Addr,
    pub spec: WorkloadSpec,
    /// Where a workload's `workingDir` is relative to.
    pub base_dir: PathBuf,
    /// `weft up --capture`: the replica runs in a network namespace of its own, its traffic
    /// captured by iptables (see `netns`).
    pub capture: bool,
}

impl Replica {
    /// True when `other` is this replica run the same way: same workload and number, labels,
    /// spec (but for the replica count) and addresses. Such a replica is left running when the
    /// plan changes; any other difference restarts it.
    pub fn runs_as(&self, other: &Replica) -> bool {
        let template = |r: &Replica| WorkloadSpec {
            replicas: None,
            ..r.spec.clone()
        };
        self.key() == other.key()
            && self.labels == other.labels
            && self.pod_ip == other.pod_ip
            && self.app_ip == other.app_ip
            && self.base_dir == other.base_dir
            && template(self) == template(other)
    }

    /// What identifies the replica across plans: namespace, workload, number.
    pub fn key(&self) -> (&str, &str, u32) {
        (&self.namespace, &self.workload, self.index)
    }

    /// Where the application listens: the app address and the first declared port (under
    /// capture every address of its namespace, as a pod's container listens).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        let port = u16::try_from(self.spec.ports.first()?.port).ok()?;
        let ip = if self.capture {
            Ipv4Addr::UNSPECIFIED
        } else {
            self.app_ip
        };
        Some(SocketAddr::new(IpAddr::V4(ip), port))
    }

    /// What the sidecar probes for the application's readiness: its addresses, or under
    /// capture the same ports on the namespace's loopback (which the capture rules leave
    /// alone).
    pub fn probe_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = self.app_addrs();
        if self.capture {
            for a in &mut addrs {
                a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        }
        addrs
    }

    /// Every address the application listens on: what its readiness is probed at.
    pub fn app_addrs(&self) -> Vec<SocketAddr> {
        self.spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(SocketAddr::new(
                    IpAddr::V4(self.app_ip),
                    u16::try_from(p.port).ok()?,
                ))
            })
            .collect()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.pod_ip), ADMIN_PORT)
    }

    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local",
            ip = self.pod_ip,
            name = self.name,
            ns = self.namespace
        )
    }

    /// The environment of the application (the local-mode contract, README "The `Workload`
    /// kind"), the Workload's own `env` last so that it may override.
    pub fn env(&self) -> Vec<(String, String)> {
        let proxy = format!("http://{}:{OUTBOUND_PORT}", self.pod_ip);
        let mut env = vec![
            ("HOSTNAME".to_owned(), self.name.clone()),
            ("POD_NAME".to_owned(), self.name.clone()),
            ("POD_NAMESPACE".to_owned(), self.namespace.clone()),
            ("POD_IP".to_owned(), self.pod_ip.to_string()),
        ];
        // Captured, the application knows nothing of its sidecar.
        if !self.capture {
            env.push(("HTTP_PROXY".to_owned(), proxy.clone()));
            env.push(("http_proxy".to_owned(), proxy));
        }
        if let Some(addr) = self.listen_addr() {
            env.push(("WEFT_LISTEN_ADDR".to_owned(), addr.to_string()));
        }
        if let Some(v) = self.labels.get("version") {
            env.push(("SERVICE_VERSION".to_owned(), v.clone()));
        }
        env.extend(self.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn instance(&self, ready: bool) -> InstanceEntry {
        InstanceEntry {
            ready,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            labels: with_tls_mode(&self.labels),
            service_account: self.spec.service_account().to_owned(),
            ip: IpAddr::V4(self.pod_ip),
            app_host: Some(IpAddr::V4(self.app_ip)),
            interception_mode: self.capture.then(|| "REDIRECT".to_owned()),
            ports: self
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.clone(),
                        port: u16::try_from(p.port).ok()?,
                        protocol: Some(p.protocol.as_str().to_owned()),
                    })
                })
                .collect(),
        }
    }
}

/// The gateway's service account (Istio's).
pub const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";

/// `labels` with Istio's `security.istio.io/tlsMode: istio`: every proxy `weft up` starts
/// has a workload certificate, so the control plane sends it mTLS (auto mTLS) and applies
/// PeerAuthentication to it.
fn with_tls_mode(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    out.entry("security.istio.io/tlsMode".to_owned())
        .or_insert_with(|| "istio".to_owned());
    out
}

/// Everything `weft up` starts.
#[derive(Debug)]
pub struct Plan {
    pub replicas: Vec<Replica>,
    /// The mesh octet `M` (see the module docs).
    pub octet: u8,
    /// (namespace, name) of every Workload, zero replicas too -> its address block `w`.
    blocks: BTreeMap<(String, String), u8>,
    /// `weft up --capture`: replicas in network namespaces, pod IPs from [`pod_cidr`].
    pub capture: bool,
}

/// `weft up --capture`'s pod network for mesh octet `M` (below 64): `100.(64+M).0.0/16`, in
/// the shared address space (RFC 6598) that home and office networks rarely use. The bridge
/// (the pods' gateway, where the control plane listens) is `.0.1`; replica `r` of block `w`
/// is `100.(64+M).w.(r+1)`.
pub fn pod_cidr(octet: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(100, 64u8.saturating_add(octet), 0, 0), 16)
}

/// The pod network's gateway: the host's end of the bridge.
pub fn bridge_ip(octet: u8) -> Ipv4Addr {
    let (net, _) = pod_cidr(octet);
    let [a, b, _, _] = net.octets();
    Ipv4Addr::new(a, b, 0, 1)
}

/// What changes from one plan to the next ([`Plan::diff`]).
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// Replicas of the old plan that run on unchanged.
    pub keep: Vec<&'a Replica>,
    /// Replicas of the old plan to stop: gone from the new plan, or run differently there.
    pub stop: Vec<&'a Replica>,
    /// Replicas of the new plan to start: new, or replacing one in `stop`.
    pub start: Vec<&'a Replica>,
}

impl Changes<'_> {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Why a plan cannot be made. Each names the Workload and, when known, where it was read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{at}Workload {namespace}/{name}: no free address block; local mode runs at most 254 workloads"
    )]
    TooManyWorkloads {
        at: String,
        namespace: String,
        name: String,
    },
    #[error(
        "{at}Workload {namespace}/{name} spec.replicas: {count} replicas; local mode addresses at most 254"
    )]
    TooManyReplicas {
        at: String,
        namespace: String,
        name: String,
        count: u32,
    },
}

/// `file:line:column: ` of a Workload's field, or nothing when the resource has no origin.
fn at(resource: &Resource, field: &str) -> String {
    resource
        .origin
        .as_ref()
        .map_or_else(String::new, |o| format!("{}: ", o.locate(field)))
}

/// The gateway's labels, as Istio's default install sets them.
pub fn gateway_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("istio".to_owned(), "ingressgateway".to_owned()),
        ("app".to_owned(), "istio-ingressgateway".to_owned()),
    ])
}

impl Plan {
    /// The plan at start-up: blocks in load order.
    pub fn new(resources: &[Resource], base_dir: &Path, octet: u8) -> Result<Plan, PlanError> {
        Plan::build(resources, base_dir, octet, &BTreeMap::new(), false)
    }

    /// The plan at start-up of `weft up --capture`.
    pub fn captured(resources: &[Resource], base_dir: &Path, octet: u8) -> Result<Plan, PlanError> {
        Plan::build(resources, base_dir, octet, &BTreeMap::new(), true)
    }

    /// The plan for `resources` while this one runs: workloads that stay keep their blocks,
    /// new ones take blocks this plan does not use.
    pub fn replan(&self, resources: &[Resource], base_dir: &Path) -> Result<Plan, PlanError> {
        Plan::build(resources, base_dir, self.octet, &self.blocks, self.capture)
    }

    /// Makes a plan, keeping the blocks of `taken`'s workloads and using none of its others.
    fn build(
        resources: &[Resource],
        base_dir: &Path,
        octet: u8,
        taken: &BTreeMap<(String, String), u8>,
        capture: bool,
    ) -> Result<Plan, PlanError> {
        let workloads: Vec<(&Resource, &WorkloadSpec)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Workload(w) => Some((r, w)),
                _ => None,
            })
            .collect();
        let mut blocks = BTreeMap::new();
        for (resource, _) in &workloads {
            let key = (resource.namespace().to_owned(), resource.name().to_owned());
            if let Some(&w) = taken.get(&key) {
                blocks.insert(key, w);
            }
        }
        let mut replicas = Vec::new();
        for (resource, spec) in &workloads {
            let key = (resource.namespace().to_owned(), resource.name().to_owned());
            let w = match blocks.get(&key) {
                Some(&w) => w,
                None => {
                    let Some(w) = (1..=254u8).find(|w| {
                        !taken.values().any(|t| t == w) && !blocks.values().any(|b| b == w)
                    }) else {
                        return Err(PlanError::TooManyWorkloads {
                            at: at(resource, "metadata.name"),
                            namespace: key.0,
                            name: key.1,
                        });
                    };
                    blocks.insert(key, w);
                    w
                }
            };
            let count = spec.replicas();
            if count > 254 {
                return Err(PlanError::TooManyReplicas {
                    at: at(resource, "spec.replicas"),
                    namespace: resource.namespace().to_owned(),
                    name: resource.name().to_owned(),
                    count,
                });
            }
            for (index, host) in (0..count).zip(1u8..) {
                let (pod_ip, app_ip) = if capture {
                    let [a, b, _, _] = pod_cidr(octet).0.octets();
                    let ip = Ipv4Addr::new(a, b, w, host);
                    (ip, ip)
                } else {
                    (
                        Ipv4Addr::new(127, octet, w, host),
                        Ipv4Addr::new(127, octet.saturating_add(100), w, host),
                    )
                };
                replicas.push(Replica {
                    capture,
                    name: format!("{}-{index}", resource.name()),
                    namespace: resource.namespace().to_owned(),
                    workload: resource.name().to_owned(),
                    index,
                    labels: resource.metadata.labels.clone(),
                    pod_ip,
                    app_ip,
                    spec: (*spec).clone(),
                    base_dir: base_dir.to_owned(),
                });
            }
        }
        Ok(Plan {
            replicas,
            octet,
            blocks,
            capture,
        })
    }

    /// What changes from this plan to `next`: a replica that [`Replica::runs_as`] its
    /// counterpart is kept, any other old one stopped, any other new one started.
    pub fn diff<'a>(&'a self, next: &'a Plan) -> Changes<'a> {
        let mut changes = Changes::default();
        for old in &self.replicas {
            match next.replicas.iter().find(|n| n.key() == old.key()) {
                Some(new) if old.runs_as(new) => changes.keep.push(old),
                _ => changes.stop.push(old),
            }
        }
        changes.start = next
            .replicas
            .iter()
            .filter(|n| !changes.keep.iter().any(|k| k.key() == n.key()))
            .collect();
        changes
    }

    /// The instances file's content: every replica, ready or not as `ready` says, and the
    /// gateway (so that the control plane learns the gateway's labels, which Gateway
    /// selectors match).
    pub fn instances_yaml(
        &self,
        ready: impl Fn(&Replica) -> bool,
    ) -> Result<String, yaml_serde::Error> {
        let mut entries: Vec<InstanceEntry> =
            self.replicas.iter().map(|r| r.instance(ready(r))).collect();
        entries.push(InstanceEntry {
            ready: true,
            name: GATEWAY_NAME.to_owned(),
            namespace: GATEWAY_NAMESPACE.to_owned(),
            labels: with_tls_mode(&gateway_labels()),
            service_account: GATEWAY_SERVICE_ACCOUNT.to_owned(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            app_host: None,
            interception_mode: None,
            ports: Vec::new(),
        });
        yaml_serde::to_string(&entries)
    }

    /// The gateway's admin address.
    pub fn gateway_admin(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, self.octet, 0, 1)), ADMIN_PORT)
    }

    pub fn gateway_node_id() -> String {
        format!(
            "router~127.0.0.1~{GATEWAY_NAME}.{GATEWAY_NAMESPACE}~{GATEWAY_NAMESPACE}.svc.cluster.local"
        )
    }
}

/// A proxy's bootstrap: its identity, the control plane, its admin and health ports, and the
/// app addresses its readiness includes (a sidecar's app; none for the gateway).
pub fn bootstrap(
    node_id: &str,
    xds: SocketAddr,
    admin: SocketAddr,
    app_probes: &[SocketAddr],
    identity: Option<&IdentityBootstrap>,
) -> String {
    let health = SocketAddr::new(admin.ip(), HEALTH_PORT);
    // Istio's metrics port, beside the admin port on the proxy's own address (the gateway's
    // listeners share 127.0.0.1 with other meshes; its admin address is its own).
    let prometheus = SocketAddr::new(admin.ip(), PROMETHEUS_PORT);
    let probes = app_probes
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // A short drain: local mode is for development, where Ctrl-C should not wait long.
    let mut out = format!(
        "node: {{id: \"{node_id}\"}}\nxds: {{address: \"http://{xds}\"}}\n\
         admin: {{address: \"{admin}\", healthAddress: \"{health}\", \
         prometheusAddress: \"{prometheus}\", drainTimeout: 1s, \
         appProbes: [{probes}]}}\n"
    );
    if let Some(id) = identity {
        // Paths are quoted as JSON strings (a subset of YAML's double-quoted scalars).
        let quote =
            |p: &Path| serde_json::Value::from(p.to_string_lossy().into_owned()).to_string();
        out.push_str(&format!(
            "identity: {{caAddress: \"{}\", caRootFile: {}, tokenFile: {}, namespace: \"{}\", \
             serviceAccount: \"{}\"}}\n",
            id.ca_address,
            quote(&id.ca_root_file),
            quote(&id.token_file),
            id.namespace,
            id.service_account,
        ));
    }
    out
}

/// What a proxy's bootstrap says of its workload identity.
#[derive(Debug, Clone)]
pub struct IdentityBootstrap {
    pub ca_address: SocketAddr,
    pub ca_root_file: PathBuf,
    pub token_file: PathBuf,
    pub namespace: String,
    pub service_account: String,
}

/// Picks the mesh octet: the first `M` from 1 whose gateway admin address is free. The returned
/// listener holds the reservation (a second `weft up` probing at the same time skips `M`); drop
/// it just before the gateway starts.
pub fn reserve_octet() -> Option<(u8, std::net::TcpListener)> {
    (1u8..100).find_map(|m| {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, m, 0, 2)), ADMIN_PORT);
        std::net::TcpListener::bind(addr).ok().map(|l| (m, l))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Vec<Resource> {
        let loaded = weft_api::load::load_str("t.yaml", yaml);
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        loaded.resources
    }

    #[test]
    fn replicas_get_distinct_addresses_and_the_contract_env() {
        let resources = load(
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: reviews-v2, labels: {app: reviews, version: v2}}\n\
             spec: {command: [weft, example, reviews], replicas: 2, env: {A: b},\n\
             ports: [{name: http, port: 9080}]}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: Gateway\n\
             metadata: {name: gw}\n\
             spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]}\n",
        );
        let plan = Plan::new(&resources, Path::new("."), 3).expect("plan");
        let [a, b] = &plan.replicas[..] else {
            panic!("two replicas: {:?}", plan.replicas)
        };
        assert_eq!(a.name, "reviews-v2-0");
        assert_eq!(b.pod_ip, Ipv4Addr::new(127, 3, 1, 2));
        assert_eq!(b.app_ip, Ipv4Addr::new(127, 103, 1, 2));
        assert_eq!(
            a.node_id(),
            "sidecar~127.3.1.1~reviews-v2-0.default~default.svc.cluster.local"
        );
        let env: BTreeMap<String, String> = a.env().into_iter().collect();
        assert_eq!(env["WEFT_LISTEN_ADDR"], "127.103.1.1:9080");
        assert_eq!(env["HTTP_PROXY"], "http://127.3.1.1:15001");
        assert_eq!(env["SERVICE_VERSION"], "v2");
        assert_eq!(env["POD_NAME"], "reviews-v2-0");
        assert_eq!(env["A"], "b");
        let instances = plan.instances_yaml(|_| true).expect("yaml");
        assert!(instances.contains("appHost: 127.103.1.1"), "{instances}");
        assert!(instances.contains("istio-ingressgateway-0"), "{instances}");
    }

    /// A Workload `name` (labels app=name, version=v1) with `replicas` and `spec` extra fields.
    fn workload(name: &str, replicas: u32, extra: &str) -> String {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: {name}, labels: {{app: {name}, version: v1}}}}\n\
             spec: {{command: [sleep, '60'], replicas: {replicas}, ports: [{{name: http, port: 80}}]{extra}}}\n"
        )
    }

    fn plan_of(plan: &Plan, workloads: &[String]) -> Plan {
        plan.replan(&load(&workloads.join("---\n")), Path::new("."))
            .expect("replan")
    }

    fn names(replicas: &[&Replica]) -> Vec<String> {
        replicas
            .iter()
            .map(|r| format!("{}@{}", r.name, r.pod_ip))
            .collect()
    }

    #[test]
    fn replan_keeps_what_runs_and_never_hands_out_a_live_block() {
        let first = Plan::new(
            &load(&[workload("a", 2, ""), workload("b", 1, "")].join("---\n")),
            Path::new("."),
            1,
        )
        .expect("plan");
        // a scales up, b goes, c comes: c may not take b's block, which is still in use
        // while b stops.
        let second = plan_of(&first, &[workload("a", 3, ""), workload("c", 1, "")]);
        let changes = first.diff(&second);
        assert_eq!(names(&changes.keep), ["a-0@127.1.1.1", "a-1@127.1.1.2"]);
        assert_eq!(names(&changes.stop), ["b-0@127.1.2.1"]);
        assert_eq!(names(&changes.start), ["a-2@127.1.1.3", "c-0@127.1.3.1"]);
        assert_eq!(second.replicas[3].app_ip, Ipv4Addr::new(127, 101, 3, 1));

        // Once b is gone, its block is free for the next new workload.
        let third = plan_of(
            &second,
            &[
                workload("a", 3, ""),
                workload("c", 1, ""),
                workload("d", 1, ""),
            ],
        );
        let changes = second.diff(&third);
        assert_eq!(changes.keep.len(), 4);
        assert!(changes.stop.is_empty());
        assert_eq!(names(&changes.start), ["d-0@127.1.2.1"]);

        // The same resources again: nothing to do.
        let again = plan_of(
            &third,
            &[
                workload("a", 3, ""),
                workload("c", 1, ""),
                workload("d", 1, ""),
            ],
        );
        assert!(third.diff(&again).is_empty());
        assert_eq!(
            third.instances_yaml(|_| true).ok(),
            again.instances_yaml(|_| true).ok()
        );
    }

    #[test]
    fn replan_restarts_edited_workloads_and_scales_by_the_difference() {
        let first = Plan::new(&load(&workload("a", 2, "")), Path::new("."), 2).expect("plan");
        let cases: &[(&str, String, &[&str], &[&str])] = &[
            ("scale down", workload("a", 1, ""), &["a-1@127.2.1.2"], &[]),
            (
                "scale to zero",
                workload("a", 0, ""),
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
                &[],
            ),
            (
                "env edited",
                workload("a", 2, ", env: {X: y}"),
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
            ),
            (
                "command edited, scaled up",
                workload("a", 3, "").replace("'60'", "'61'"),
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
                &["a-0@127.2.1.1", "a-1@127.2.1.2", "a-2@127.2.1.3"],
            ),
            (
                "version label edited",
                workload("a", 2, "").replace("version: v1", "version: v2"),
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
            ),
            (
                "port edited",
                workload("a", 2, "").replace("port: 80", "port: 81"),
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
                &["a-0@127.2.1.1", "a-1@127.2.1.2"],
            ),
        ];
        for (what, yaml, stop, start) in cases {
            let next = plan_of(&first, std::slice::from_ref(yaml));
            let changes = first.diff(&next);
            assert_eq!(names(&changes.stop), *stop, "{what}: stopped");
            assert_eq!(names(&changes.start), *start, "{what}: started");
            assert_eq!(
                changes.keep.len() + changes.stop.len(),
                first.replicas.len(),
                "{what}: every old replica is kept or stopped"
            );
        }
    }

    #[test]
    fn plan_errors_name_the_file_and_field() {
        let err =
            Plan::new(&load(&workload("a", 300, "")), Path::new("."), 1).expect_err("300 replicas");
        let text = err.to_string();
        assert!(text.starts_with("t.yaml:"), "{text}");
        assert!(
            text.contains("Workload default/a spec.replicas: 300"),
            "{text}"
        );

        let many: Vec<String> = (0..255)
            .map(|i| workload(&format!("w{i}"), 0, ""))
            .collect();
        let err =
            Plan::new(&load(&many.join("---\n")), Path::new("."), 1).expect_err("255 workloads");
        assert!(
            err.to_string()
                .contains("Workload default/w254: no free address block"),
            "{err}"
        );
    }
}
