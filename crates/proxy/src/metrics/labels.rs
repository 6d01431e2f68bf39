//! The label values of Istio's standard metrics: workloads (`source_*`, `destination_*`) and
//! services (`destination_service*`), interned so that a request's label set is a few
//! pointers, compared and hashed without touching the strings.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use weft_xds::proto;

/// What Istio writes where a value is not known.
pub const UNKNOWN: &str = "unknown";

/// A workload as the metrics label it. Empty parts are written "unknown".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    pub name: Box<str>,
    pub namespace: Box<str>,
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, when the identity was verified.
    pub principal: Box<str>,
    pub app: Box<str>,
    pub version: Box<str>,
    pub canonical_service: Box<str>,
    pub canonical_revision: Box<str>,
    pub cluster: Box<str>,
}

impl Workload {
    /// The workload `m` describes; its principal only when `verified` (the identity was
    /// checked on the connection: a metric never claims an identity nobody proved).
    pub fn of(m: &proto::WorkloadMetadata, verified: bool) -> Workload {
        Workload {
            name: m.name.as_str().into(),
            namespace: m.namespace.as_str().into(),
            principal: if verified {
                principal(m).into()
            } else {
                "".into()
            },
            app: m.app.as_str().into(),
            version: m.version.as_str().into(),
            canonical_service: m.canonical_service.as_str().into(),
            canonical_revision: m.canonical_revision.as_str().into(),
            cluster: m.cluster_id.as_str().into(),
        }
    }

    /// Known only by a verified principal (`cluster.local/ns/NS/sa/SA`, as peers' certificates
    /// give it): its namespace and principal, nothing else.
    pub fn of_principal(principal: &str) -> Workload {
        let namespace = principal
            .split_once("/ns/")
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or_default();
        Workload {
            namespace: namespace.into(),
            principal: format!("spiffe://{principal}").into(),
            ..Workload::default()
        }
    }
}

/// The SPIFFE principal of a workload's service account; empty without one.
pub fn principal(m: &proto::WorkloadMetadata) -> String {
    if m.service_account.is_empty() || m.namespace.is_empty() {
        return String::new();
    }
    let domain = if m.trust_domain.is_empty() {
        "cluster.local"
    } else {
        &m.trust_domain
    };
    format!(
        "spiffe://{domain}/ns/{}/sa/{}",
        m.namespace, m.service_account
    )
}

/// A service as `destination_service`, `_name` and `_namespace` label it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Service {
    pub host: Box<str>,
    pub name: Box<str>,
    pub namespace: Box<str>,
}

impl Service {
    pub fn of(m: &proto::ServiceMetadata) -> Service {
        Service {
            host: m.host.as_str().into(),
            name: m.name.as_str().into(),
            namespace: m.namespace.as_str().into(),
        }
    }
}

/// An interned value: equal values are one allocation, so equality and hashing go by
/// address. Made only by [`intern`].
#[derive(Debug, Clone)]
pub struct Interned<T>(Arc<T>);

impl<T> std::ops::Deref for Interned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> PartialEq for Interned<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for Interned<T> {}

impl<T> Hash for Interned<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

pub type WorkloadRef = Interned<Workload>;
pub type ServiceRef = Interned<Service>;

/// Every value interned, for the life of the process. What a metric's series holds stays
/// here (an entry is dropped only when nothing else holds it: see [`prune`]), so a value
/// interned again is the same allocation the series has, never a second series with equal
/// labels.
struct Interner<T> {
    set: Mutex<HashSet<Arc<T>>>,
}

impl<T: Eq + Hash> Interner<T> {
    fn new() -> Self {
        Interner {
            set: Mutex::new(HashSet::new()),
        }
    }

    fn intern(&self, value: T) -> Interned<T> {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(have) = set.get(&value) {
            return Interned(Arc::clone(have));
        }
        let new = Arc::new(value);
        set.insert(Arc::clone(&new));
        Interned(new)
    }

    fn prune(&self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.retain(|v| Arc::strong_count(v) > 1);
    }
}

static WORKLOADS: LazyLock<Interner<Workload>> = LazyLock::new(Interner::new);
static SERVICES: LazyLock<Interner<Service>> = LazyLock::new(Interner::new);

pub fn workload(w: Workload) -> WorkloadRef {
    WORKLOADS.intern(w)
}

pub fn service(s: Service) -> ServiceRef {
    SERVICES.intern(s)
}

/// The unknown workload and service (every label "unknown").
pub fn unknown_workload() -> WorkloadRef {
    static U: LazyLock<WorkloadRef> = LazyLock::new(|| workload(Workload::default()));
    U.clone()
}

pub fn unknown_service() -> ServiceRef {
    static U: LazyLock<ServiceRef> = LazyLock::new(|| service(Service::default()));
    U.clone()
}

/// Forgets values only the interner holds (no config, connection or series uses them).
pub fn prune() {
    WORKLOADS.prune();
    SERVICES.prune();
}

/// A label value: "unknown" for an empty one.
pub fn value(s: &str) -> &str {
    if s.is_empty() { UNKNOWN } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_intern_to_one_and_unused_ones_are_forgotten() {
        let w = |name: &str| Workload {
            name: name.into(),
            namespace: "default".into(),
            ..Workload::default()
        };
        let a = workload(w("interned-a"));
        let b = workload(w("interned-a"));
        assert_eq!(a, b);
        assert_ne!(a, workload(w("interned-b")));
        let addr = Arc::as_ptr(&a.0);
        drop(b);
        prune();
        // Still held by `a`: the same allocation comes back.
        assert_eq!(Arc::as_ptr(&workload(w("interned-a")).0), addr);
    }

    #[test]
    fn a_principal_alone_gives_the_namespace() {
        let w = Workload::of_principal("cluster.local/ns/bookinfo/sa/reviews");
        assert_eq!(&*w.namespace, "bookinfo");
        assert_eq!(
            &*w.principal,
            "spiffe://cluster.local/ns/bookinfo/sa/reviews"
        );
        assert_eq!(value(&w.name), UNKNOWN);
    }
}
