//! Who a proxy is: the identity a sidecar or gateway presents to the control plane, in Istio's
//! node id shape `TYPE~IP~NAME.NAMESPACE~NAMESPACE.svc.DOMAIN`
//! (`sidecar~10.0.0.1~reviews-v1-0.default~default.svc.cluster.local`).
//!
//! The id carries kind, address, workload instance name and namespace. Labels, the service
//! account and the locality travel beside it (Istio sends them as node metadata and reads the
//! locality from the registry); [`ProxyNode::parse_id`] leaves them empty and
//! [`crate::ConfigView::complete_node`] fills them from the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use weft_api::analyze::CLUSTER_DOMAIN;

use crate::registry::WorkloadInstance;

/// A sidecar (in front of one workload) or a gateway (standalone, at the mesh edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Sidecar,
    /// Istio's `router` node type: ingress and egress gateways.
    Gateway,
}

impl ProxyKind {
    /// The node type as the id spells it (Istio's words: `sidecar`, `router`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Gateway => "router",
        }
    }
}

/// The address a sidecar forwards inbound traffic to when nothing says otherwise: the
/// application listens on loopback next to its sidecar.
pub const DEFAULT_APP_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One proxy, as the translation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyNode {
    pub kind: ProxyKind,
    /// The proxy's own address ("pod IP"): listeners bind it.
    pub ip: IpAddr,
    /// The workload instance (pod) name.
    pub name: String,
    /// The namespace whose configuration applies to the proxy (Istio's config namespace).
    pub namespace: String,
    /// The cluster DNS domain; `cluster.local` unless the id says otherwise.
    pub cluster_domain: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Sidecars: the host the application accepts inbound traffic on.
    pub app_host: IpAddr,
    /// Where the proxy runs, `region/zone/subzone` (maybe partial, empty when unknown): what
    /// locality load balancing ranks endpoints against.
    pub locality: String,
    /// Sidecars: whether iptables captures the workload's traffic (Istio's interception
    /// mode REDIRECT, `weft up --capture`). Without it the sidecar is an explicit proxy
    /// (`HTTP_PROXY`) and binds each inbound port itself.
    pub capture: bool,
}

/// How what a user types names a proxy (`weft proxy-status`, `proxy-config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameMatch {
    /// A Workload (or Deployment) name: the pod name less its replica suffix (`-0`), as
    /// `istio-ingressgateway` for `istio-ingressgateway-0`. Good when only one proxy matches.
    Workload,
    /// The pod name (`reviews-v1-0`), with or without `.namespace`.
    Exact,
}

/// Whether `wanted` (`name.namespace`, `name`, or a workload name with or without
/// `.namespace`) names the proxy of pod `name` in `namespace`, and how.
pub fn name_match(name: &str, namespace: &str, wanted: &str) -> Option<NameMatch> {
    let (wanted_name, wanted_ns) = match wanted.split_once('.') {
        Some((n, ns)) => (n, Some(ns)),
        None => (wanted, None),
    };
    if wanted_ns.is_some_and(|ns| ns != namespace) {
        return None;
    }
    if wanted_name == name {
        return Some(NameMatch::Exact);
    }
    let workload = name
        .rsplit_once('-')
        .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(|(w, _)| w);
    (workload == Some(wanted_name)).then_some(NameMatch::Workload)
}

/// Why a node id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("node id {0:?} must have four `~`-separated parts: TYPE~IP~NAME.NAMESPACE~DOMAIN")]
    Parts(String),
    #[error("node type {0:?} is not `sidecar` or `router`")]
    Kind(String),
    #[error("{0:?} is not an IP address")]
    Ip(String),
    #[error("node id {0:?} names no workload")]
    Name(String),
    #[error("node id {0:?} names no namespace (NAME.NAMESPACE, or DOMAIN starting with it)")]
    Namespace(String),
}

impl ProxyNode {
    /// A proxy for a workload instance, labels and service account included.
    pub fn for_instance(kind: ProxyKind, instance: &WorkloadInstance) -> ProxyNode {
        ProxyNode {
            kind,
            ip: instance.ip,
            name: instance.name.clone(),
            namespace: instance.namespace.clone(),
            cluster_domain: CLUSTER_DOMAIN.to_owned(),
            labels: instance.labels.clone(),
            service_account: instance.service_account.clone(),
            app_host: DEFAULT_APP_HOST,
            locality: instance.locality(),
            capture: false,
        }
    }

    /// Reads an Istio node id. Labels and locality are left empty and the service account is
    /// `default`: they are not part of the id.
    pub fn parse_id(id: &str) -> Result<ProxyNode, NodeIdError> {
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, name_ns, domain] = parts[..] else {
            return Err(NodeIdError::Parts(id.to_owned()));
        };
        let kind = match kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Gateway,
            other => return Err(NodeIdError::Kind(other.to_owned())),
        };
        let ip: IpAddr = ip.parse().map_err(|_| NodeIdError::Ip(ip.to_owned()))?;
        // Namespaces are DNS labels (no dots) while pod names may contain dots: the namespace is
        // what follows the last dot. Without one, the domain's first label is the namespace, as
        // Istio falls back to for proxies that send no namespace metadata.
        let domain_ns = domain.split('.').next().filter(|s| !s.is_empty());
        let (name, namespace) = match name_ns.rsplit_once('.') {
            Some((name, ns)) if !ns.is_empty() => (name, ns),
            _ => (
                name_ns,
                domain_ns.ok_or_else(|| NodeIdError::Namespace(id.to_owned()))?,
            ),
        };
        if name.is_empty() {
            return Err(NodeIdError::Name(id.to_owned()));
        }
        let cluster_domain = domain
            .strip_prefix(namespace)
            .and_then(|rest| rest.strip_prefix(".svc."))
            .filter(|d| !d.is_empty())
            .unwrap_or(CLUSTER_DOMAIN);
        Ok(ProxyNode {
            kind,
            ip,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
            labels: BTreeMap::new(),
            service_account: "default".to_owned(),
            app_host: DEFAULT_APP_HOST,
            locality: String::new(),
            capture: false,
        })
    }

    /// The node id, in the shape [`ProxyNode::parse_id`] reads.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ProxyNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}~{}~{}.{}~{}.svc.{}",
            self.kind.as_str(),
            self.ip,
            self.name,
            self.namespace,
            self.namespace,
            self.cluster_domain
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_user_types_match_proxies() {
        use NameMatch::{Exact, Workload};
        let cases = [
            ("reviews-v1-0", "default", "reviews-v1-0", Some(Exact)),
            (
                "reviews-v1-0",
                "default",
                "reviews-v1-0.default",
                Some(Exact),
            ),
            ("reviews-v1-0", "default", "reviews-v1-0.prod", None),
            ("reviews-v1-0", "default", "reviews-v1", Some(Workload)),
            (
                "reviews-v1-0",
                "default",
                "reviews-v1.default",
                Some(Workload),
            ),
            ("reviews-v1-0", "default", "reviews", None),
            (
                "istio-ingressgateway-0",
                "istio-system",
                "istio-ingressgateway",
                Some(Workload),
            ),
            (
                "istio-ingressgateway-0",
                "istio-system",
                "istio-ingressgateway-0.istio-system",
                Some(Exact),
            ),
            ("gw-x", "default", "gw", None),
        ];
        for (name, ns, wanted, want) in cases {
            assert_eq!(
                name_match(name, ns, wanted),
                want,
                "{wanted} vs {name}.{ns}"
            );
        }
    }

    #[test]
    fn ids_parse_and_format_round_trip() {
        let id = "sidecar~10.0.0.1~reviews-v1-1.default~default.svc.cluster.local";
        let node = ProxyNode::parse_id(id).expect("parses");
        assert_eq!(node.kind, ProxyKind::Sidecar);
        assert_eq!(node.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(node.name, "reviews-v1-1");
        assert_eq!(node.namespace, "default");
        assert_eq!(node.cluster_domain, "cluster.local");
        assert_eq!(node.service_account, "default");
        assert_eq!(node.id(), id);

        let gw =
            "router~127.0.9.1~istio-ingressgateway-0.istio-system~istio-system.svc.corp.example";
        let node = ProxyNode::parse_id(gw).expect("parses");
        assert_eq!(node.kind, ProxyKind::Gateway);
        assert_eq!(node.namespace, "istio-system");
        assert_eq!(node.cluster_domain, "corp.example");
        assert_eq!(node.id(), gw);
    }

    #[test]
    fn ids_with_odd_names_and_addresses() {
        // A pod name with dots: the namespace follows the last one.
        let node = ProxyNode::parse_id("sidecar~::1~web.v2.prod~prod.svc.cluster.local").unwrap();
        assert_eq!(
            (node.name.as_str(), node.namespace.as_str()),
            ("web.v2", "prod")
        );
        assert_eq!(node.ip, "::1".parse::<IpAddr>().unwrap());
        // No namespace in the name part: the domain's first label.
        let node = ProxyNode::parse_id("sidecar~10.0.0.2~vm1~prod.svc.cluster.local").unwrap();
        assert_eq!(
            (node.name.as_str(), node.namespace.as_str()),
            ("vm1", "prod")
        );
    }

    #[test]
    fn bad_ids_are_errors_not_panics() {
        let cases = [
            ("", "four"),
            ("sidecar~10.0.0.1~a.b", "four"),
            ("sidecar~10.0.0.1~a.b~c~d", "four"),
            ("waypoint~10.0.0.1~a.b~b.svc.cluster.local", "node type"),
            ("sidecar~ten~a.b~b.svc.cluster.local", "not an IP"),
            ("sidecar~10.0.0.1~.b~b.svc.cluster.local", "no workload"),
            ("sidecar~10.0.0.1~a~", "no namespace"),
            ("~~~", "node type"),
        ];
        for (id, want) in cases {
            let err = ProxyNode::parse_id(id).expect_err(id).to_string();
            assert!(err.contains(want), "{id:?}: {err}");
        }
    }
}
