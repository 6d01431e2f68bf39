//! What the xDS transport carries: weft's proxy config messages packed as
//! `google.protobuf.Any`, with their type URLs and content-hash versions.
//!
//! The transport itself is generic over type URLs; this module names the three that weft
//! serves and is the one place a typed message becomes an `Any` and back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::proto;

/// Type URL of a [`proto::Listener`].
pub const LISTENER_TYPE_URL: &str = "type.googleapis.com/weft.config.v1.Listener";
/// Type URL of a [`proto::RouteConfiguration`].
pub const ROUTE_CONFIGURATION_TYPE_URL: &str =
    "type.googleapis.com/weft.config.v1.RouteConfiguration";
/// Type URL of a [`proto::Cluster`].
pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/weft.config.v1.Cluster";
/// Type URL of a [`proto::Secret`].
pub const SECRET_TYPE_URL: &str = "type.googleapis.com/weft.config.v1.Secret";

/// The type URLs a weft proxy subscribes to, in the order a server sends them: what a
/// resource refers to comes before what refers to it (secrets, clusters, then route
/// configurations, then listeners), so a proxy never sees a dangling name it could have
/// been given first.
pub const WEFT_TYPE_URLS: [&str; 4] = [
    SECRET_TYPE_URL,
    CLUSTER_TYPE_URL,
    ROUTE_CONFIGURATION_TYPE_URL,
    LISTENER_TYPE_URL,
];

/// A message that travels over xDS as a named resource. `Serialize` (the proto3 JSON
/// mapping) gives it a canonical form to version by content.
pub trait XdsResource: Message + Default + serde::Serialize + Sized {
    /// The `Any` type URL (`type.googleapis.com/<full message name>`).
    const TYPE_URL: &'static str;
    /// The resource name, unique within its type URL.
    fn resource_name(&self) -> &str;
}

impl XdsResource for proto::Listener {
    const TYPE_URL: &'static str = LISTENER_TYPE_URL;
    fn resource_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for proto::RouteConfiguration {
    const TYPE_URL: &'static str = ROUTE_CONFIGURATION_TYPE_URL;
    fn resource_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for proto::Cluster {
    const TYPE_URL: &'static str = CLUSTER_TYPE_URL;
    fn resource_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for proto::Secret {
    const TYPE_URL: &'static str = SECRET_TYPE_URL;
    fn resource_name(&self) -> &str {
        &self.name
    }
}

/// What a config dump shows of a private key.
pub const REDACTED: &str = "[redacted]";

/// `bootstrap` as a config dump may show it: every secret's private key replaced by
/// [`REDACTED`] (as Envoy's `/config_dump` does). Certificates and CAs are public and stay.
pub fn redacted(bootstrap: &proto::Bootstrap) -> proto::Bootstrap {
    let mut out = bootstrap.clone();
    for s in &mut out.secrets {
        if let Some(proto::secret::Type::TlsCertificate(c)) = &mut s.r#type
            && !c.private_key.is_empty()
        {
            c.private_key = REDACTED.to_owned();
        }
    }
    out
}

/// Why an `Any` could not be turned back into a typed message.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("expected a resource of type {expected}, got {got:?}")]
    WrongType { expected: &'static str, got: String },
    #[error("resource of type {type_url} does not decode: {source}")]
    Decode {
        type_url: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

/// Packs a typed message as an `Any` with its weft type URL.
pub fn pack<R: XdsResource>(resource: &R) -> Any {
    Any {
        type_url: R::TYPE_URL.to_owned(),
        value: resource.encode_to_vec(),
    }
}

/// Unpacks an `Any` into `R`, checking the type URL first.
pub fn unpack<R: XdsResource>(any: &Any) -> Result<R, UnpackError> {
    if any.type_url != R::TYPE_URL {
        return Err(UnpackError::WrongType {
            expected: R::TYPE_URL,
            got: any.type_url.clone(),
        });
    }
    R::decode(any.value.as_slice()).map_err(|source| UnpackError::Decode {
        type_url: R::TYPE_URL,
        source,
    })
}

/// The version of a typed resource: a hash of its content, as 16 hex digits.
///
/// Equal messages get equal versions, in every control plane replica and across restarts,
/// so a proxy that reconnects with `initial_resource_versions` is sent only what changed.
/// The hash is taken over the message's JSON form with object keys sorted, not over its
/// protobuf bytes: prost encodes map fields (labels, header matches) in `HashMap` order,
/// so two equal messages built separately may encode differently.
pub fn resource_version<R: XdsResource>(resource: &R) -> String {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.update(R::TYPE_URL.as_bytes());
    h.update(&[0]);
    match serde_json::to_value(resource) {
        Ok(json) => hash_json(&mut h, &json),
        // Not expected from generated code; the bytes are still a sound (if
        // order-sensitive) version.
        Err(_) => h.update(&resource.encode_to_vec()),
    }
    hex(h.digest())
}

/// The version of a packed resource of a type this crate does not know: a hash of its
/// type URL and bytes (sound, but see [`resource_version`] about map order).
pub fn content_version(any: &Any) -> String {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.update(any.type_url.as_bytes());
    h.update(&[0]);
    h.update(&any.value);
    hex(h.digest())
}

/// Hashes JSON with a tag per kind and length-prefixed strings, objects in key order
/// whatever order the map iterates in.
fn hash_json(h: &mut xxhash_rust::xxh64::Xxh64, v: &serde_json::Value) {
    use serde_json::Value;
    fn bytes(h: &mut xxhash_rust::xxh64::Xxh64, b: &[u8]) {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            bytes(h, n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            bytes(h, s.as_bytes());
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_json(h, item);
            }
        }
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            h.update(b"{");
            h.update(&(keys.len() as u64).to_le_bytes());
            for k in keys {
                bytes(h, k.as_bytes());
                if let Some(v) = fields.get(k) {
                    hash_json(h, v);
                }
            }
        }
    }
}

fn hex(n: u64) -> String {
    let mut s = String::with_capacity(16);
    // Writing to a String cannot fail.
    let _ = write!(s, "{n:016x}");
    s
}

/// One resource as the server holds it: its content version and the packed message.
#[derive(Debug, Clone)]
pub struct VersionedResource {
    pub version: String,
    pub resource: Any,
}

/// Equal when the versions (content hashes) are: the packed bytes of two equal messages can
/// differ, since prost writes map fields in hash order.
impl PartialEq for VersionedResource {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.resource.type_url == other.resource.type_url
    }
}

/// Resources of one type URL by name. Shared between proxies behind an `Arc`
/// ([`ProxyResources::share`]): a thousand sidecars with the same outbound clusters hold one
/// copy of them, names included.
pub type ResourceMap = BTreeMap<Arc<str>, VersionedResource>;

/// Everything one proxy should have: type URL -> resource name -> resource.
///
/// The control plane builds one per proxy and publishes it in a `watch` channel; each xDS
/// stream diffs successive values against what its client has and sends only the
/// difference. Type URLs with no resources may be left out: a subscriber to them sees an
/// empty set.
///
/// Each type's resources are the proxy's own (inserted one by one) and any number of shared
/// [`ResourceMap`]s. A name is looked up in the own resources first, then in the shared sets
/// in the order they were added; a name found in an earlier place hides the same name later.
#[derive(Debug, Clone, Default)]
pub struct ProxyResources {
    types: BTreeMap<String, Layers>,
    /// When the config change this snapshot was computed for was seen (not part of
    /// equality): the start of `pilot_proxy_convergence_time`. None for a snapshot not caused
    /// by a change (a proxy's first config).
    changed_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Layers {
    own: Arc<ResourceMap>,
    shared: Vec<Arc<ResourceMap>>,
}

impl Layers {
    pub(crate) fn own(&self) -> &ResourceMap {
        &self.own
    }

    pub(crate) fn shared(&self) -> &[Arc<ResourceMap>] {
        &self.shared
    }

    /// Whether `self` and `other` hold the same shared sets (the same `Arc`s) and equal own
    /// resources: then they are equal, found without looking at the shared sets' content.
    /// False says nothing.
    pub(crate) fn same_sets(&self, other: &Layers) -> bool {
        self.shared.len() == other.shared.len()
            && self
                .shared
                .iter()
                .zip(&other.shared)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && (Arc::ptr_eq(&self.own, &other.own) || self.own == other.own)
    }

    fn get(&self, name: &str) -> Option<&VersionedResource> {
        self.own
            .get(name)
            .or_else(|| self.shared.iter().find_map(|m| m.get(name)))
    }

    /// Every visible resource once: own first, then each shared set's names not hidden by
    /// an earlier place.
    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &VersionedResource)> {
        let own = self.own.iter();
        let shared = self.shared.iter().enumerate().flat_map(move |(i, m)| {
            m.iter().filter(move |(name, _)| {
                !self.own.contains_key(&***name)
                    && !self.shared[..i].iter().any(|e| e.contains_key(&***name))
            })
        });
        own.chain(shared)
    }

    fn is_empty(&self) -> bool {
        self.own.is_empty() && self.shared.iter().all(|m| m.is_empty())
    }
}

/// Two sets are equal when they hold the same names at the same versions, however they are
/// split between own and shared resources.
impl PartialEq for ProxyResources {
    fn eq(&self, other: &Self) -> bool {
        let types: std::collections::BTreeSet<&str> =
            self.type_urls().chain(other.type_urls()).collect();
        types.into_iter().all(|t| {
            if let (Some(a), Some(b)) = (self.types.get(t), other.types.get(t))
                && a.same_sets(b)
            {
                return true;
            }
            self.len(t) == other.len(t)
                && self
                    .iter(t)
                    .all(|(name, r)| other.get(t, name).is_some_and(|o| o == r))
        })
    }
}

impl ProxyResources {
    pub fn new() -> Self {
        Self::default()
    }

    /// When the config change this snapshot comes from was seen.
    pub fn changed_at(&self) -> Option<std::time::Instant> {
        self.changed_at
    }

    /// Records when the config change this snapshot comes from was seen.
    pub fn set_changed_at(&mut self, at: std::time::Instant) {
        self.changed_at = Some(at);
    }

    /// Adds (or replaces) a typed resource under its own name, versioned by
    /// [`resource_version`].
    pub fn insert<R: XdsResource>(&mut self, resource: &R) {
        let (name, versioned) = versioned(resource);
        self.insert_versioned(name, versioned);
    }

    /// Adds (or replaces) an already packed resource under `name`; the version is its
    /// [`content_version`].
    pub fn insert_any(&mut self, name: String, resource: Any) {
        let version = content_version(&resource);
        self.insert_versioned(name, VersionedResource { version, resource });
    }

    /// Adds (or replaces) a resource with a version the caller computed (a control plane
    /// that caches versions of resources shared by many proxies, say).
    pub fn insert_versioned(&mut self, name: impl Into<Arc<str>>, resource: VersionedResource) {
        let layers = self
            .types
            .entry(resource.resource.type_url.clone())
            .or_default();
        Arc::make_mut(&mut layers.own).insert(name.into(), resource);
    }

    /// Adds a set of resources of `type_url` shared with other proxies. Its names should
    /// not be among this proxy's own or earlier shared ones; those that are stay hidden.
    pub fn share(&mut self, type_url: &str, resources: Arc<ResourceMap>) {
        if !resources.is_empty() {
            self.types
                .entry(type_url.to_owned())
                .or_default()
                .shared
                .push(resources);
        }
    }

    /// Removes one of the proxy's own resources; returns it if it was there. Shared sets
    /// are not changed.
    pub fn remove(&mut self, type_url: &str, name: &str) -> Option<VersionedResource> {
        let layers = self.types.get_mut(type_url)?;
        let removed = Arc::make_mut(&mut layers.own).remove(name);
        if layers.is_empty() {
            self.types.remove(type_url);
        }
        removed
    }

    /// Whether every type holds the same shared sets and equal own resources as in
    /// `other`: a cheap check that never says equal wrongly, but may say different for
    /// equal content held in different sets.
    pub fn same_sets(&self, other: &ProxyResources) -> bool {
        let types: std::collections::BTreeSet<&str> =
            self.type_urls().chain(other.type_urls()).collect();
        types
            .into_iter()
            .all(|t| match (self.types.get(t), other.types.get(t)) {
                (Some(a), Some(b)) => a.same_sets(b),
                _ => false,
            })
    }

    /// The sets holding one type's resources, for [`Layers::same_sets`].
    pub(crate) fn layers(&self, type_url: &str) -> Option<&Layers> {
        self.types.get(type_url)
    }

    /// The resources of one type URL (none when there are none), each name once.
    pub fn iter(&self, type_url: &str) -> impl Iterator<Item = (&Arc<str>, &VersionedResource)> {
        self.types.get(type_url).into_iter().flat_map(Layers::iter)
    }

    /// How many resources of `type_url` there are.
    pub fn len(&self, type_url: &str) -> usize {
        self.iter(type_url).count()
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&VersionedResource> {
        self.types.get(type_url)?.get(name)
    }

    /// The type URLs that have at least one resource.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(t, _)| t.as_str())
    }

    /// The version of a whole type: a hash of the (name, version) pairs, whatever order they
    /// are held in. This is the `system_version_info` of responses and what `proxy-status`
    /// compares: a proxy is in sync for a type when it has ACKed this version.
    pub fn type_version(&self, type_url: &str) -> String {
        let mut sum = 0u64;
        let mut count = 0u64;
        for (name, r) in self.iter(type_url) {
            let mut h = xxhash_rust::xxh64::Xxh64::new(0);
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(r.version.as_bytes());
            sum = sum.wrapping_add(h.digest());
            count += 1;
        }
        hex(sum ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// A typed resource's name and its packed, versioned form: what a shared [`ResourceMap`]
/// holds.
pub fn versioned<R: XdsResource>(resource: &R) -> (Arc<str>, VersionedResource) {
    (
        Arc::from(resource.resource_name()),
        VersionedResource {
            version: resource_version(resource),
            resource: pack(resource),
        },
    )
}

/// A version as a number, for bookkeeping of what thousands of clients hold: the 16 hex
/// digits of a version this module made are read back exactly; any other string (a client
/// may claim anything in `initial_resource_versions`) is stood for by its hash.
pub fn compact_version(version: &str) -> u64 {
    if version.len() == 16
        && let Ok(n) = u64::from_str_radix(version, 16)
    {
        return n;
    }
    xxhash_rust::xxh64::xxh64(version.as_bytes(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_round_trip() {
        let c = proto::Cluster {
            name: "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let any = pack(&c);
        assert_eq!(any.type_url, CLUSTER_TYPE_URL);
        let back: proto::Cluster = unpack(&any).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unpack_checks_type_and_bytes() {
        let any = pack(&proto::Listener::default());
        let err = unpack::<proto::Cluster>(&any).unwrap_err();
        assert!(err.to_string().contains("weft.config.v1.Listener"), "{err}");

        let garbage = Any {
            type_url: CLUSTER_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let err = unpack::<proto::Cluster>(&garbage).unwrap_err();
        assert!(matches!(err, UnpackError::Decode { .. }), "{err}");
    }

    #[test]
    fn type_urls_name_the_generated_messages() {
        // The type URL must be the message's full protobuf name, or a generic client
        // (grpcurl, a config dump) cannot decode it. Check against the compiled protos.
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
        let set = pbjson_types::FileDescriptorSet::decode(bytes.as_slice()).unwrap();
        let mut names = Vec::new();
        for file in &set.file {
            for m in &file.message_type {
                names.push(format!(
                    "type.googleapis.com/{}.{}",
                    file.package(),
                    m.name()
                ));
            }
        }
        for url in WEFT_TYPE_URLS {
            assert!(names.iter().any(|n| n == url), "{url} not in {names:?}");
        }
    }

    #[test]
    fn config_dumps_show_no_private_key() {
        let b = proto::Bootstrap {
            secrets: vec![proto::Secret {
                name: "kubernetes://istio-system/c".into(),
                r#type: Some(proto::secret::Type::TlsCertificate(proto::TlsCertificate {
                    certificate_chain: "CERT".into(),
                    private_key: "KEY".into(),
                })),
            }],
            ..Default::default()
        };
        let json = serde_json::to_string(&redacted(&b)).unwrap();
        assert!(!json.contains("KEY") && json.contains("CERT") && json.contains(REDACTED));
    }

    #[test]
    fn equal_messages_have_equal_versions_whatever_their_map_order() {
        // Two HashMaps with the same entries, inserted in opposite orders, with different
        // random seeds: their iteration (and prost encoding) order differs with high odds.
        let labels = |rev: bool| {
            let mut keys: Vec<usize> = (0..64).collect();
            if rev {
                keys.reverse();
            }
            keys.into_iter()
                .map(|i| (format!("k{i}"), format!("v{i}")))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let cluster = |rev: bool| proto::Cluster {
            name: "c".into(),
            endpoints: vec![proto::Endpoint {
                address: "127.0.0.1:80".into(),
                labels: labels(rev),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (a, b) = (cluster(false), cluster(true));
        assert_eq!(a, b);
        assert_eq!(resource_version(&a), resource_version(&b));
        let mut c = cluster(false);
        if let Some(v) = c.endpoints[0].labels.get_mut("k3") {
            v.push('x');
        }
        assert_ne!(resource_version(&a), resource_version(&c));
        // The same content under another type is another version.
        let l = proto::Listener {
            name: "c".into(),
            ..Default::default()
        };
        let r = proto::RouteConfiguration {
            name: "c".into(),
            ..Default::default()
        };
        assert_ne!(resource_version(&l), resource_version(&r));
    }

    #[test]
    fn versions_follow_content() {
        let mut a = ProxyResources::new();
        a.insert(&proto::Cluster {
            name: "a".into(),
            ..Default::default()
        });
        let v1 = a.get(CLUSTER_TYPE_URL, "a").unwrap().version.clone();
        let t1 = a.type_version(CLUSTER_TYPE_URL);
        a.insert(&proto::Cluster {
            name: "a".into(),
            ..Default::default()
        });
        assert_eq!(a.get(CLUSTER_TYPE_URL, "a").unwrap().version, v1);
        assert_eq!(a.type_version(CLUSTER_TYPE_URL), t1);
        a.insert(&proto::Cluster {
            name: "a".into(),
            lb_policy: proto::LbPolicy::Random as i32,
            ..Default::default()
        });
        assert_ne!(a.get(CLUSTER_TYPE_URL, "a").unwrap().version, v1);
        assert_ne!(a.type_version(CLUSTER_TYPE_URL), t1);
        assert_eq!(v1.len(), 16);
        assert!(a.remove(CLUSTER_TYPE_URL, "a").is_some());
        assert_eq!(a.len(CLUSTER_TYPE_URL), 0);
        assert!(a.type_urls().next().is_none());
    }

    fn cluster(name: &str, policy: proto::LbPolicy) -> proto::Cluster {
        proto::Cluster {
            name: name.into(),
            lb_policy: policy as i32,
            ..Default::default()
        }
    }

    #[test]
    fn shared_sets_are_seen_through_own_resources() {
        let mut shared = ResourceMap::new();
        for c in [
            cluster("a", proto::LbPolicy::Random),
            cluster("b", proto::LbPolicy::Random),
        ] {
            let (name, r) = versioned(&c);
            shared.insert(name, r);
        }
        let shared = Arc::new(shared);
        let mut p = ProxyResources::new();
        p.share(CLUSTER_TYPE_URL, shared.clone());
        // The proxy's own "b" hides the shared one; "c" is only its own.
        p.insert(&cluster("b", proto::LbPolicy::LeastRequest));
        p.insert(&cluster("c", proto::LbPolicy::Random));
        let names: Vec<&str> = p.iter(CLUSTER_TYPE_URL).map(|(n, _)| &**n).collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert_eq!(p.len(CLUSTER_TYPE_URL), 3);
        let own_b = resource_version(&cluster("b", proto::LbPolicy::LeastRequest));
        assert_eq!(p.get(CLUSTER_TYPE_URL, "b").unwrap().version, own_b);

        // The same content held all as own resources is equal, with the same type version.
        let mut flat = ProxyResources::new();
        for c in [
            cluster("a", proto::LbPolicy::Random),
            cluster("b", proto::LbPolicy::LeastRequest),
            cluster("c", proto::LbPolicy::Random),
        ] {
            flat.insert(&c);
        }
        assert_eq!(p, flat);
        assert_eq!(
            p.type_version(CLUSTER_TYPE_URL),
            flat.type_version(CLUSTER_TYPE_URL)
        );
        flat.insert(&cluster("a", proto::LbPolicy::LeastRequest));
        assert_ne!(p, flat);
        assert_ne!(
            p.type_version(CLUSTER_TYPE_URL),
            flat.type_version(CLUSTER_TYPE_URL)
        );
        // Removing works on own resources only.
        assert!(p.remove(CLUSTER_TYPE_URL, "a").is_none());
        assert!(p.remove(CLUSTER_TYPE_URL, "b").is_some());
        assert_eq!(
            p.get(CLUSTER_TYPE_URL, "b").unwrap().version,
            shared["b"].version
        );
    }

    #[test]
    fn compact_versions_read_ours_exactly() {
        let v = resource_version(&cluster("a", proto::LbPolicy::Random));
        assert_eq!(hex(compact_version(&v)), v);
        assert_ne!(compact_version("v1"), compact_version("v2"));
        assert_eq!(compact_version("v1"), compact_version("v1"));
    }
}
