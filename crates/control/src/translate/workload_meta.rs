//! What Istio's standard metrics label workloads and services with: the proxy's own workload
//! on each of its listeners, the workload behind each endpoint, the service of each cluster.
//! Values follow Istio's: canonical service and revision from their labels, then `app` and
//! `version`, then the workload's name and `latest`.

use std::collections::BTreeMap;

use weft_xds::proto;

use crate::mesh_config::MeshConfig;
use crate::node::{ProxyKind, ProxyNode};
use crate::registry::{self, Service, workload_name};
use crate::view::ConfigView;

/// Istio's cluster ID when none is configured (`values.global.multiCluster.clusterName`).
pub(crate) const CLUSTER_ID: &str = "Kubernetes";

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// A workload's metadata from its labels, names and service account.
fn workload(
    name: &str,
    instance: &str,
    namespace: &str,
    service_account: &str,
    labels: &BTreeMap<String, String>,
    mesh: &MeshConfig,
) -> proto::WorkloadMetadata {
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
            .cloned()
    };
    proto::WorkloadMetadata {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        trust_domain: mesh.trust_domain.clone(),
        app: label(&["app"]).unwrap_or_default(),
        version: label(&["version"]).unwrap_or_default(),
        canonical_service: label(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
            .unwrap_or_else(|| name.to_owned()),
        canonical_revision: label(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
            .unwrap_or_else(|| "latest".to_owned()),
        cluster_id: CLUSTER_ID.to_owned(),
        instance: instance.to_owned(),
    }
}

/// The proxy's own workload.
pub(crate) fn of_node(node: &ProxyNode, mesh: &MeshConfig) -> proto::WorkloadMetadata {
    workload(
        workload_name(&node.name),
        &node.name,
        &node.namespace,
        &node.service_account,
        &node.labels,
        mesh,
    )
}

/// The workload behind an endpoint; None for one that is no workload (a DNS name).
pub(crate) fn of_endpoint(
    e: &registry::Endpoint,
    mesh: &MeshConfig,
) -> Option<proto::WorkloadMetadata> {
    let w = e.workload.as_ref()?;
    Some(workload(
        &w.name,
        &w.instance,
        &w.namespace,
        &e.service_account,
        &e.labels,
        mesh,
    ))
}

/// A service as `destination_service`, `destination_service_name` and
/// `destination_service_namespace` name it: a Kubernetes Service by its short name, a
/// ServiceEntry by its host.
pub(crate) fn of_service(svc: &Service) -> proto::ServiceMetadata {
    let name = match svc.origin {
        registry::ServiceOrigin::Kubernetes => {
            svc.hostname.split('.').next().unwrap_or(&svc.hostname)
        }
        _ => &svc.hostname,
    };
    proto::ServiceMetadata {
        host: svc.hostname.clone(),
        name: name.to_owned(),
        namespace: svc.namespace.clone(),
    }
}

/// Labels every listener of `node` with its workload and what it reports: a sidecar's
/// inbound listeners report as the destination, for the service their port serves; its
/// outbound listener and a gateway's listeners as the source.
pub(crate) fn label_listeners(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    listeners: &mut [proto::Listener],
) {
    let own = of_node(node, mesh);
    for l in listeners {
        l.workload = Some(own.clone());
        let inbound = node.kind == ProxyKind::Sidecar && l.name.starts_with("inbound|");
        let mut stats = proto::ListenerStats::default();
        if inbound {
            stats.set_reporter(proto::listener_stats::Reporter::Destination);
            stats.service = inbound_port(&l.address)
                .and_then(|port| inbound_service(node, view, port))
                .map(of_service);
        }
        l.stats = Some(stats);
    }
}

fn inbound_port(address: &str) -> Option<u32> {
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| u32::from(a.port()))
}

/// The service a workload port serves: the first service with an endpoint on this proxy's
/// address whose target is `port` (Istio reports one service per inbound request, too).
fn inbound_service<'v>(node: &ProxyNode, view: &'v ConfigView, port: u32) -> Option<&'v Service> {
    view.endpoints_at(&node.ip.to_string())
        .find(|(_, e)| e.ports.values().any(|p| *p == port))
        .map(|(svc, _)| svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_fall_back_as_istio_does() {
        let mesh = MeshConfig::default();
        let labels = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let m = workload(
            "reviews-v2",
            "reviews-v2-0",
            "default",
            "bookinfo-reviews",
            &labels(&[("app", "reviews"), ("version", "v2")]),
            &mesh,
        );
        assert_eq!((m.app.as_str(), m.version.as_str()), ("reviews", "v2"));
        assert_eq!(m.canonical_service, "reviews");
        assert_eq!(m.canonical_revision, "v2");
        assert_eq!(m.cluster_id, "Kubernetes");
        let m = workload(
            "db",
            "db-0",
            "data",
            "default",
            &labels(&[(CANONICAL_NAME, "database"), ("app", "db")]),
            &mesh,
        );
        assert_eq!(m.canonical_service, "database");
        assert_eq!(m.canonical_revision, "latest");
        let m = workload(
            "plain",
            "plain-0",
            "default",
            "default",
            &BTreeMap::new(),
            &mesh,
        );
        assert_eq!(
            (m.app.as_str(), m.canonical_service.as_str()),
            ("", "plain")
        );
    }
}
