//! What a sidecar's outbound resources depend on.
//!
//! The outbound half of a sidecar's config (its clusters and the `outbound` route
//! configuration) is by far the larger half, and in a mesh without per-workload rules it is
//! the same for every sidecar of a namespace. [`OutboundKey`] names exactly the inputs it is
//! translated from: the config namespace, the cluster domain, the locality, and only those
//! labels some selector reads (a Sidecar's or DestinationRule's `workloadSelector`, a
//! VirtualService match's `sourceLabels`, a `failoverPriority` label), and Istio's
//! `security.istio.io/tlsMode` (whether the sidecar can originate mesh mTLS). The outbound half is
//! translated from the key alone ([`OutboundKey::node`]), so two sidecars with equal keys get
//! equal resources by construction, and the control plane translates and holds them once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use weft_api::Spec;
use weft_api::networking::destination_rule::{LoadBalancerSettings, TrafficPolicy};

use crate::mesh_config::MeshConfig;
use crate::node::{ProxyKind, ProxyNode};
use crate::view::ConfigView;

/// The inputs of a sidecar's outbound resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundKey {
    namespace: String,
    cluster_domain: String,
    locality: String,
    /// The sidecar's labels whose keys [`selector_label_keys`] returned.
    labels: BTreeMap<String, String>,
}

impl OutboundKey {
    /// The key of `node`'s outbound resources when selectors read `label_keys`.
    pub fn of(node: &ProxyNode, label_keys: &BTreeSet<String>) -> OutboundKey {
        OutboundKey {
            namespace: node.namespace.clone(),
            cluster_domain: node.cluster_domain.clone(),
            locality: node.locality.clone(),
            labels: node
                .labels
                .iter()
                .filter(|(k, _)| label_keys.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// A sidecar that has the key's inputs and nothing else: what the outbound half is
    /// translated for.
    pub(crate) fn node(&self) -> ProxyNode {
        ProxyNode {
            kind: ProxyKind::Sidecar,
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            name: String::new(),
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            labels: self.labels.clone(),
            service_account: String::new(),
            app_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            locality: self.locality.clone(),
            capture: false,
        }
    }
}

/// The label keys any selector a sidecar's outbound translation evaluates reads: Sidecar
/// and DestinationRule `workloadSelector`s, VirtualService `sourceLabels`, and the labels of
/// `failoverPriority` (in DestinationRules and the mesh config); and the mTLS label.
pub fn selector_label_keys(view: &ConfigView, mesh: &MeshConfig) -> BTreeSet<String> {
    // Whether the sidecar has a workload certificate decides mesh mTLS (auto mTLS,
    // ISTIO_MUTUAL) on its clusters.
    let mut keys = BTreeSet::from([super::sidecar::TLS_MODE_LABEL.to_owned()]);
    for r in view.resources() {
        match &r.spec {
            Spec::Sidecar(sc) => {
                if let Some(s) = &sc.workload_selector {
                    keys.extend(s.labels.keys().cloned());
                }
            }
            Spec::DestinationRule(dr) => {
                if let Some(s) = &dr.workload_selector {
                    keys.extend(s.match_labels.keys().cloned());
                }
                let policies = dr
                    .traffic_policy
                    .iter()
                    .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
                for p in policies {
                    failover_keys(p, &mut keys);
                }
            }
            Spec::VirtualService(vs) => {
                let http = vs.http.iter().flat_map(|h| &h.matches);
                let tcp = vs.tcp.iter().flat_map(|t| &t.matches);
                let tls = vs.tls.iter().flat_map(|t| &t.matches);
                keys.extend(http.flat_map(|m| m.source_labels.keys().cloned()));
                keys.extend(tcp.flat_map(|m| m.source_labels.keys().cloned()));
                keys.extend(tls.flat_map(|m| m.source_labels.keys().cloned()));
            }
            _ => {}
        }
    }
    if let Some(s) = &mesh.locality_lb_setting {
        keys.extend(s.failover_priority.iter().map(|e| label_of(e)));
    }
    keys
}

fn failover_keys(policy: &TrafficPolicy, keys: &mut BTreeSet<String>) {
    let lbs = policy.load_balancer.iter().chain(
        policy
            .port_level_settings
            .iter()
            .filter_map(|p| p.load_balancer.as_ref()),
    );
    let settings = lbs.filter_map(|lb: &LoadBalancerSettings| lb.locality_lb_setting.as_ref());
    for s in settings {
        keys.extend(s.failover_priority.iter().map(|e| label_of(e)));
    }
}

/// The label of a `failoverPriority` entry: `key` or `key=value`.
fn label_of(entry: &str) -> String {
    entry.split('=').next().unwrap_or(entry).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(yaml: &str) -> ConfigView {
        let loaded = weft_api::load_str("test.yaml", yaml);
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        ConfigView::new(loaded.resources, Vec::new())
    }

    #[test]
    fn only_labels_some_selector_reads_are_in_the_key() {
        let v = view(
            r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {version: v2}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        localityLbSetting: {failoverPriority: ["topology.istio.io/network", "tier=gold"]}
"#,
        );
        let keys = selector_label_keys(&v, &MeshConfig::default());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "app",
                "security.istio.io/tlsMode",
                "tier",
                "topology.istio.io/network",
                "version"
            ]
        );

        let node = |labels: &[(&str, &str)], ip: &str| {
            let mut n =
                ProxyNode::parse_id(&format!("sidecar~{ip}~a.default~default.svc.cluster.local"))
                    .expect("id");
            n.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            n
        };
        let keys = selector_label_keys(&v, &MeshConfig::default());
        let a = OutboundKey::of(
            &node(
                &[("app", "reviews"), ("pod-template-hash", "x")],
                "10.0.0.1",
            ),
            &keys,
        );
        let b = OutboundKey::of(
            &node(
                &[("app", "reviews"), ("pod-template-hash", "y")],
                "10.0.0.2",
            ),
            &keys,
        );
        assert_eq!(a, b, "labels no selector reads and addresses do not matter");
        let c = OutboundKey::of(&node(&[("app", "ratings")], "10.0.0.1"), &keys);
        assert_ne!(a, c);
        // With no selectors at all, every sidecar of a namespace shares one key.
        let none = BTreeSet::new();
        assert_eq!(
            OutboundKey::of(&node(&[("app", "x")], "10.0.0.1"), &none),
            OutboundKey::of(&node(&[("app", "y")], "10.0.0.9"), &none)
        );
    }
}
