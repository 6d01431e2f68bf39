//! `VirtualService` (networking.istio.io): how traffic addressed to a set of hosts is routed.
//! Ordered rules match HTTP requests (URI, headers, method, ...), TLS connections (SNI) or TCP
//! connections (port, subnet) and send them to weighted destinations, or answer HTTP requests
//! with a redirect or a fixed response. HTTP rules can also rewrite, time out, retry, inject
//! faults, mirror, apply CORS and change headers.
//!
//! ```yaml
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: reviews}
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - match:
//!     - headers: {end-user: {exact: jason}}
//!     route:
//!     - destination: {host: reviews, subset: v2}
//!   - route:
//!     - destination: {host: reviews, subset: v1}
//! ```

mod policy;

pub use policy::GRPC_STATUSES;
mod shadowing;
mod syntax;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Duration;

/// The reserved gateway name that stands for every sidecar in the mesh.
pub const MESH_GATEWAY: &str = "mesh";

/// The `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// The hosts the rules apply to: service names (a short name resolves in the
    /// VirtualService's namespace), FQDNs, wildcard domains (`*.example.com`), or IP addresses
    /// (for gateways). Empty only in a delegate VirtualService, which a root VirtualService's
    /// `delegate` pulls in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The gateways (`name` in the VirtualService's namespace, or `namespace/name`) that apply
    /// these rules; `mesh` means every sidecar. Empty means `mesh` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP rules, in order: the first rule with a matching `match` handles the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Rules for TLS that is passed through unterminated, routed by SNI, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Rules for opaque TCP traffic, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// The namespaces that can see this VirtualService: `.` (its own), `*` (all) or namespace
    /// names. Empty means all namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

impl VirtualService {
    /// A VirtualService without hosts is a delegate: it only takes effect through a root
    /// VirtualService whose HTTP route names it in `delegate`.
    pub fn is_delegate(&self) -> bool {
        self.hosts.is_empty()
    }

    /// True when sidecars apply these rules: no gateways are listed, or `mesh` is one of them.
    pub fn applies_to_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == MESH_GATEWAY)
    }
}

/// Istio's `Destination`: a service (and optionally a subset and port) to send traffic to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// A service from the registry (Kubernetes Service or ServiceEntry host). A short name
    /// resolves in the VirtualService's namespace, not the service's. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// A subset defined by a DestinationRule for `host`. Empty means all of the service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// The service port; needed only when the service has more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Istio's `HTTPRoute`: one HTTP rule. Its action is exactly one of `route`, `redirect`,
/// `directResponse` or (in a root VirtualService) `delegate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// A name for the rule, shown in access logs together with the match's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The rule applies when any of these matches (each an AND of its conditions) succeeds.
    /// Empty matches every request.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Destinations to forward to, splitting traffic by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with an HTTP redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the matched requests to the HTTP rules of another (delegate) VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the path and/or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for the whole request, retries included. Unset means no timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy. Unset uses the mesh default (2 attempts on
    /// `connect-failure,refused-stream,unavailable,cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Faults (delays, aborts) to inject. Timeouts and retries are not applied with faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Also send a copy of each request here, without waiting for its response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Several mirror destinations, each with its own percentage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: the integer percentage of requests copied to `mirror`. Used only when
    /// `mirrorPercentage` is unset; 0 mirrors nothing.
    #[serde(
        alias = "mirror_percent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent: Option<u32>,
    /// The percentage of requests copied to `mirror`. Unset mirrors all of them (100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Cross-origin resource sharing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header changes for requests and responses of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio's `Delegate`: names the VirtualService whose HTTP rules take over a root's route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// The delegate VirtualService's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its namespace; empty means the root VirtualService's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Istio's `Headers`: header changes applied before forwarding a request and before returning
/// its response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Istio's `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Replace these headers' values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append these values (making comma-separated lists where the header exists).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Istio's `TLSRoute`: a rule for unterminated TLS, matched by SNI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// The rule applies when any of these matches succeeds. Required.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Destinations to forward the connection to, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Istio's `TCPRoute`: a rule for opaque TCP traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// The rule applies when any of these matches succeeds. Empty matches every connection.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4MatchAttributes>,
    /// Destinations to forward the connection to, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Istio's `HTTPMatchRequest`: conditions that must all hold for an HTTP rule to apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// A name for the match, shown in access logs after the rule's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The request path (case-sensitive unless `ignoreUriCase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Request headers, keyed by lower-case name. An empty match (`{}`) only requires the
    /// header to be present. On gateways, `@request.auth.claims.<claim>` matches a claim of
    /// the request's validated JWT.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// The port the request was addressed to; 0 means any.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub port: u32,
    /// Labels the client workload must have. A selector of workloads, not a runtime match;
    /// with top-level `gateways` it applies only if `mesh` is listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to, overriding the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameters; `exact: ""` matches a parameter given without a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Compare `uri` exact and prefix matches case-insensitively.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_uri_case: bool,
    /// Headers that must not match: the request is not matched if any of these does.
    /// `regex: "*"` means the header must be absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// The namespace the client workload must be in. Like `sourceLabels`, a selector.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    /// Prefix for per-route proxy statistics (`route.<statPrefix>.*`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
}

/// Istio's `HTTPRouteDestination`: a weighted HTTP destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Required.
    #[serde(default)]
    pub destination: Destination,
    /// This destination's share of traffic is `weight / sum of weights`. A lone destination
    /// receives everything whatever its weight; otherwise weight 0 receives nothing.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub weight: i32,
    /// Header changes for traffic sent to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio's `RouteDestination`: a weighted TLS or TCP destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Required.
    #[serde(default)]
    pub destination: Destination,
    /// As in [`HttpRouteDestination::weight`].
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub weight: i32,
}

/// Istio's `L4MatchAttributes`: conditions on a TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port connected to; 0 means any.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub port: u32,
    /// Source IP or CIDR block (undocumented in Istio).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_subnet: String,
    /// Labels the client workload must have (a selector, as in HTTP matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to, overriding the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The namespace the client workload must be in (a selector).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

/// Istio's `TLSMatchAttributes`: conditions on a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values to match, wildcards allowed (`*.example.com`); each must fall within the
    /// VirtualService's hosts. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port connected to; 0 means any.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub port: u32,
    /// Labels the client workload must have (a selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to, overriding the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The namespace the client workload must be in (a selector).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

/// Istio's `HTTPRedirect`: answer with a redirect to a URL built from the request's, with the
/// given parts replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replace the whole path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    /// Replace the authority (host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    /// Replace the port (one of `port`, `derivePort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Choose the port from the scheme or the request (one of `port`, `derivePort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replace the scheme (`http` or `https`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    /// The redirect status; 0 means 301 (Moved Permanently).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub redirect_code: u32,
    /// Replace the matched URI prefix (the rule's URI matches must be prefix matches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_rewrite: String,
}

/// Istio's `HTTPRedirect.RedirectPortSelection`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for `http`, 443 for `https`.
    #[default]
    FromProtocolDefault,
    /// The port the request came in on.
    FromRequestPort,
}

/// Istio's `HTTPDirectResponse`: answer with this status and body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// The HTTP status, 200..599. Required.
    #[serde(default)]
    pub status: u32,
    /// The body; unset sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// Istio's `HTTPBody`: one of `string` or `bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// The body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// The body as base64 (standard or URL-safe alphabet, padding optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

impl HttpBody {
    /// The body's bytes, decoding `bytes` from base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.string, &self.bytes) {
            (Some(s), _) => Ok(s.as_bytes().to_vec()),
            (None, Some(b)) => syntax::decode_base64(b),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Istio's `HTTPRewrite`: changes made to the request before it is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replace the path; when the rule matched a URI prefix, only that prefix is replaced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    /// Replace the authority (Host header).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    /// Rewrite the path with a regex substitution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Istio's `RegexRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// An RE2 regex; every match in the path is replaced.
    #[serde(rename = "match", default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// The replacement; `\1`, `\2`, ... insert capture groups.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rewrite: String,
}

/// Istio's `StringMatch`: one of `exact`, `prefix` or `regex` (RE2, matching the whole value).
/// All unset means "present" in header matches and "anything" elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The kind and value of a [`StringMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl StringMatch {
    /// The match that is set (the first, if validation found several), or `None` for `{}`.
    pub fn matcher(&self) -> Option<Matcher<'_>> {
        if let Some(v) = &self.exact {
            Some(Matcher::Exact(v))
        } else if let Some(v) = &self.prefix {
            Some(Matcher::Prefix(v))
        } else {
            self.regex.as_deref().map(Matcher::Regex)
        }
    }
}

/// Istio's `HTTPRetry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// How many retries (not counting the first try); 0 disables retries.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub attempts: i32,
    /// Timeout of each try. Unset uses the route's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions to retry on: Envoy's `x-envoy-retry-on` and
    /// `x-envoy-retry-grpc-on` policies and HTTP status codes. Empty means
    /// `connect-failure,refused-stream,unavailable,cancelled`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_on: String,
    /// Whether retries may go to endpoints in other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Whether retries avoid hosts already tried; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the exponential backoff between retries; default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Istio's `CorsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated: allowed origins, each compared exactly. Used only when `allowOrigins` is
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Allowed origins; a matching origin is echoed in `Access-Control-Allow-Origin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// What to do with preflight requests from origins that are not allowed; unset forwards
    /// them upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Istio's `CorsPolicy.UnmatchedPreflights`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Same as `FORWARD`.
    #[default]
    Unspecified,
    /// Forward unmatched preflight requests upstream.
    Forward,
    /// Answer unmatched preflight requests without forwarding them.
    Ignore,
}

/// Istio's `HTTPFaultInjection`: a delay and/or an abort, injected on the client side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// Istio's `HTTPFaultInjection.Delay`: wait before forwarding a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// Deprecated: the integer percentage of requests delayed. Used only when `percentage` is
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// The delay (one of `fixedDelay`, `exponentialDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Not supported by Istio (one of `fixedDelay`, `exponentialDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// The percentage of requests delayed; unset (with no `percent`) delays none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio's `HTTPFaultInjection.Abort`: fail a share of requests without forwarding them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// The HTTP status to answer with (one of `httpStatus`, `grpcStatus`, `http2Error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// The gRPC status to answer with, by name (`UNAVAILABLE`, not `14`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Not supported by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// The percentage of requests aborted; unset aborts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio's `HTTPMirrorPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where copies go. Required.
    #[serde(default)]
    pub destination: Destination,
    /// The percentage of requests copied; unset copies all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio's `PortSelector`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number, 1..65535.
    #[serde(default)]
    pub number: u32,
}

/// Istio's `Percent`: a percentage with a fractional part, 0.0..100.0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}
