//! Diagnostics: what `weft analyze`, the loader and the validators report.
//!
//! Every diagnostic says where (file, line, column, document index, resource, field path) and
//! why. Diagnostics are values; printing them is the caller's business (`Display` gives the
//! one-line human form, serde gives the JSON form).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a finding is. Only `Error` changes `weft analyze`'s exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A place in a source file. Line and column are 1-based, as editors count them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Which YAML document of the file, counting from 1 like lines (`---` separates documents).
    pub document: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Names a resource the way `kubectl` does: `Kind namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code, documented in docs/ANALYZE.md (`WA0101`, ...).
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path inside the resource, e.g. `spec.http[0].route[1].weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}[{}]", self.severity, self.code)?;
        if let Some(res) = &self.resource {
            write!(f, " {res}")?;
        }
        // After the resource, so that the `file:line:col:` prefix editors parse stays intact.
        if let Some(loc) = &self.location {
            write!(f, " (document {})", loc.document)?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Stable diagnostic codes. The numbers never change meaning; docs/ANALYZE.md explains each.
pub mod code {
    /// The file could not be read (missing, unreadable, not UTF-8).
    pub const UNREADABLE: &str = "WA0001";
    /// The file is not well-formed YAML or JSON.
    pub const SYNTAX: &str = "WA0002";
    /// A resource does not match its schema or breaks a field rule.
    pub const SCHEMA: &str = "WA0003";
    /// A field that Istio deprecated; accepted with Istio's meaning.
    pub const DEPRECATED: &str = "WA0004";
    /// A document whose kind weft does not read; skipped.
    pub const SKIPPED: &str = "WA0005";
    /// The same kind/namespace/name appears twice (error in one file; info across files).
    pub const DUPLICATE: &str = "WA0006";
    /// A VirtualService names a Gateway that does not exist.
    pub const GATEWAY_NOT_FOUND: &str = "WA0101";
    /// A route destination host matches no Service or ServiceEntry.
    pub const HOST_NOT_FOUND: &str = "WA0102";
    /// A route destination subset is defined by no DestinationRule for its host.
    pub const SUBSET_NOT_FOUND: &str = "WA0103";
    /// Two VirtualServices claim the same host on the same gateway.
    pub const CONFLICTING_VIRTUAL_SERVICES: &str = "WA0104";
    /// Two DestinationRules apply to the same host.
    pub const CONFLICTING_DESTINATION_RULES: &str = "WA0105";
    /// A Gateway's selector matches no workload.
    pub const GATEWAY_SELECTOR_NO_WORKLOAD: &str = "WA0106";
    /// A Service port whose protocol cannot be told from its name or appProtocol.
    pub const PORT_PROTOCOL_UNKNOWN: &str = "WA0107";
    /// A Deployment or Workload without the `app` or `version` label.
    pub const MISSING_APP_VERSION_LABELS: &str = "WA0108";
    /// One workload port is selected by two Services.
    pub const PORT_SELECTED_BY_TWO_SERVICES: &str = "WA0109";
    /// A route destination port that the Service does not expose.
    pub const DESTINATION_PORT_NOT_FOUND: &str = "WA0110";
    /// A route destination to a multi-port Service without a port.
    pub const DESTINATION_PORT_REQUIRED: &str = "WA0111";
    /// A VirtualService route delegates to a VirtualService that does not exist.
    pub const DELEGATE_NOT_FOUND: &str = "WA0112";
    /// A VirtualService route delegates to a VirtualService that has hosts.
    pub const DELEGATE_HAS_HOSTS: &str = "WA0113";
    /// A VirtualService route delegates to a VirtualService not exported to its namespace.
    pub const DELEGATE_NOT_EXPORTED: &str = "WA0114";
    /// A delegate VirtualService (no hosts) that no VirtualService delegates to.
    pub const DELEGATE_NOT_REFERENCED: &str = "WA0115";
    /// A Workload whose command or workingDir cannot be found on this machine.
    pub const WORKLOAD_NOT_RUNNABLE: &str = "WA0116";
    /// A Gateway's credentialName names a Secret that is not in the gateway's namespace.
    pub const GATEWAY_SECRET_NOT_FOUND: &str = "WA0117";
    /// A route rule that no request can reach: earlier rules take all of its requests.
    pub const UNREACHABLE_RULE: &str = "WA0120";
    /// A route match that no request can reach: an earlier match takes all of its requests.
    pub const INEFFECTIVE_MATCH: &str = "WA0121";
    /// Two Gateways on the same workloads bind the same port with overlapping hosts.
    pub const CONFLICTING_GATEWAYS: &str = "WA0122";
    /// A Gateway server port that the gateway workload's Service does not expose.
    pub const GATEWAY_PORT_NOT_ON_SERVICE: &str = "WA0123";
    /// A VirtualService host that its Gateway's servers do not serve.
    pub const VIRTUAL_SERVICE_HOST_NOT_IN_GATEWAY: &str = "WA0124";
    /// Two Sidecars whose workload selectors select the same workload.
    pub const CONFLICTING_SIDECAR_SELECTORS: &str = "WA0125";
    /// Several Sidecars without workload selector in one namespace.
    pub const MULTIPLE_SIDECARS_WITHOUT_SELECTOR: &str = "WA0126";
    /// A Sidecar whose workload selector selects no workload.
    pub const SIDECAR_SELECTOR_NO_WORKLOAD: &str = "WA0127";
    /// An AuthorizationPolicy whose selector (or namespace) has no workload.
    pub const AUTHORIZATION_POLICY_NO_WORKLOAD: &str = "WA0128";
    /// An AuthorizationPolicy names a namespace that exists nowhere.
    pub const AUTHORIZATION_POLICY_NAMESPACE_NOT_FOUND: &str = "WA0129";
    /// A ServiceEntry with a TCP port and no addresses, while DNS capture is off.
    pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: &str = "WA0130";
    /// Two ServiceEntries give one host and port different protocols.
    pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: &str = "WA0131";
    /// A DestinationRule whose host matches no Service or ServiceEntry.
    pub const DESTINATION_RULE_HOST_NOT_FOUND: &str = "WA0132";
    /// A DestinationRule subset whose labels select no workload of its host.
    pub const DESTINATION_RULE_SUBSET_NO_WORKLOAD: &str = "WA0133";
    /// A route matching on JWT claims without a RequestAuthentication for the workload.
    pub const JWT_CLAIM_ROUTE_WITHOUT_REQUEST_AUTHENTICATION: &str = "WA0134";
    /// Route rules of a mesh VirtualService for a host that ingress traffic does not follow.
    pub const INGRESS_ROUTE_RULES_NOT_AFFECTED: &str = "WA0135";
    /// An ExternalName Service port whose name does not say TCP although it is TCP.
    pub const EXTERNAL_NAME_PORT_NAME: &str = "WA0136";
    /// One workload port targeted by different Service port numbers.
    pub const DEPLOYMENT_SERVICES: &str = "WA0137";
    /// An AuthorizationPolicy principal names a service account its namespace does not have.
    pub const AUTHORIZATION_POLICY_PRINCIPAL_NOT_FOUND: &str = "WA0138";
    /// A kind or field weft reads but does not enforce (never silent).
    pub const NOT_ENFORCED: &str = "WA0139";
    /// A RequestAuthentication or PeerAuthentication that applies to no workload.
    pub const POLICY_SELECTS_NOTHING: &str = "WA0140";
    /// Two PeerAuthentications for one scope (mesh, namespace) or one workload.
    pub const CONFLICTING_PEER_AUTHENTICATIONS: &str = "WA0141";
    /// An AuthorizationPolicy matching peer identities where mutual TLS is disabled.
    pub const PRINCIPALS_WITHOUT_MTLS: &str = "WA0142";
    /// A RequestAuthentication rule with neither jwks nor jwksUri.
    pub const JWT_RULE_WITHOUT_KEYS: &str = "WA0143";
    /// A Telemetry names a provider that is neither in `meshConfig.extensionProviders` nor
    /// built in (`envoy`, `prometheus`).
    pub const TELEMETRY_UNKNOWN_PROVIDER: &str = "WA0144";
    /// Several Telemetries for one scope (mesh, namespace) or one workload: one is used.
    pub const CONFLICTING_TELEMETRIES: &str = "WA0145";
}
