//! The service registry: every service a proxy may send to, with its ports, protocols and
//! endpoints.
//!
//! Built from resources (Kubernetes Services, ServiceEntries, WorkloadEntries) and the
//! *workload instances* that run: in local mode each `Workload` replica, with the address the
//! runner gave it; on Kubernetes (later) each Pod. A Service's endpoints are the instances and
//! WorkloadEntries its selector picks, at the port its `targetPort` names.
//!
//! Host names are Kubernetes' (`name.namespace.svc.cluster.local`); ServiceEntry hosts are taken
//! as written (short names resolved in the entry's namespace, as `weft analyze` does).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use weft_api::common::selector_matches;
use weft_api::diag::ResourceRef;
use weft_api::kube::service::{IntOrString, ServicePort as KubePort};
use weft_api::networking::WorkloadEntry;
use weft_api::networking::gateway::Protocol;
use weft_api::networking::service_entry::{Location, Resolution as SeResolution};
use weft_api::weft::{Protocol as WorkloadProtocol, WorkloadSpec};
use weft_api::{Resource, Spec};

use crate::host::resolve_host;
use crate::unsupported::Unsupported;

pub use weft_api::host::EXPORT_TO_ANNOTATION;

/// The label Istio reads a workload's whole locality from (`region/zone/subzone`, or with `.`
/// separators since label values cannot hold `/`).
pub const LOCALITY_LABEL: &str = "topology.istio.io/locality";
/// The older spelling of [`LOCALITY_LABEL`], still read after it.
pub const LEGACY_LOCALITY_LABEL: &str = "istio-locality";
/// Kubernetes' node topology labels, which Istio reads a pod's locality from (its node's) and
/// adds to every workload's labels for `failoverPriority`.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// One running copy of a workload: what a Pod is on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInstance {
    /// Unique in its namespace (`reviews-v1-0`).
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: IpAddr,
    pub ports: Vec<InstancePort>,
    /// Whether the instance takes traffic (Kubernetes' pod readiness). An instance that is not
    /// ready is no endpoint of any service (as Kubernetes leaves a NotReady pod out and
    /// istiod sends no unhealthy endpoint), though its own sidecar keeps its config.
    pub ready: bool,
}

/// A port a workload instance listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePort {
    pub name: String,
    pub port: u32,
    /// What the workload declares it speaks; `None` when it does not say.
    pub protocol: Option<Protocol>,
}

impl WorkloadInstance {
    /// Where the instance runs, `region/zone/subzone` (maybe partial; empty when unknown), for
    /// locality load balancing. Read from its labels as Istio reads a pod's
    /// (`getPodLocality`): [`LOCALITY_LABEL`] or [`LEGACY_LOCALITY_LABEL`] first; else the
    /// topology labels ([`REGION_LABEL`], [`ZONE_LABEL`], [`SUBZONE_LABEL`]), which on
    /// Kubernetes are its node's and in local mode are written on the instance itself.
    pub fn locality(&self) -> String {
        if let Some(l) = locality_label(&self.labels) {
            return l;
        }
        let part = |key| self.labels.get(key).map_or("", String::as_str);
        let (region, zone, subzone) = (part(REGION_LABEL), part(ZONE_LABEL), part(SUBZONE_LABEL));
        if region.is_empty() && zone.is_empty() && subzone.is_empty() {
            return String::new();
        }
        format!("{region}/{zone}/{subzone}")
            .trim_end_matches('/')
            .to_owned()
    }

    /// Replica `replica` of a weft `Workload`, at `ip`: named `<workload>-<replica>`, with the
    /// Workload's labels, service account and ports. `None` for other kinds.
    pub fn from_workload(resource: &Resource, replica: u32, ip: IpAddr) -> Option<Self> {
        let Spec::Workload(spec) = &resource.spec else {
            return None;
        };
        Some(Self::from_spec(resource, spec, replica, ip))
    }

    fn from_spec(resource: &Resource, spec: &WorkloadSpec, replica: u32, ip: IpAddr) -> Self {
        WorkloadInstance {
            name: format!("{}-{replica}", resource.name()),
            namespace: resource.namespace().to_owned(),
            labels: resource.metadata.labels.clone(),
            service_account: spec.service_account().to_owned(),
            ip,
            ports: spec
                .ports
                .iter()
                .map(|p| InstancePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: Some(workload_protocol(p.protocol)),
                })
                .collect(),
            ready: true,
        }
    }
}

/// The locality a [`LOCALITY_LABEL`] (or [`LEGACY_LOCALITY_LABEL`]) gives, `.` read as `/`
/// unless the value already uses `/` (Istio's `GetLocalityLabel`, `SanitizeLocalityLabel`).
fn locality_label(labels: &BTreeMap<String, String>) -> Option<String> {
    let value = labels
        .get(LOCALITY_LABEL)
        .or_else(|| labels.get(LEGACY_LOCALITY_LABEL))
        .filter(|v| !v.is_empty())?;
    Some(if value.contains('/') {
        value.clone()
    } else {
        value.replace('.', "/")
    })
}

fn workload_protocol(p: WorkloadProtocol) -> Protocol {
    match p {
        WorkloadProtocol::Http => Protocol::Http,
        WorkloadProtocol::Http2 => Protocol::Http2,
        WorkloadProtocol::Grpc => Protocol::Grpc,
        WorkloadProtocol::Https => Protocol::Https,
        WorkloadProtocol::Tls => Protocol::Tls,
        WorkloadProtocol::Tcp => Protocol::Tcp,
    }
}

/// Where a service came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOrigin {
    Kubernetes,
    ServiceEntry,
}

/// How a service's endpoints are found (ServiceEntry `resolution`; Kubernetes Services are
/// `Static`: the registry knows their endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Static,
    /// Endpoint addresses are DNS names the proxy resolves (or the host itself).
    Dns,
    DnsRoundRobin,
    DynamicDns,
    /// `NONE`: traffic goes to the address the client asked for.
    Passthrough,
}

/// A service a proxy can send to.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// FQDN (`reviews.default.svc.cluster.local`), or a ServiceEntry host (maybe `*.x.com`).
    pub hostname: String,
    pub namespace: String,
    pub origin: ServiceOrigin,
    /// The resource that defines it, for messages.
    pub resource: ResourceRef,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    /// ServiceEntry `location: MESH_EXTERNAL`.
    pub mesh_external: bool,
    /// `exportTo` (empty: the mesh default).
    pub export_to: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    /// The service's virtual IPs (or, from a ServiceEntry, CIDR blocks): what a captured
    /// connection's original destination is matched against. A Kubernetes Service's
    /// `clusterIPs`; a ServiceEntry's `addresses`; else one allocated from [`VIP_RANGE`] (as
    /// Istio's DNS auto-allocation does). Empty for headless Services and wildcard hosts.
    pub addresses: Vec<String>,
}

/// Where virtual IPs are allocated for services that have none: Istio's auto-allocation range
/// (Class E, never routed on the internet).
pub const VIP_RANGE: (std::net::Ipv4Addr, u8) = (std::net::Ipv4Addr::new(240, 240, 0, 0), 16);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    /// `None`: not declared: sniffed outbound (HTTP, else TCP), TCP inbound.
    pub protocol: Option<Protocol>,
}

impl ServicePort {
    /// Routed with VirtualService `http` routes.
    pub fn is_http(&self) -> bool {
        self.protocol.is_some_and(Protocol::is_http)
    }
}

/// One endpoint of a service, with its port for each service port it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address, or a DNS name (DNS resolution).
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// 0 means unset (1).
    pub weight: u32,
    /// `region/zone/subzone`, maybe partial or empty.
    pub locality: String,
    pub service_account: String,
    /// Service port number -> the endpoint's port. A service port missing here is not served
    /// by this endpoint (a named targetPort it does not have).
    pub ports: BTreeMap<u32, u32>,
    /// The workload behind the address (an instance, a WorkloadEntry); None for a
    /// ServiceEntry's DNS name. What metrics label the destination with.
    pub workload: Option<EndpointWorkload>,
}

/// Which workload an endpoint is, as Istio's metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointWorkload {
    /// The workload's name (a Deployment's, a WorkloadEntry's); empty when it has none (a
    /// ServiceEntry's inline endpoint).
    pub name: String,
    pub namespace: String,
    /// The instance (pod) name, when it is one.
    pub instance: String,
}

impl EndpointWorkload {
    fn of_instance(inst: &WorkloadInstance) -> Option<EndpointWorkload> {
        Some(EndpointWorkload {
            name: workload_name(&inst.name).to_owned(),
            namespace: inst.namespace.clone(),
            instance: inst.name.clone(),
        })
    }
}

/// The workload a pod (instance) belongs to: its name less the replica suffix local mode gives
/// it (`reviews-v1-0` is of `reviews-v1`), or a Deployment's pod-template and pod hashes
/// (`reviews-v1-7d4b9c8f5-x2x9z`), as Istio names a pod's workload after its Deployment.
pub fn workload_name(instance: &str) -> &str {
    let Some((rest, last)) = instance.rsplit_once('-') else {
        return instance;
    };
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return rest;
    }
    // A Deployment's pod: NAME-<template hash>-<5 random>.
    let hashy = |s: &str| {
        (5..=10).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match rest.rsplit_once('-') {
        Some((name, hash))
            if last.len() == 5 && hashy(hash) && hash.bytes().any(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => instance,
    }
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Every service, indexed by host.
#[derive(Debug, Default)]
pub struct Registry {
    services: Vec<Service>,
    by_host: HashMap<String, Vec<usize>>,
    instances: Vec<WorkloadInstance>,
    /// What the registry could not represent (ExternalName Services, unix sockets, ...).
    unsupported: Vec<Unsupported>,
}

impl Registry {
    /// Builds the registry. `resources` are the resources in force (validated).
    pub fn build<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        instances: Vec<WorkloadInstance>,
    ) -> Registry {
        let resources: Vec<&Resource> = resources.into_iter().collect();
        let entries: Vec<(&Resource, &WorkloadEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::WorkloadEntry(we) => Some((*r, we)),
                _ => None,
            })
            .collect();
        let mut reg = Registry {
            instances,
            ..Registry::default()
        };
        for r in &resources {
            match &r.spec {
                Spec::Service(svc) => {
                    if let Some(s) = reg.kubernetes_service(r, svc, &entries) {
                        reg.services.push(s);
                    }
                }
                Spec::ServiceEntry(se) => {
                    let endpoints = reg.service_entry_endpoints(r, se, &entries);
                    for h in &se.hosts {
                        reg.services.push(Service {
                            hostname: resolve_host(h, r.namespace()),
                            namespace: r.namespace().to_owned(),
                            origin: ServiceOrigin::ServiceEntry,
                            resource: r.reference(),
                            ports: se
                                .ports
                                .iter()
                                .map(|p| ServicePort {
                                    name: p.name.clone(),
                                    port: p.number,
                                    protocol: Protocol::parse(&p.protocol),
                                })
                                .collect(),
                            resolution: match se.resolution {
                                SeResolution::Static => Resolution::Static,
                                SeResolution::Dns => Resolution::Dns,
                                SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
                                SeResolution::DynamicDns => Resolution::DynamicDns,
                                SeResolution::None => Resolution::Passthrough,
                            },
                            mesh_external: se.location == Location::MeshExternal,
                            export_to: se.export_to.clone(),
                            endpoints: dns_default_endpoint(se, h, endpoints.clone()),
                            addresses: se.addresses.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        // Deterministic order: by host, then namespace (several namespaces may define a host).
        reg.services.sort_by(|a, b| {
            (a.hostname.as_str(), a.namespace.as_str())
                .cmp(&(b.hostname.as_str(), b.namespace.as_str()))
        });
        for (i, s) in reg.services.iter().enumerate() {
            reg.by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        allocate_vips(&mut reg.services);
        reg
    }

    /// Every service, ordered by host then namespace.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Services with exactly this host (one per namespace that defines it).
    pub fn by_host(&self, host: &str) -> impl Iterator<Item = &Service> {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.services.get(i))
    }

    pub fn instances(&self) -> &[WorkloadInstance] {
        &self.instances
    }

    pub fn unsupported(&self) -> &[Unsupported] {
        &self.unsupported
    }

    fn kubernetes_service(
        &mut self,
        r: &Resource,
        svc: &weft_api::kube::Service,
        entries: &[(&Resource, &WorkloadEntry)],
    ) -> Option<Service> {
        let spec = &svc.spec;
        if spec.is_external_name() {
            self.unsupported.push(Unsupported::new(
                Some(r),
                "spec.type",
                "ExternalName Services (DNS aliases) are not in the registry yet",
            ));
            return None;
        }
        let ns = r.namespace();
        let mut endpoints = Vec::new();
        if !spec.selector.is_empty() {
            for inst in &self.instances {
                if !inst.ready
                    || inst.namespace != ns
                    || !selector_matches(&spec.selector, &inst.labels)
                {
                    continue;
                }
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| Some((p.port, instance_target_port(p, inst)?)))
                    .collect();
                endpoints.push(Endpoint {
                    address: inst.ip.to_string(),
                    labels: inst.labels.clone(),
                    weight: 0,
                    locality: inst.locality(),
                    service_account: inst.service_account.clone(),
                    ports,
                    workload: EndpointWorkload::of_instance(inst),
                });
            }
            for (er, we) in entries {
                if er.namespace() != ns || !selector_matches(&spec.selector, &we.labels) {
                    continue;
                }
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| Some((p.port, entry_target_port(p, we)?)))
                    .collect();
                if let Some(ep) = self.entry_endpoint(er, we, ports) {
                    endpoints.push(ep);
                }
            }
        }
        let export_to = weft_api::host::service_export_to(r);
        Some(Service {
            hostname: resolve_host(r.name(), ns),
            namespace: ns.to_owned(),
            origin: ServiceOrigin::Kubernetes,
            resource: r.reference(),
            ports: spec
                .ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: p.port,
                    protocol: kubernetes_port_protocol(p),
                })
                .collect(),
            resolution: Resolution::Static,
            mesh_external: false,
            export_to,
            endpoints,
            addresses: if spec.cluster_ips.is_empty() {
                spec.cluster_ip.iter().cloned().collect()
            } else {
                spec.cluster_ips.clone()
            },
            // `None` (headless) stays: [`allocate_vips`] reads it, then removes it.
        })
    }

    fn service_entry_endpoints(
        &mut self,
        r: &Resource,
        se: &weft_api::networking::ServiceEntry,
        entries: &[(&Resource, &WorkloadEntry)],
    ) -> Vec<Endpoint> {
        let target = |p: &weft_api::networking::service_entry::ServicePort,
                      mapped: &BTreeMap<String, u32>| {
            mapped
                .get(&p.name)
                .copied()
                .or((p.target_port != 0).then_some(p.target_port))
                .unwrap_or(p.number)
        };
        let mut out = Vec::new();
        for (i, we) in se.endpoints.iter().enumerate() {
            let ports = se
                .ports
                .iter()
                .map(|p| (p.number, target(p, &we.ports)))
                .collect();
            let field = format!("spec.endpoints[{i}].address");
            if let Some(ep) = self.endpoint_at(r, &field, we, ports) {
                out.push(ep);
            }
        }
        if let Some(sel) = &se.workload_selector {
            let ns = r.namespace();
            for inst in &self.instances {
                if !inst.ready
                    || inst.namespace != ns
                    || !selector_matches(&sel.labels, &inst.labels)
                {
                    continue;
                }
                out.push(Endpoint {
                    address: inst.ip.to_string(),
                    labels: inst.labels.clone(),
                    weight: 0,
                    locality: inst.locality(),
                    service_account: inst.service_account.clone(),
                    workload: EndpointWorkload::of_instance(inst),
                    ports: se
                        .ports
                        .iter()
                        .map(|p| (p.number, target(p, &BTreeMap::new())))
                        .collect(),
                });
            }
            for (er, we) in entries {
                if er.namespace() != ns || !selector_matches(&sel.labels, &we.labels) {
                    continue;
                }
                let ports = se
                    .ports
                    .iter()
                    .map(|p| (p.number, target(p, &we.ports)))
                    .collect();
                if let Some(ep) = self.entry_endpoint(er, we, ports) {
                    out.push(ep);
                }
            }
        }
        out
    }

    fn entry_endpoint(
        &mut self,
        r: &Resource,
        we: &WorkloadEntry,
        ports: BTreeMap<u32, u32>,
    ) -> Option<Endpoint> {
        self.endpoint_at(r, "spec.address", we, ports)
    }

    /// An endpoint from a WorkloadEntry (standalone, or a ServiceEntry's inline endpoint at
    /// `field`). Unix sockets and network-gateway endpoints (no address) are noted and skipped.
    fn endpoint_at(
        &mut self,
        r: &Resource,
        field: &str,
        we: &WorkloadEntry,
        ports: BTreeMap<u32, u32>,
    ) -> Option<Endpoint> {
        if we.address.is_empty() {
            self.unsupported.push(Unsupported::new(
                Some(r),
                field,
                "endpoints reached through a network gateway (no address) are not supported",
            ));
            return None;
        }
        if we.address.starts_with("unix://") {
            self.unsupported.push(Unsupported::new(
                Some(r),
                field,
                "unix domain socket endpoints are not supported by the proxy",
            ));
            return None;
        }
        Some(Endpoint {
            address: we.address.clone(),
            labels: we.labels.clone(),
            weight: we.weight,
            // The field, else the locality label, as Istio's `convertWorkloadEntryToWorkloadInstance`.
            locality: if we.locality.is_empty() {
                locality_label(&we.labels).unwrap_or_default()
            } else {
                we.locality.clone()
            },
            service_account: we.service_account.clone(),
            ports,
            // A standalone WorkloadEntry is a workload of its own name; a ServiceEntry's
            // inline endpoint has none.
            workload: Some(EndpointWorkload {
                name: if field == "spec.address" {
                    r.name().to_owned()
                } else {
                    String::new()
                },
                namespace: r.namespace().to_owned(),
                instance: String::new(),
            }),
        })
    }
}

/// A DNS ServiceEntry without endpoints resolves its own (non-wildcard) host.
/// Gives every service without addresses a virtual IP in [`VIP_RANGE`], except headless
/// Services (clients reach their endpoints directly), wildcard hosts (no one address stands
/// for them) and `resolution: NONE` entries (their traffic goes where it was addressed). Kubernetes' API server assigns Services their `clusterIP`; local mode has none,
/// so weft allocates as Istio does for ServiceEntries. An address depends on the host alone
/// (a hash of it, probing on for a free one), so it does not move when other services come
/// and go, except when two hosts' hashes collide. `services` is in registry order, which
/// decides who gets a contested slot.
fn allocate_vips(services: &mut [Service]) {
    let taken: std::collections::HashSet<String> = services
        .iter()
        .flat_map(|s| s.addresses.iter().cloned())
        .collect();
    let mut taken = taken;
    let (base, prefix) = VIP_RANGE;
    let slots = 1u32 << (32 - prefix);
    let mut by_host: HashMap<String, String> = HashMap::new();
    for s in services.iter_mut() {
        if s.addresses.iter().any(|a| a == "None") {
            s.addresses.clear();
            continue;
        }
        if !s.addresses.is_empty()
            || s.hostname.starts_with('*')
            || s.resolution == Resolution::Passthrough
        {
            continue;
        }
        // One host defined in several namespaces keeps one address.
        if let Some(vip) = by_host.get(&s.hostname) {
            s.addresses.push(vip.clone());
            continue;
        }
        let start = fnv1a(s.hostname.as_bytes()) % slots;
        // Skip the range's network and broadcast addresses.
        let free = (0..slots)
            .map(|i| (start + i) % slots)
            .filter(|slot| *slot != 0 && *slot != slots - 1)
            .map(|slot| std::net::Ipv4Addr::from(u32::from(base) + slot).to_string())
            .find(|ip| !taken.contains(ip));
        if let Some(vip) = free {
            taken.insert(vip.clone());
            by_host.insert(s.hostname.clone(), vip.clone());
            s.addresses.push(vip);
        }
    }
}

/// 32-bit FNV-1a: a stable hash (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn dns_default_endpoint(
    se: &weft_api::networking::ServiceEntry,
    host: &str,
    endpoints: Vec<Endpoint>,
) -> Vec<Endpoint> {
    let dns = matches!(
        se.resolution,
        SeResolution::Dns | SeResolution::DnsRoundRobin
    );
    if !dns || !endpoints.is_empty() || se.workload_selector.is_some() || host.starts_with('*') {
        return endpoints;
    }
    vec![Endpoint {
        address: host.to_owned(),
        labels: BTreeMap::new(),
        weight: 0,
        locality: String::new(),
        service_account: String::new(),
        workload: None,
        ports: se
            .ports
            .iter()
            .map(|p| {
                (
                    p.number,
                    if p.target_port != 0 {
                        p.target_port
                    } else {
                        p.number
                    },
                )
            })
            .collect(),
    }]
}

/// The instance port a Service port forwards to: `targetPort` by number, or the instance's
/// port of that name; unset means the same number. `None` when a named port is missing.
fn instance_target_port(p: &KubePort, inst: &WorkloadInstance) -> Option<u32> {
    match &p.target_port {
        None | Some(IntOrString::Int(0)) => Some(p.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) if s.is_empty() => Some(p.port),
        Some(IntOrString::String(name)) => inst
            .ports
            .iter()
            .find(|ip| &ip.name == name)
            .map(|ip| ip.port),
    }
}

/// Like [`instance_target_port`] for a WorkloadEntry: its `ports` map, by the Service port's
/// name (or a named targetPort), overrides the target.
fn entry_target_port(p: &KubePort, we: &WorkloadEntry) -> Option<u32> {
    if let Some(n) = p.name.as_ref().and_then(|n| we.ports.get(n)) {
        return Some(*n);
    }
    match &p.target_port {
        None | Some(IntOrString::Int(0)) => Some(p.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) if s.is_empty() => Some(p.port),
        Some(IntOrString::String(name)) => we.ports.get(name).copied(),
    }
}

/// Ports Istio takes as TCP when nothing names their protocol (SMTP, DNS, MySQL, MongoDB).
const WELL_KNOWN_TCP_PORTS: [u32; 4] = [25, 53, 3306, 27017];

/// A Kubernetes Service port's protocol, by Istio's rules
/// (<https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/>):
/// UDP is UDP; else `appProtocol` when set (with Kubernetes' `kubernetes.io/h2c`, `/ws`,
/// `/wss`), else the port name's prefix before `-` (`http-web` is HTTP; `grpc-web` is a
/// protocol of its own). `None` when neither names a known protocol (sniffed: see
/// `translate::sidecar`), except well-known TCP ports.
pub fn kubernetes_port_protocol(p: &KubePort) -> Option<Protocol> {
    if p.protocol
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("UDP"))
    {
        return Some(Protocol::Udp);
    }
    // appProtocol, when set, replaces the name entirely (no fallback to the name).
    let name = match p.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => return Some(Protocol::Http2),
        Some("kubernetes.io/ws") => return Some(Protocol::Http),
        Some("kubernetes.io/wss") => return Some(Protocol::Https),
        Some(app) => app,
        None => p.name.as_deref().unwrap_or(""),
    };
    let grpc_web = "grpc-web";
    if name
        .get(..grpc_web.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(grpc_web))
    {
        return Some(Protocol::GrpcWeb);
    }
    let prefix = name.split('-').next().unwrap_or("");
    Protocol::parse(prefix).or_else(|| {
        WELL_KNOWN_TCP_PORTS
            .contains(&p.port)
            .then_some(Protocol::Tcp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_workload_is_named_as_istio_names_it() {
        assert_eq!(workload_name("reviews-v1-0"), "reviews-v1");
        assert_eq!(workload_name("reviews-v1-7d4b9c8f5-x2x9z"), "reviews-v1");
        assert_eq!(
            workload_name("istio-ingressgateway"),
            "istio-ingressgateway"
        );
        assert_eq!(workload_name("ratings"), "ratings");
        // Not hashes: kept whole.
        assert_eq!(workload_name("my-service-canary"), "my-service-canary");
    }

    fn port(name: Option<&str>, app: Option<&str>, number: u32) -> KubePort {
        KubePort {
            name: name.map(str::to_owned),
            app_protocol: app.map(str::to_owned),
            port: number,
            ..KubePort::default()
        }
    }

    #[test]
    fn protocol_selection_follows_istio() {
        let cases = [
            (Some("http"), None, 80, Some(Protocol::Http)),
            (Some("http-web"), None, 80, Some(Protocol::Http)),
            (Some("HTTP2-x"), None, 80, Some(Protocol::Http2)),
            (Some("grpc"), None, 80, Some(Protocol::Grpc)),
            (Some("grpc-web"), None, 80, Some(Protocol::GrpcWeb)),
            (Some("grpc-web-x"), None, 80, Some(Protocol::GrpcWeb)),
            (Some("grpc-api"), None, 80, Some(Protocol::Grpc)),
            (Some("tcp-db"), None, 80, Some(Protocol::Tcp)),
            (Some("https"), None, 443, Some(Protocol::Https)),
            (Some("mongo"), None, 80, Some(Protocol::Mongo)),
            (Some("web"), None, 80, None),
            (None, None, 80, None),
            (None, None, 3306, Some(Protocol::Tcp)),
            (Some("web"), Some("http"), 80, Some(Protocol::Http)),
            (
                Some("http"),
                Some("kubernetes.io/h2c"),
                80,
                Some(Protocol::Http2),
            ),
            (None, Some("kubernetes.io/ws"), 80, Some(Protocol::Http)),
            (None, Some("kubernetes.io/wss"), 80, Some(Protocol::Https)),
            // appProtocol replaces the name, even when it names nothing known.
            (Some("http"), Some("custom"), 80, None),
        ];
        for (name, app, number, want) in cases {
            assert_eq!(
                kubernetes_port_protocol(&port(name, app, number)),
                want,
                "{name:?} {app:?}"
            );
        }
        let mut udp = port(Some("http"), None, 53);
        udp.protocol = Some("UDP".into());
        assert_eq!(kubernetes_port_protocol(&udp), Some(Protocol::Udp));
    }

    #[test]
    fn instance_localities_follow_istio() {
        let inst = |labels: &[(&str, &str)]| WorkloadInstance {
            name: "a-0".into(),
            namespace: "default".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            service_account: "default".into(),
            ip: "10.0.0.1".parse().unwrap(),
            ports: Vec::new(),
            ready: true,
        };
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[], ""),
            (
                &[(LEGACY_LOCALITY_LABEL, "us-west.zone1.a")],
                "us-west/zone1/a",
            ),
            (&[(LOCALITY_LABEL, "us-west/zone1")], "us-west/zone1"),
            // The newer label first, then the legacy one, then the topology labels.
            (
                &[
                    (LOCALITY_LABEL, "eu"),
                    (LEGACY_LOCALITY_LABEL, "us"),
                    (REGION_LABEL, "ap"),
                ],
                "eu",
            ),
            (
                &[(REGION_LABEL, "us-west"), (ZONE_LABEL, "zone1")],
                "us-west/zone1",
            ),
            (
                &[(REGION_LABEL, "r"), (ZONE_LABEL, "z"), (SUBZONE_LABEL, "s")],
                "r/z/s",
            ),
            (&[(ZONE_LABEL, "z")], "/z"),
        ];
        for (labels, want) in cases {
            assert_eq!(inst(labels).locality(), want, "{labels:?}");
        }
    }

    #[test]
    fn target_ports_by_number_and_name() {
        let inst = WorkloadInstance {
            name: "a-0".into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            service_account: "default".into(),
            ip: "10.0.0.1".parse().unwrap(),
            ports: vec![InstancePort {
                name: "web".into(),
                port: 8080,
                protocol: None,
            }],
            ready: true,
        };
        let mut p = port(Some("http"), None, 80);
        assert_eq!(instance_target_port(&p, &inst), Some(80));
        p.target_port = Some(IntOrString::Int(9090));
        assert_eq!(instance_target_port(&p, &inst), Some(9090));
        p.target_port = Some(IntOrString::String("web".into()));
        assert_eq!(instance_target_port(&p, &inst), Some(8080));
        p.target_port = Some(IntOrString::String("admin".into()));
        assert_eq!(instance_target_port(&p, &inst), None);
    }

    #[test]
    fn services_get_virtual_ips_as_kubernetes_and_istio_assign_them() {
        let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {clusterIP: 10.96.0.7, ports: [{port: 9080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, ports: [{port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ['*.wild.example.com', passthrough.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed}
spec:
  hosts: [fixed.example.com]
  addresses: [192.0.2.0/24]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.1}]
";
        let loaded = weft_api::load::load_str("vips.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let reg = Registry::build(&loaded.resources, Vec::new());
        let vips = |host: &str| reg.by_host(host).next().unwrap().addresses.clone();
        assert_eq!(vips("ratings.default.svc.cluster.local"), ["10.96.0.7"]);
        assert_eq!(vips("db.default.svc.cluster.local"), Vec::<String>::new());
        assert_eq!(vips("*.wild.example.com"), Vec::<String>::new());
        assert_eq!(vips("passthrough.example.com"), Vec::<String>::new());
        assert_eq!(vips("fixed.example.com"), ["192.0.2.0/24"]);
        let reviews = vips("reviews.default.svc.cluster.local");
        let api = vips("api.example.com");
        for vip in [&reviews[0], &api[0]] {
            let ip: std::net::Ipv4Addr = vip.parse().unwrap();
            assert_eq!(ip.octets()[..2], [240, 240], "{vip}");
        }
        assert_ne!(reviews, api);
        // The same host gets the same address whatever else is registered.
        let alone = weft_api::load::load_str("one.yaml", yaml.split("---").next().unwrap());
        let reg = Registry::build(&alone.resources, Vec::new());
        assert_eq!(
            reg.by_host("reviews.default.svc.cluster.local")
                .next()
                .unwrap()
                .addresses,
            reviews
        );
    }
}
