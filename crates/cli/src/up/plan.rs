//! What `weft up` runs: the Workload replicas with their addresses, the proxies' bootstraps and
//! the instances file, computed from the loaded resources before anything starts.
//!
//! Addresses: the mesh takes a "mesh octet" `M` (the first free one from 1, so that two meshes
//! on one machine do not collide). Workload `w` (1-based, in load order), replica `r` gets the
//! pod IP `127.M.w.(r+1)`, which its sidecar binds (inbound on each workload port, outbound on
//! 15001, admin on 15000, health on 15021), and the app address `127.(M+100).w.(r+1)`, where
//! the application listens and the sidecar's inbound cluster forwards. The ingress gateway's
//! node IP is 127.0.0.1, so a Gateway server on port 8080 listens on 127.0.0.1:8080; its admin
//! and health ports are on `127.M.0.1`.

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
/// The sidecar's outbound (explicit HTTP proxy) port, `HTTP_PROXY` for the app.
pub const OUTBOUND_PORT: u16 = 15001;
const ADMIN_PORT: u16 = 15000;
const HEALTH_PORT: u16 = 15021;

/// One replica of a Workload: a process and its sidecar.
#[derive(Debug, Clone)]
pub struct Replica {
    /// `<workload>-<replica>`: the pod name.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub pod_ip: Ipv4Addr,
    pub app_ip: Ipv4Addr,
    pub spec: WorkloadSpec,
    /// Where a workload's `workingDir` is relative to.
    pub base_dir: PathBuf,
}

impl Replica {
    /// Where the application listens: the app address and the first declared port.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        let port = u16::try_from(self.spec.ports.first()?.port).ok()?;
        Some(SocketAddr::new(IpAddr::V4(self.app_ip), port))
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
            ("HTTP_PROXY".to_owned(), proxy.clone()),
            ("http_proxy".to_owned(), proxy),
        ];
        if let Some(addr) = self.listen_addr() {
            env.push(("WEFT_LISTEN_ADDR".to_owned(), addr.to_string()));
        }
        if let Some(v) = self.labels.get("version") {
            env.push(("SERVICE_VERSION".to_owned(), v.clone()));
        }
        env.extend(self.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn instance(&self) -> InstanceEntry {
        InstanceEntry {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.spec.service_account().to_owned(),
            ip: IpAddr::V4(self.pod_ip),
            app_host: Some(IpAddr::V4(self.app_ip)),
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

/// Everything `weft up` starts.
#[derive(Debug)]
pub struct Plan {
    pub replicas: Vec<Replica>,
    /// The mesh octet `M` (see the module docs).
    pub octet: u8,
    /// Ports of the Gateway servers that select the ingress gateway, sorted.
    pub gateway_ports: Vec<u16>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("too many workloads ({0}); local mode addresses at most 254")]
    TooManyWorkloads(usize),
    #[error("workload {0}: too many replicas ({1}); local mode addresses at most 254")]
    TooManyReplicas(String, u32),
}

/// The gateway's labels, as Istio's default install sets them.
pub fn gateway_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("istio".to_owned(), "ingressgateway".to_owned()),
        ("app".to_owned(), "istio-ingressgateway".to_owned()),
    ])
}

impl Plan {
    pub fn new(resources: &[Resource], base_dir: &Path, octet: u8) -> Result<Plan, PlanError> {
        let workloads: Vec<(&Resource, &WorkloadSpec)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Workload(w) => Some((r, w)),
                _ => None,
            })
            .collect();
        if workloads.len() > 254 {
            return Err(PlanError::TooManyWorkloads(workloads.len()));
        }
        let mut replicas = Vec::new();
        for (w, (resource, spec)) in (1u8..).zip(&workloads) {
            let count = spec.replicas();
            if count > 254 {
                return Err(PlanError::TooManyReplicas(
                    resource.name().to_owned(),
                    count,
                ));
            }
            for r in 0..count {
                let host = u8::try_from(r + 1).unwrap_or(u8::MAX);
                replicas.push(Replica {
                    name: format!("{}-{r}", resource.name()),
                    namespace: resource.namespace().to_owned(),
                    labels: resource.metadata.labels.clone(),
                    pod_ip: Ipv4Addr::new(127, octet, w, host),
                    app_ip: Ipv4Addr::new(127, octet.saturating_add(100), w, host),
                    spec: (*spec).clone(),
                    base_dir: base_dir.to_owned(),
                });
            }
        }
        let labels = gateway_labels();
        let mut gateway_ports: Vec<u16> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Gateway(g) => Some(g),
                _ => None,
            })
            .filter(|g| weft_api::common::selector_matches(&g.selector, &labels))
            .flat_map(|g| g.servers.iter())
            .filter_map(|s| u16::try_from(s.port.as_ref()?.number).ok())
            .collect();
        gateway_ports.sort_unstable();
        gateway_ports.dedup();
        Ok(Plan {
            replicas,
            octet,
            gateway_ports,
        })
    }

    /// The instances file's content: every replica, and the gateway (so that the control
    /// plane learns the gateway's labels, which Gateway selectors match).
    pub fn instances_yaml(&self) -> Result<String, yaml_serde::Error> {
        let mut entries: Vec<InstanceEntry> = self.replicas.iter().map(Replica::instance).collect();
        entries.push(InstanceEntry {
            name: GATEWAY_NAME.to_owned(),
            namespace: GATEWAY_NAMESPACE.to_owned(),
            labels: gateway_labels(),
            service_account: "istio-ingressgateway-service-account".to_owned(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            app_host: None,
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

/// A proxy's bootstrap: its identity, the control plane, and its admin and health ports.
pub fn bootstrap(node_id: &str, xds: SocketAddr, admin: SocketAddr) -> String {
    let health = SocketAddr::new(admin.ip(), HEALTH_PORT);
    // A short drain: local mode is for development, where Ctrl-C should not wait long.
    format!(
        "node: {{id: \"{node_id}\"}}\nxds: {{address: \"http://{xds}\"}}\n\
         admin: {{address: \"{admin}\", healthAddress: \"{health}\", drainTimeout: 1s}}\n"
    )
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
        assert_eq!(plan.gateway_ports, vec![8080]);
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
        let instances = plan.instances_yaml().expect("yaml");
        assert!(instances.contains("appHost: 127.103.1.1"), "{instances}");
        assert!(instances.contains("istio-ingressgateway-0"), "{instances}");
    }
}
