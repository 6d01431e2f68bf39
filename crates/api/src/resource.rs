//! A loaded resource: its kind, metadata and typed body, and where it came from.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::common::ObjectMeta;
use crate::diag::{Location, ResourceRef};
use crate::load::position::{self, DocIndex};
use crate::validate::{Cx, Validate};
use crate::{kube, networking, security, telemetry, weft};

/// The typed body of a resource, one variant per kind weft reads.
///
/// For Istio kinds and `Workload` this is the `spec`; for Kubernetes kinds it is the whole
/// document (a Pod's `status.podIP` and an EndpointSlice's top-level `endpoints` matter too).
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Gateway(networking::Gateway),
    VirtualService(networking::VirtualService),
    DestinationRule(Box<networking::DestinationRule>),
    ServiceEntry(networking::ServiceEntry),
    Sidecar(Box<networking::Sidecar>),
    WorkloadEntry(networking::WorkloadEntry),
    PeerAuthentication(security::PeerAuthentication),
    AuthorizationPolicy(security::AuthorizationPolicy),
    RequestAuthentication(security::RequestAuthentication),
    Telemetry(Box<telemetry::Telemetry>),
    Namespace(kube::Namespace),
    ServiceAccount(kube::ServiceAccount),
    Secret(kube::Secret),
    Service(kube::Service),
    Deployment(Box<kube::Deployment>),
    Pod(Box<kube::Pod>),
    EndpointSlice(kube::EndpointSlice),
    Workload(weft::WorkloadSpec),
}

impl Spec {
    /// The kind, as written in `kind:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Gateway(_) => "Gateway",
            Spec::VirtualService(_) => "VirtualService",
            Spec::DestinationRule(_) => "DestinationRule",
            Spec::ServiceEntry(_) => "ServiceEntry",
            Spec::Sidecar(_) => "Sidecar",
            Spec::WorkloadEntry(_) => "WorkloadEntry",
            Spec::PeerAuthentication(_) => "PeerAuthentication",
            Spec::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Spec::RequestAuthentication(_) => "RequestAuthentication",
            Spec::Telemetry(_) => "Telemetry",
            Spec::Namespace(_) => "Namespace",
            Spec::ServiceAccount(_) => "ServiceAccount",
            Spec::Secret(_) => "Secret",
            Spec::Service(_) => "Service",
            Spec::Deployment(_) => "Deployment",
            Spec::Pod(_) => "Pod",
            Spec::EndpointSlice(_) => "EndpointSlice",
            Spec::Workload(_) => "Workload",
        }
    }

    /// Runs the field rules. `cx` is rooted at the document (paths start with `spec.` for
    /// kinds whose body is the spec).
    pub fn validate(&self, cx: &mut Cx) {
        match self {
            Spec::Gateway(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::VirtualService(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::DestinationRule(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::ServiceEntry(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::Sidecar(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::WorkloadEntry(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::PeerAuthentication(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::AuthorizationPolicy(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::RequestAuthentication(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::Telemetry(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::Workload(s) => cx.field("spec", |cx| s.validate(cx)),
            Spec::Namespace(s) => s.validate(cx),
            Spec::ServiceAccount(s) => s.validate(cx),
            Spec::Secret(s) => s.validate(cx),
            Spec::Service(s) => s.validate(cx),
            Spec::Deployment(s) => s.validate(cx),
            Spec::Pod(s) => s.validate(cx),
            Spec::EndpointSlice(s) => s.validate(cx),
        }
    }
}

/// How a document's `apiVersion` and `kind` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindId {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    Namespace,
    ServiceAccount,
    Secret,
    Service,
    Deployment,
    Pod,
    EndpointSlice,
    Workload,
}

/// What weft makes of an `apiVersion`/`kind` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KindMatch {
    Known(KindId),
    /// The kind is known under another version.
    WrongVersion {
        supported: Vec<String>,
    },
    /// A kind weft knows of but does not implement (Istio's EnvoyFilter, Telemetry, ...; the
    /// Kubernetes Gateway API); `what` names it for the message.
    Unsupported {
        what: &'static str,
    },
    /// A kind no Istio API group has, under an Istio API group: most likely a typo.
    UnknownIstio,
    /// Anything else (ConfigMap, a CRD of another project, ...).
    Unknown,
}

/// An API group and the versions of it that weft serves.
type ApiGroup = (&'static str, &'static [&'static str]);

const NETWORKING: ApiGroup = ("networking.istio.io", &["v1alpha3", "v1beta1", "v1"]);
const SECURITY: ApiGroup = ("security.istio.io", &["v1beta1", "v1"]);
/// Istio's telemetry API: v1alpha1 and v1 are the same schema.
const TELEMETRY: ApiGroup = ("telemetry.istio.io", &["v1alpha1", "v1"]);
const CORE: ApiGroup = ("", &["v1"]);
const APPS: ApiGroup = ("apps", &["v1"]);
const DISCOVERY: ApiGroup = ("discovery.k8s.io", &["v1"]);
const WEFT: ApiGroup = ("weft.dev", &["v1alpha1"]);

/// Every kind weft reads, with its API group and the versions accepted.
const KINDS: &[(&str, ApiGroup, KindId)] = &[
    ("Gateway", NETWORKING, KindId::Gateway),
    ("VirtualService", NETWORKING, KindId::VirtualService),
    ("DestinationRule", NETWORKING, KindId::DestinationRule),
    ("ServiceEntry", NETWORKING, KindId::ServiceEntry),
    ("Sidecar", NETWORKING, KindId::Sidecar),
    ("WorkloadEntry", NETWORKING, KindId::WorkloadEntry),
    ("PeerAuthentication", SECURITY, KindId::PeerAuthentication),
    ("AuthorizationPolicy", SECURITY, KindId::AuthorizationPolicy),
    (
        "RequestAuthentication",
        SECURITY,
        KindId::RequestAuthentication,
    ),
    ("Telemetry", TELEMETRY, KindId::Telemetry),
    ("Namespace", CORE, KindId::Namespace),
    ("ServiceAccount", CORE, KindId::ServiceAccount),
    ("Secret", CORE, KindId::Secret),
    ("Service", CORE, KindId::Service),
    ("Pod", CORE, KindId::Pod),
    ("Deployment", APPS, KindId::Deployment),
    ("EndpointSlice", DISCOVERY, KindId::EndpointSlice),
    ("Workload", WEFT, KindId::Workload),
];

/// The names of every kind weft reads (`VirtualService`, `Service`, `Workload`, ...).
pub fn kind_names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|(name, _, _)| *name)
}

impl KindId {
    /// Istio kinds and weft's own have a schema weft owns whole: unknown fields are errors.
    pub(crate) fn strict(self) -> bool {
        !matches!(
            self,
            KindId::Namespace
                | KindId::ServiceAccount
                | KindId::Secret
                | KindId::Service
                | KindId::Pod
                | KindId::Deployment
                | KindId::EndpointSlice
        )
    }
}

pub(crate) fn match_kind(api_version: &str, kind: &str) -> KindMatch {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let mut supported = Vec::new();
    for (name, (g, versions), id) in KINDS {
        if *name != kind {
            continue;
        }
        if *g == group && versions.contains(&version) {
            return KindMatch::Known(*id);
        }
        supported.extend(versions.iter().map(|v| {
            if g.is_empty() {
                (*v).to_owned()
            } else {
                format!("{g}/{v}")
            }
        }));
    }
    if group == GATEWAY_API {
        return KindMatch::Unsupported {
            what: "the Kubernetes Gateway API",
        };
    }
    // Same group, other version: a version weft does not serve. Another group with a kind of
    // the same name (a CRD of another project) is simply not weft's.
    if !supported.is_empty()
        && KINDS
            .iter()
            .any(|(name, (g, _), _)| *name == kind && *g == group)
    {
        return KindMatch::WrongVersion { supported };
    }
    if LEGACY_ISTIO_GROUPS.contains(&group) {
        return KindMatch::Unsupported {
            what: "Istio's legacy configuration (Mixer, RBAC and authentication policy groups, removed in Istio 1.6 to 1.8)",
        };
    }
    if group.ends_with(".istio.io") {
        return if UNSUPPORTED_ISTIO.contains(&kind) {
            KindMatch::Unsupported {
                what: "this Istio kind",
            }
        } else {
            KindMatch::UnknownIstio
        };
    }
    KindMatch::Unknown
}

/// The Kubernetes Gateway API group (Gateway, HTTPRoute, ...), which weft does not implement yet.
const GATEWAY_API: &str = "gateway.networking.k8s.io";

/// API groups of Istio's removed configuration (Mixer's `QuotaSpec`, `rule`, `handler`, ...;
/// `ServiceRole`; the `Policy` of authentication): Istio accepts and ignores them (`istioctl
/// analyze` does not fail on them), so weft skips them with a warning.
const LEGACY_ISTIO_GROUPS: &[&str] = &[
    "config.istio.io",
    "rbac.istio.io",
    "authentication.istio.io",
];

/// Istio kinds weft does not implement; documents of these kinds are skipped with a warning.
const UNSUPPORTED_ISTIO: &[&str] = &[
    "EnvoyFilter",
    "WorkloadGroup",
    "ProxyConfig",
    "WasmPlugin",
    "IstioOperator",
];

/// The kinds weft knows, for "did you mean" on a misspelt `kind:`.
pub(crate) fn known_kinds() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|(name, ..)| *name)
}

/// One file's text, kept so diagnostics can be located after loading.
pub struct Source {
    pub path: PathBuf,
    text: String,
    index: OnceLock<Vec<DocIndex>>,
}

/// The path and size only: a file may hold a Secret, whose values must not reach a log.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

impl Source {
    pub fn new(path: PathBuf, text: String) -> Self {
        Source {
            path,
            text,
            index: OnceLock::new(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Line and column of `path` in document `document` (indexed on first use).
    pub fn locate(&self, document: usize, path: &str) -> Location {
        let index = self.index.get_or_init(|| position::index(&self.text));
        let (line, column) = index.get(document).map_or((1, 1), |d| d.locate(path));
        Location {
            file: self.path.clone(),
            line,
            column,
            document: document + 1,
        }
    }
}

/// Where a resource was read from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: Arc<Source>,
    /// Index of the YAML document in the file.
    pub document: usize,
    /// Path of the resource inside the document: empty, or `items[3]` inside a `kind: List`.
    pub prefix: String,
}

impl Origin {
    /// The location of a field path of this resource (`spec.hosts[0]`).
    pub fn locate(&self, path: &str) -> Location {
        self.source.locate(self.document, &self.full_path(path))
    }

    pub(crate) fn full_path(&self, path: &str) -> String {
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{path}", self.prefix),
        }
    }
}

/// A resource as loaded: kind, metadata, typed body, origin.
#[derive(Debug, Clone)]
pub struct Resource {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    pub origin: Option<Origin>,
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.api_version == other.api_version
            && self.metadata == other.metadata
            && self.spec == other.spec
    }
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind().to_owned(),
            namespace: self.namespace().to_owned(),
            name: self.name().to_owned(),
        }
    }

    /// Where `path` (`spec.gateways[0]`) of this resource is written, if it came from a file.
    pub fn locate(&self, path: &str) -> Option<Location> {
        self.origin.as_ref().map(|o| o.locate(path))
    }
}
