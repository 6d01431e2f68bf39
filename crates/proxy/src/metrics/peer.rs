//! Who a request's peers are. A client sidecar knows its destination from the endpoint the
//! control plane described; a server sidecar learns its source from the metadata the client
//! sidecar sends (Istio's `x-envoy-peer-metadata`, a base64 protobuf `Struct` with Istio's
//! node metadata keys), which it believes only as far as the connection's verified mTLS
//! identity vouches for it: same namespace and service account, or nothing but the identity.
//! Gateways drop every `x-envoy-*` header of outside clients, these included.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use weft_xds::envoy::{Struct, Value, ValueKind as Kind};
use weft_xds::proto;

use super::labels::{self, Service, ServiceRef, Workload, WorkloadRef};
use super::{Edge, Reporter, Security};
use crate::config::NodeInfo;

pub static PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
pub static PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// A known workload, with and without its principal: the principal is reported only when the
/// connection's mTLS verified it.
#[derive(Debug, Clone)]
pub struct Known {
    plain: WorkloadRef,
    verified: WorkloadRef,
}

impl Known {
    pub fn of(m: &proto::WorkloadMetadata) -> Known {
        Known {
            plain: labels::workload(Workload::of(m, false)),
            verified: labels::workload(Workload::of(m, true)),
        }
    }

    pub fn get(&self, mtls: bool) -> WorkloadRef {
        if mtls {
            self.verified.clone()
        } else {
            self.plain.clone()
        }
    }
}

/// What a listener reports, built with its config.
#[derive(Debug)]
pub struct Reporting {
    pub reporter: Reporter,
    pub disabled: bool,
    /// The proxy's own workload.
    pub own: Known,
    /// Its service account's identity, to check a peer's metadata against.
    own_metadata: proto::WorkloadMetadata,
    /// Inbound: the service the port serves.
    pub service: ServiceRef,
    /// What a client-side listener sends its mesh peers (the two headers).
    pub offer: Option<(HeaderValue, HeaderValue)>,
}

impl Reporting {
    pub fn build(l: &proto::Listener, node: &NodeInfo) -> Reporting {
        let own_metadata = l.workload.clone().unwrap_or_else(|| from_node(node));
        let stats = l.stats.clone().unwrap_or_default();
        let reporter = match stats.reporter() {
            proto::listener_stats::Reporter::Source => Reporter::Source,
            proto::listener_stats::Reporter::Destination => Reporter::Destination,
        };
        let service = stats
            .service
            .as_ref()
            .map_or_else(labels::unknown_service, |s| labels::service(Service::of(s)));
        let offer = (reporter == Reporter::Source)
            .then(|| encode(&own_metadata))
            .flatten()
            .zip(HeaderValue::from_str(&node.id).ok());
        Reporting {
            reporter,
            disabled: stats.disabled,
            own: Known::of(&own_metadata),
            own_metadata,
            service,
            offer,
        }
    }

    /// The edge of a request this client-side listener sent to `dest`.
    pub fn source_edge(&self, dest: &Destination) -> Edge {
        Edge {
            reporter: Reporter::Source,
            source: self.own.get(dest.mtls),
            destination: dest
                .workload
                .as_ref()
                .map_or_else(labels::unknown_workload, |w| w.get(dest.mtls)),
            service: dest.service.clone(),
            security: Security::Unknown,
        }
    }

    /// The edge of a request this server-side listener received from `source`.
    pub fn destination_edge(&self, source: WorkloadRef, mtls: bool) -> Edge {
        Edge {
            reporter: Reporter::Destination,
            source,
            destination: self.own.get(mtls),
            service: self.service.clone(),
            security: if mtls {
                Security::MutualTls
            } else {
                Security::None
            },
        }
    }

    /// The source of a request on a connection whose verified identity is `identity`
    /// (`cluster.local/ns/NS/sa/SA`), from the peer metadata `headers` carry when the
    /// identity vouches for it. The headers are removed: the application never sees them.
    pub fn source(&self, identity: Option<&str>, headers: &mut HeaderMap) -> WorkloadRef {
        let sent = headers.remove(&PEER_METADATA);
        headers.remove(&PEER_METADATA_ID);
        let Some(identity) = identity else {
            return labels::unknown_workload();
        };
        let vouched = sent.as_ref().and_then(decode).filter(|m| {
            format!("{}/ns/{}/sa/{}", domain(m), m.namespace, m.service_account) == identity
        });
        match vouched {
            Some(m) => labels::workload(Workload::of(&m, true)),
            None => labels::workload(Workload::of_principal(identity)),
        }
    }

    /// Adds this proxy's metadata to a request for a mesh destination.
    pub fn offer(&self, headers: &mut HeaderMap) {
        if let Some((metadata, id)) = &self.offer {
            headers.insert(PEER_METADATA.clone(), metadata.clone());
            headers.insert(PEER_METADATA_ID.clone(), id.clone());
        }
    }

    pub fn own_metadata(&self) -> &proto::WorkloadMetadata {
        &self.own_metadata
    }
}

fn domain(m: &proto::WorkloadMetadata) -> &str {
    if m.trust_domain.is_empty() {
        "cluster.local"
    } else {
        &m.trust_domain
    }
}

/// What a cluster's requests report of their destination.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    pub service: ServiceRef,
    /// The cluster speaks mesh mTLS (to endpoints not marked plaintext).
    pub mesh_tls: bool,
}

impl ClusterReport {
    pub fn build(c: &proto::Cluster) -> ClusterReport {
        let service = match &c.service {
            Some(s) => labels::service(Service::of(s)),
            // Istio's PassthroughCluster and BlackHoleCluster name themselves.
            None => labels::service(Service {
                name: c.name.as_str().into(),
                ..Service::default()
            }),
        };
        ClusterReport {
            service,
            mesh_tls: c.tls.as_ref().is_some_and(|t| t.mesh),
        }
    }
}

/// Where a client-side request went: the service, and the endpoint's workload when known.
#[derive(Debug, Clone)]
pub struct Destination {
    pub service: ServiceRef,
    pub workload: Option<Known>,
    pub mtls: bool,
}

/// A workload from the bootstrap's node, for a listener the control plane did not describe
/// (a static config): the pod name and namespace of an Istio node id, `app`/`version` labels.
fn from_node(node: &NodeInfo) -> proto::WorkloadMetadata {
    let name_ns = node.id.split('~').nth(2).unwrap_or_default();
    let (pod, namespace) = match name_ns.rsplit_once('.') {
        Some((pod, ns)) if !ns.is_empty() => (pod, ns),
        _ => (name_ns, node.namespace.as_str()),
    };
    let label = |k: &str| node.labels.get(k).cloned().unwrap_or_default();
    let name = workload_name(pod);
    proto::WorkloadMetadata {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        app: label("app"),
        version: label("version"),
        canonical_service: node
            .labels
            .get("service.istio.io/canonical-name")
            .or(node.labels.get("app"))
            .cloned()
            .unwrap_or_else(|| name.to_owned()),
        canonical_revision: node
            .labels
            .get("service.istio.io/canonical-revision")
            .or(node.labels.get("version"))
            .cloned()
            .unwrap_or_else(|| "latest".to_owned()),
        instance: pod.to_owned(),
        ..Default::default()
    }
}

/// A pod's workload: its name less a replica suffix (`-0`).
fn workload_name(pod: &str) -> &str {
    match pod.rsplit_once('-') {
        Some((w, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => w,
        _ => pod,
    }
}

const NAME: &str = "NAME";
const NAMESPACE: &str = "NAMESPACE";
const WORKLOAD_NAME: &str = "WORKLOAD_NAME";
const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
const CLUSTER_ID: &str = "CLUSTER_ID";
const LABELS: &str = "LABELS";
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// Istio's peer metadata: base64 of a protobuf `Struct` with its node metadata keys.
pub fn encode(m: &proto::WorkloadMetadata) -> Option<HeaderValue> {
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("app", &m.app),
        ("version", &m.version),
        (CANONICAL_NAME, &m.canonical_service),
        (CANONICAL_REVISION, &m.canonical_revision),
    ] {
        if !v.is_empty() {
            labels.insert(k.to_owned(), string(v));
        }
    }
    let mut fields = BTreeMap::new();
    for (k, v) in [
        (NAME, &m.instance),
        (NAMESPACE, &m.namespace),
        (WORKLOAD_NAME, &m.name),
        (SERVICE_ACCOUNT, &m.service_account),
        (CLUSTER_ID, &m.cluster_id),
    ] {
        fields.insert(k.to_owned(), string(v));
    }
    fields.insert(
        LABELS.to_owned(),
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: labels.into_iter().collect(),
            })),
        },
    );
    let bytes = Struct {
        fields: fields.into_iter().collect(),
    }
    .encode_to_vec();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(bytes)).ok()
}

/// Reads peer metadata; None for anything malformed (it is then not believed at all).
pub fn decode(v: &HeaderValue) -> Option<proto::WorkloadMetadata> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_bytes())
        .ok()?;
    let s = Struct::decode(bytes.as_slice()).ok()?;
    let text = |fields: &std::collections::HashMap<String, Value>, k: &str| match fields
        .get(k)
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => String::new(),
    };
    let labels = match s.fields.get(LABELS).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l.fields.clone(),
        _ => Default::default(),
    };
    let name = text(&s.fields, WORKLOAD_NAME);
    let or = |v: String, d: &str| if v.is_empty() { d.to_owned() } else { v };
    Some(proto::WorkloadMetadata {
        canonical_service: or(
            text(&labels, CANONICAL_NAME),
            &or(text(&labels, "app"), &name),
        ),
        canonical_revision: or(
            text(&labels, CANONICAL_REVISION),
            &or(text(&labels, "version"), "latest"),
        ),
        app: text(&labels, "app"),
        version: text(&labels, "version"),
        instance: text(&s.fields, NAME),
        namespace: text(&s.fields, NAMESPACE),
        service_account: text(&s.fields, SERVICE_ACCOUNT),
        cluster_id: text(&s.fields, CLUSTER_ID),
        name,
        trust_domain: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn productpage() -> proto::WorkloadMetadata {
        proto::WorkloadMetadata {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            service_account: "bookinfo-productpage".into(),
            app: "productpage".into(),
            version: "v1".into(),
            canonical_service: "productpage".into(),
            canonical_revision: "v1".into(),
            cluster_id: "Kubernetes".into(),
            instance: "productpage-v1-0".into(),
            ..Default::default()
        }
    }

    fn inbound() -> Reporting {
        let listener = proto::Listener {
            workload: Some(proto::WorkloadMetadata {
                name: "reviews-v1".into(),
                namespace: "default".into(),
                service_account: "bookinfo-reviews".into(),
                ..Default::default()
            }),
            stats: Some(proto::ListenerStats {
                reporter: proto::listener_stats::Reporter::Destination as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        Reporting::build(&listener, &NodeInfo::default())
    }

    #[test]
    fn metadata_round_trips_through_the_header() {
        let v = encode(&productpage()).expect("a header value");
        assert_eq!(decode(&v), Some(productpage()));
        assert_eq!(decode(&HeaderValue::from_static("not base64!")), None);
        assert_eq!(decode(&HeaderValue::from_static("AAAA")), None);
    }

    #[test]
    fn a_source_is_believed_only_as_far_as_its_identity_vouches() {
        let r = inbound();
        let header = encode(&productpage()).expect("a header value");
        let with = |v: &HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert(PEER_METADATA.clone(), v.clone());
            h
        };
        // Vouched for by its certificate: everything it says.
        let mut h = with(&header);
        let w = r.source(
            Some("cluster.local/ns/default/sa/bookinfo-productpage"),
            &mut h,
        );
        assert_eq!(&*w.name, "productpage-v1");
        assert_eq!(
            &*w.principal,
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert!(h.is_empty(), "the application never sees the metadata");
        // Another identity: only what the certificate says.
        let w = r.source(
            Some("cluster.local/ns/other/sa/attacker"),
            &mut with(&header),
        );
        assert_eq!((&*w.name, &*w.namespace), ("", "other"));
        // No mTLS: nothing at all.
        let w = r.source(None, &mut with(&header));
        assert_eq!(w, labels::unknown_workload());
    }
}
