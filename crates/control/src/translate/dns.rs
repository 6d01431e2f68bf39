//! A sidecar's DNS listener (Istio's DNS proxying, `ISTIO_META_DNS_CAPTURE`): the table of
//! the names its workload may ask for, built from the services the sidecar sees (its
//! Sidecar resource's egress imports and `exportTo`, as its outbound clusters), as istiod's
//! name table and the agent's short names make it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use weft_xds::proto;

use super::Notes;
use super::scope::Scope;
use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::registry::{Resolution, Service, ServiceOrigin};
use crate::view::ConfigView;

/// The listener's name.
pub const DNS_LISTENER: &str = "dns";

/// Where the DNS proxy listens: Istio's agent's port.
pub const DNS_PORT: u16 = 15053;

/// The listener's address. Istio's agent listens on 127.0.0.1:15053: the capture rules
/// REDIRECT the workload's port 53 (UDP and TCP) to port 15053, and a redirected packet the
/// pod sent itself goes to loopback, which only the pod's own network namespace has. A
/// proxy whose own IP is a loopback address (`weft up` without capture: every sidecar on the
/// host's network, each on its own 127.x address) listens on its own IP instead, so that
/// sidecars do not take each other's port.
pub fn dns_address(node: &ProxyNode) -> SocketAddr {
    let ip = if node.ip.is_loopback() {
        node.ip
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    SocketAddr::new(ip, DNS_PORT)
}

/// The DNS listener of sidecar `node`, when the mesh turns DNS capture on, or the sidecar is
/// captured by `weft up --capture` (local mode has no cluster DNS: its sidecars are what
/// resolves the mesh's names).
pub(crate) fn dns_listener(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
) -> Option<proto::Listener> {
    if !mesh.dns_capture() && !node.capture {
        return None;
    }
    // What the Sidecar resource does not support is reported with the outbound half.
    let mut notes = Notes::default();
    let scope = Scope::for_sidecar(node, mesh, view, &mut notes);
    let names = table(&scope.services, node);
    Some(proto::Listener {
        name: DNS_LISTENER.to_owned(),
        address: dns_address(node).to_string(),
        protocol: Some(proto::listener::Protocol::Dns(proto::DnsListener {
            names,
            // The proxy reads the workload's resolv.conf (shared with it) for the
            // resolvers and search domains, as Istio's agent does.
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// The table: a name per visible service that has IP addresses, with the short names of a
/// Kubernetes Service. A name already taken (by an earlier host or alias) is left out, so the
/// table never holds one twice.
fn table(services: &[&Service], node: &ProxyNode) -> Vec<proto::DnsName> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for s in services {
        let Some(addresses) = addresses(s) else {
            continue;
        };
        if !is_dns_name(&s.hostname) || !taken.insert(s.hostname.to_ascii_lowercase()) {
            continue;
        }
        let aliases = short_names(s, node)
            .into_iter()
            .filter(|a| taken.insert(a.to_ascii_lowercase()))
            .collect();
        out.push(proto::DnsName {
            name: s.hostname.clone(),
            addresses,
            aliases,
        });
    }
    out
}

/// What a service's name answers, as istiod's name table: its virtual IPs, but none at all
/// when one is a CIDR block (a ServiceEntry's `addresses`: no one address stands for it);
/// without virtual IPs (a headless Service, a `resolution: NONE` ServiceEntry), its
/// endpoints' IP addresses, as Kubernetes' DNS answers a headless Service. None when there is
/// nothing to answer: the name is then forwarded upstream.
fn addresses(s: &Service) -> Option<Vec<String>> {
    let ips: Vec<String> = if s.addresses.is_empty() {
        if s.origin != ServiceOrigin::Kubernetes && s.resolution != Resolution::Passthrough {
            return None;
        }
        let mut seen = HashSet::new();
        s.endpoints
            .iter()
            .filter_map(|e| e.address.parse::<IpAddr>().ok())
            .filter(|ip| seen.insert(*ip))
            .map(|ip| ip.to_string())
            .collect()
    } else {
        let parsed: Option<Vec<IpAddr>> = s.addresses.iter().map(|a| a.parse().ok()).collect();
        parsed?.iter().map(IpAddr::to_string).collect()
    };
    (!ips.is_empty()).then_some(ips)
}

/// The other names a client in `node`'s namespace reaches Kubernetes Service `s` by (what
/// Istio's agent adds): `name.namespace`, `name.namespace.svc`, and `name` in the same
/// namespace. Only for a Service in the proxy's cluster domain (`.svc.<domain>`).
fn short_names(s: &Service, node: &ProxyNode) -> Vec<String> {
    if s.origin != ServiceOrigin::Kubernetes {
        return Vec::new();
    }
    let suffix = format!(".{}.svc.{}", s.namespace, node.cluster_domain);
    let Some(name) = s.hostname.strip_suffix(&suffix) else {
        return Vec::new();
    };
    let ns = &s.namespace;
    let mut names = vec![format!("{name}.{ns}"), format!("{name}.{ns}.svc")];
    if *ns == node.namespace {
        names.insert(0, name.to_owned());
    }
    names
}

/// A name the proxy's table takes: DNS labels (letters, digits, `-`, `_`), maybe under a
/// leading `*.`.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Endpoint;

    fn service(host: &str, ns: &str, origin: ServiceOrigin, addresses: &[&str]) -> Service {
        Service {
            hostname: host.into(),
            namespace: ns.into(),
            origin,
            resource: weft_api::ResourceRef {
                kind: "Service".into(),
                namespace: ns.into(),
                name: host.into(),
            },
            ports: Vec::new(),
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: Vec::new(),
            endpoints: Vec::new(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn node(ns: &str) -> ProxyNode {
        let mut n = ProxyNode::parse_id(&format!(
            "sidecar~10.0.0.1~app-0.{ns}~{ns}.svc.cluster.local"
        ))
        .expect("a node id");
        n.namespace = ns.into();
        n
    }

    fn endpoint(ip: &str) -> Endpoint {
        Endpoint {
            address: ip.into(),
            labels: Default::default(),
            weight: 0,
            locality: String::new(),
            service_account: String::new(),
            ports: Default::default(),
            workload: None,
        }
    }

    #[test]
    fn kubernetes_services_get_their_short_names_the_bare_name_only_in_the_same_namespace() {
        let reviews = service(
            "reviews.default.svc.cluster.local",
            "default",
            ServiceOrigin::Kubernetes,
            &["10.96.0.7"],
        );
        let t = table(&[&reviews], &node("default"));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].addresses, ["10.96.0.7"]);
        assert_eq!(
            t[0].aliases,
            ["reviews", "reviews.default", "reviews.default.svc"]
        );
        let t = table(&[&reviews], &node("other"));
        assert_eq!(t[0].aliases, ["reviews.default", "reviews.default.svc"]);
    }

    #[test]
    fn service_entries_answer_their_host_only_and_a_cidr_answers_nothing() {
        let api = service(
            "api.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &["240.240.3.4"],
        );
        let cidr = service(
            "net.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &["192.0.2.0/24"],
        );
        let wild = service(
            "*.wild.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &["192.0.2.9"],
        );
        let bare = service(
            "*.bare.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &[],
        );
        let t = table(&[&api, &cidr, &wild, &bare], &node("default"));
        let names: Vec<_> = t
            .iter()
            .map(|n| (n.name.as_str(), n.aliases.len()))
            .collect();
        assert_eq!(names, [("api.example.com", 0), ("*.wild.example.com", 0)]);
    }

    #[test]
    fn without_a_vip_headless_and_none_resolution_answer_their_endpoints() {
        let mut headless = service(
            "db.default.svc.cluster.local",
            "default",
            ServiceOrigin::Kubernetes,
            &[],
        );
        headless.endpoints = vec![
            endpoint("10.1.0.1"),
            endpoint("10.1.0.2"),
            endpoint("10.1.0.1"),
        ];
        let mut none = service(
            "legacy.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &[],
        );
        none.resolution = Resolution::Passthrough;
        none.endpoints = vec![endpoint("192.0.2.5"), endpoint("legacy-a.example.com")];
        let mut dns = service(
            "dns.example.com",
            "default",
            ServiceOrigin::ServiceEntry,
            &[],
        );
        dns.resolution = Resolution::Dns;
        dns.endpoints = vec![endpoint("192.0.2.6")];
        let t = table(&[&headless, &none, &dns], &node("default"));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].addresses, ["10.1.0.1", "10.1.0.2"]);
        assert_eq!(t[1].addresses, ["192.0.2.5"]);
    }

    #[test]
    fn the_listener_is_on_loopback_or_on_the_proxys_own_loopback_ip() {
        assert_eq!(dns_address(&node("default")).to_string(), "127.0.0.1:15053");
        let mut local = node("default");
        local.ip = "127.1.2.1".parse().unwrap();
        assert_eq!(dns_address(&local).to_string(), "127.1.2.1:15053");
    }

    #[test]
    fn a_name_is_never_in_the_table_twice() {
        let k8s = service(
            "reviews.default.svc.cluster.local",
            "default",
            ServiceOrigin::Kubernetes,
            &["10.96.0.7"],
        );
        let se_short = service(
            "reviews",
            "default",
            ServiceOrigin::ServiceEntry,
            &["240.240.0.1"],
        );
        let t = table(&[&k8s, &se_short], &node("default"));
        assert_eq!(t.len(), 1, "{t:?}");
        let t = table(&[&se_short, &k8s], &node("default"));
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].aliases, ["reviews.default", "reviews.default.svc"]);
    }
}
