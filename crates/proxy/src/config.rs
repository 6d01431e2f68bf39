//! Turning wire config into runtime config, and what a rejection says.

use std::collections::BTreeMap;
use std::fmt;

use weft_xds::proto;

/// Why a piece of config was rejected: which resource, which field, and why. Travels back to
/// the control plane in a NACK, or to the operator's terminal for a static file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `cluster "outbound|9080||reviews.default.svc.cluster.local"`, `listener "outbound"`, ...
    pub resource: String,
    /// Field path inside the resource, proto JSON names: `virtualHosts[0].routes[2].matches[0].uri.regex`.
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        resource: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            resource: resource.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.resource, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.resource, self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Who this proxy is, with Kubernetes defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Namespace for resolving short names (`reviews` -> `reviews.<namespace>.svc.<domain>`).
    pub namespace: String,
    pub cluster_domain: String,
    pub labels: BTreeMap<String, String>,
    /// A gateway (Istio's node id `router~IP~...`) rather than a sidecar (`sidecar~...`) or a
    /// proxy of a static config: its callers are outside the mesh, so its local replies carry
    /// their cause and not the detail behind it (addresses, socket errors, TLS reasons).
    pub gateway: bool,
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            gateway: false,
            id: String::new(),
            namespace: "default".into(),
            cluster_domain: "cluster.local".into(),
            labels: BTreeMap::new(),
        }
    }
}

impl From<Option<&proto::Node>> for NodeInfo {
    fn from(node: Option<&proto::Node>) -> Self {
        let mut info = NodeInfo::default();
        if let Some(n) = node {
            info.id = n.id.clone();
            info.gateway = n.id.starts_with("router~");
            if !n.namespace.is_empty() {
                info.namespace = n.namespace.clone();
            }
            if !n.cluster_domain.is_empty() {
                info.cluster_domain = n.cluster_domain.clone();
            }
            info.labels = n.labels.clone().into_iter().collect();
        }
        info
    }
}

/// A protobuf Duration as a std one; negative or out-of-range values are errors.
pub fn duration(
    d: &weft_xds::proto_types::Duration,
    resource: &str,
    field: &str,
) -> Result<std::time::Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ConfigError::new(
            resource,
            field,
            format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        ));
    }
    // Both checked non-negative above.
    Ok(std::time::Duration::new(d.seconds as u64, d.nanos as u32))
}
