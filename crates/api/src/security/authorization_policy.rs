//! `AuthorizationPolicy` (security.istio.io): access control for the workloads a policy selects.
//!
//! A request is checked against the policies in this order: `CUSTOM` (an external authorizer),
//! then `DENY`, then `ALLOW`. When any `ALLOW` policy applies to a workload, a request must match
//! one of their rules; `AUDIT` only marks requests for logging.
//!
//! ```yaml
//! apiVersion: security.istio.io/v1
//! kind: AuthorizationPolicy
//! metadata: {name: reviews-viewer, namespace: default}
//! spec:
//!   selector: {matchLabels: {app: reviews}}
//!   action: ALLOW
//!   rules:
//!   - from:
//!     - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
//!     to:
//!     - operation: {methods: ["GET"]}
//! ```

use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::validate::{Cx, Validate, rules};

/// The `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// The workloads (in the policy's namespace) the policy applies to. Without a selector or
    /// target reference, the policy applies to every workload in its namespace (or the whole
    /// mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A Gateway API resource (a `Gateway`, a `Service`, a `ServiceEntry`, a `GatewayClass`)
    /// the policy attaches to instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Like `targetRef`, several at once (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches the policy when it matches any rule. No rules: an `ALLOW` policy
    /// matches nothing (so it denies every request), and `DENY`/`CUSTOM` are rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does. Default `ALLOW`.
    #[serde(default, skip_serializing_if = "Action::is_allow")]
    pub action: Action,
    /// The extension provider (declared in mesh config) a `CUSTOM` policy delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What a matching request gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allowed (and, once any ALLOW policy applies, everything else is denied).
    #[default]
    Allow,
    /// Denied, whatever ALLOW policies say.
    Deny,
    /// Marked for auditing; does not affect whether the request is allowed.
    Audit,
    /// Decided by the external authorizer named in `provider`.
    Custom,
}

impl Action {
    fn is_allow(&self) -> bool {
        *self == Action::Allow
    }

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// Istio's `AuthorizationPolicy.ExtensionProvider`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// The name of an extension provider in mesh config.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A rule matches when every one of its parts present matches: any `from` entry, any `to`
/// entry, and all `when` conditions. An empty rule `{}` matches every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Request sources; `None` when absent (matches any source). An empty list is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<RuleFrom>>,
    /// Request operations; `None` when absent (matches any operation). An empty list is an
    /// error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Extra conditions on request attributes, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Istio's `Rule.From`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// Istio's `Rule.To`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Who sent a request. Every field present must match (a field matches when any of its values
/// does, and none of its `not` values does). Values match exactly, or by prefix (`abc*`), suffix
/// (`*abc`) or presence (`*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from mutual TLS, `<trust domain>/ns/<namespace>/sa/<service account>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities from a verified JWT, `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer's identity (requires mutual TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer service accounts, `name` (in the policy's namespace) or `namespace/name`; exact
    /// values only, at most 16. Cannot be combined with `principals` or `namespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Addresses or CIDR blocks of the connection's peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Addresses or CIDR blocks of the original client (from `X-Forwarded-For` or the PROXY
    /// protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// What a request asks for. Every field present must match, as in [`Source`]. Only `ports`
/// apply to plain TCP traffic; the others need HTTP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// `Host`/`:authority` values, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings of digits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (`GET`), or fully qualified gRPC methods for gRPC traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Request paths, normalized as configured in mesh config. Besides prefix and suffix
    /// wildcards, a path may use templates: `{*}` matches one segment and `{**}` (last only)
    /// any number of segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A condition on one request attribute (`key`), such as `request.headers[version]` or
/// `source.ip`. It holds when the attribute matches any of `values` and none of `notValues`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Required; one of Istio's supported attribute names.
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, cx: &mut Cx) {
        validate_policy_target(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        let custom = self.action == Action::Custom;
        match (&self.provider, custom) {
            (Some(p), true) if p.name.is_empty() => cx.error_at(
                "provider.name",
                "a CUSTOM policy needs the name of an extension provider from mesh config",
            ),
            (None, true) if !self.rules.is_empty() => cx.error_at(
                "provider",
                "a CUSTOM policy needs `provider.name`: the extension provider that decides",
            ),
            (Some(_), false) => cx.error_at(
                "provider",
                format!(
                    "`provider` is only allowed with action CUSTOM, not {}",
                    self.action.as_str()
                ),
            ),
            _ => {}
        }
        if self.rules.is_empty() && matches!(self.action, Action::Deny | Action::Custom) {
            cx.error_at(
                "rules",
                format!(
                    "a {} policy without rules never matches; add an empty rule `{{}}` to match \
                     every request",
                    self.action.as_str()
                ),
            );
        }
        if self.rules.len() > MAX_RULES {
            cx.error_at("rules", format!("at most {MAX_RULES} rules are allowed"));
        }
        cx.each("rules", &self.rules, |cx, rule| {
            rule.validate(cx);
            if custom {
                rule.check_custom(cx);
            }
            if self.action == Action::Deny && rule.is_http_only() {
                cx.warn(
                    "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP \
                     ports in its scope; add `to.operation.ports` to limit it",
                );
            }
        });
    }
}

// The CRD's limit on `rules` and on each rule's `from`.
const MAX_RULES: usize = 512;

impl Validate for Rule {
    fn validate(&self, cx: &mut Cx) {
        if let Some(from) = &self.from {
            if from.is_empty() {
                cx.error_at(
                    "from",
                    "`from`, when present, must list at least one source",
                );
            }
            if from.len() > MAX_RULES {
                cx.error_at("from", format!("at most {MAX_RULES} sources are allowed"));
            }
            cx.each("from", from, |cx, f| match &f.source {
                Some(source) => cx.field("source", |cx| source.validate(cx)),
                None => cx.error_at("source", "`source` is required"),
            });
        }
        if let Some(to) = &self.to {
            if to.is_empty() {
                cx.error_at("to", "`to`, when present, must list at least one operation");
            }
            cx.each("to", to, |cx, t| match &t.operation {
                Some(op) => cx.field("operation", |cx| op.validate(cx)),
                None => cx.error_at("operation", "`operation` is required"),
            });
        }
        cx.each("when", &self.when, |cx, c| c.validate(cx));
    }
}

impl Rule {
    /// The parts an external authorizer cannot be told about are rejected in a CUSTOM policy.
    fn check_custom(&self, cx: &mut Cx) {
        let unsupported = |cx: &mut Cx, name: &str, values: &[String]| {
            if !values.is_empty() {
                cx.error_at(
                    name,
                    format!("`{name}` is not supported with action CUSTOM"),
                );
            }
        };
        cx.each("from", self.from.as_deref().unwrap_or_default(), |cx, f| {
            let Some(s) = &f.source else { return };
            cx.field("source", |cx| {
                unsupported(cx, "principals", &s.principals);
                unsupported(cx, "notPrincipals", &s.not_principals);
                unsupported(cx, "requestPrincipals", &s.request_principals);
                unsupported(cx, "notRequestPrincipals", &s.not_request_principals);
                unsupported(cx, "namespaces", &s.namespaces);
                unsupported(cx, "notNamespaces", &s.not_namespaces);
                unsupported(cx, "serviceAccounts", &s.service_accounts);
                unsupported(cx, "notServiceAccounts", &s.not_service_accounts);
                unsupported(cx, "trustDomains", &s.trust_domains);
                unsupported(cx, "notTrustDomains", &s.not_trust_domains);
            });
        });
        cx.each("when", &self.when, |cx, c| {
            let identity = matches!(
                c.key.as_str(),
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            );
            if identity || c.key.starts_with("request.auth.") {
                cx.error_at(
                    "key",
                    format!(
                        "condition on {:?} is not supported with action CUSTOM",
                        c.key
                    ),
                );
            }
        });
    }

    /// True when the rule matches only on HTTP attributes, so that it can never match (or, in a
    /// DENY policy, must deny) plain TCP traffic. Mirrors Istio's warning.
    fn is_http_only(&self) -> bool {
        let sources: Vec<&Source> = self
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .collect();
        let ops: Vec<&Operation> = self
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .collect();
        let tcp_from = sources.iter().any(|s| s.has_tcp_attributes());
        let tcp_to = ops
            .iter()
            .any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
        (!sources.is_empty() && ops.is_empty() && !tcp_from) || (!ops.is_empty() && !tcp_to)
    }
}

impl Source {
    fn has_tcp_attributes(&self) -> bool {
        [
            &self.principals,
            &self.not_principals,
            &self.namespaces,
            &self.not_namespaces,
            &self.service_accounts,
            &self.not_service_accounts,
            &self.ip_blocks,
            &self.not_ip_blocks,
            &self.remote_ip_blocks,
            &self.not_remote_ip_blocks,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }

    fn lists(&self) -> [(&'static str, &[String]); 14] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }
}

impl Validate for Source {
    fn validate(&self, cx: &mut Cx) {
        let lists = self.lists();
        if lists.iter().all(|(_, v)| v.is_empty()) {
            cx.error("`source` must set at least one field; omit `from` to match any source");
        }
        let identities = [
            &self.principals,
            &self.not_principals,
            &self.namespaces,
            &self.not_namespaces,
        ];
        let accounts = [&self.service_accounts, &self.not_service_accounts];
        if identities.iter().any(|v| !v.is_empty()) && accounts.iter().any(|v| !v.is_empty()) {
            cx.error(
                "`serviceAccounts`/`notServiceAccounts` cannot be combined with `principals` or \
                 `namespaces` (or their `not` forms)",
            );
        }
        for (name, values) in lists {
            cx.field(name, |cx| match name {
                "serviceAccounts" | "notServiceAccounts" => service_accounts(cx, values),
                "trustDomains" | "notTrustDomains" => {
                    each_value(cx, values, trust_domain);
                }
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                    each_value(cx, values, rules::ip_or_cidr);
                }
                _ => each_value(cx, values, |_| Ok(())),
            });
        }
    }
}

impl Validate for Operation {
    fn validate(&self, cx: &mut Cx) {
        let lists = [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ];
        if lists.iter().all(|(_, v)| v.is_empty()) {
            cx.error("`operation` must set at least one field; omit `to` to match any operation");
        }
        for (name, values) in lists {
            cx.field(name, |cx| match name {
                "ports" | "notPorts" => values.iter().enumerate().for_each(|(i, p)| {
                    cx.index(i, |cx| policy_port(cx, p));
                }),
                "paths" | "notPaths" => each_value(cx, values, path_template),
                _ => each_value(cx, values, |_| Ok(())),
            });
        }
    }
}

impl Validate for Condition {
    fn validate(&self, cx: &mut Cx) {
        if self.key.is_empty() {
            cx.error_at("key", "`key` is required: the request attribute to check");
            return;
        }
        let kind = match attribute(&self.key) {
            Ok(kind) => kind,
            Err(e) => {
                cx.error_at("key", e);
                return;
            }
        };
        if self.values.is_empty() && self.not_values.is_empty() {
            cx.error(format!(
                "condition on {:?} needs `values` or `notValues`",
                self.key
            ));
        }
        for (name, values) in [("values", &self.values), ("notValues", &self.not_values)] {
            cx.field(name, |cx| match kind {
                Attribute::Port => values.iter().enumerate().for_each(|(i, p)| {
                    cx.index(i, |cx| policy_port(cx, p));
                }),
                Attribute::Ip => each_value(cx, values, rules::ip_or_cidr),
                Attribute::ServiceAccount => service_accounts(cx, values),
                Attribute::Wildcard => each_value(cx, values, wildcard_value),
                Attribute::Plain => each_value(cx, values, |_| Ok(())),
            });
        }
    }
}

/// How a condition's values are checked, by attribute.
#[derive(Clone, Copy)]
enum Attribute {
    Plain,
    Ip,
    Port,
    ServiceAccount,
    Wildcard,
}

/// The attributes a `when` condition may test (Istio's list), and how their values are checked.
const ATTRIBUTES: &[(&str, Attribute)] = &[
    ("source.ip", Attribute::Ip),
    ("remote.ip", Attribute::Ip),
    ("source.namespace", Attribute::Plain),
    ("source.serviceAccount", Attribute::ServiceAccount),
    ("source.principal", Attribute::Plain),
    ("source.trustDomain", Attribute::Wildcard),
    ("request.auth.principal", Attribute::Plain),
    ("request.auth.audiences", Attribute::Plain),
    ("request.auth.presenter", Attribute::Plain),
    ("destination.ip", Attribute::Ip),
    ("destination.port", Attribute::Port),
    ("connection.sni", Attribute::Plain),
];

/// Attributes that name a map entry: `request.headers[User-Agent]`.
const MAP_ATTRIBUTES: &[&str] = &[
    "request.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
];

fn attribute(key: &str) -> Result<Attribute, String> {
    if let Some((_, kind)) = ATTRIBUTES.iter().find(|(k, _)| *k == key) {
        return Ok(*kind);
    }
    if let Some(prefix) = MAP_ATTRIBUTES.iter().find(|p| key.starts_with(*p)) {
        // `name[entry]`, with a non-empty name and entry.
        let open = key.find('[').unwrap_or(0);
        return if open > 0 && key.ends_with(']') && open + 2 < key.len() {
            Ok(Attribute::Plain)
        } else {
            Err(format!(
                "{key:?} must name an entry in brackets, e.g. {}[name]",
                prefix.trim_end_matches('.')
            ))
        };
    }
    match key {
        "destination.namespace" => {
            Err("`destination.namespace` is not supported: the policy's own namespace is the destination's".into())
        }
        "destination.name" | "destination.user" => Err(format!(
            "`{key}` was removed with the v1alpha1 API; select the destination with `selector`"
        )),
        _ if key.starts_with("destination.labels") => {
            Err("`destination.labels` is not supported: select the destination with `selector`".into())
        }
        _ => {
            let names = ATTRIBUTES.iter().map(|(k, _)| *k).chain(["request.headers[]", "request.auth.claims[]"]);
            let hint = crate::suggest::did_you_mean(key, names)
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            Err(format!("unknown attribute {key:?}{hint}"))
        }
    }
}

/// Checks each value at `[i]`; every value must also be non-empty.
fn each_value(cx: &mut Cx, values: &[String], check: impl Fn(&str) -> Result<(), String>) {
    for (i, v) in values.iter().enumerate() {
        cx.index(i, |cx| {
            if v.is_empty() {
                cx.error("empty value not allowed");
            } else {
                cx.check(check(v));
            }
        });
    }
}

/// A port in `ports`, `notPorts` or a `destination.port` condition: a decimal number. Istio
/// accepts `0`, which matches no traffic, so it is only a warning here.
fn policy_port(cx: &mut Cx, port: &str) {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u32>() {
        Ok(0) if digits => cx.warn("port 0 never matches any traffic"),
        Ok(p) if digits => cx.check(rules::port(p)),
        _ => cx.error(format!(
            "port {port:?} must be a number in the range 1..65535"
        )),
    }
}

/// A value that may contain one `*`, at its start or end (or be just `*`).
fn wildcard_value(v: &str) -> Result<(), String> {
    match v.matches('*').count() {
        0 => Ok(()),
        1 if v.starts_with('*') || v.ends_with('*') => Ok(()),
        1 => Err(format!(
            "{v:?}: a wildcard is only allowed at the start or end"
        )),
        _ => Err(format!("{v:?}: at most one wildcard is allowed")),
    }
}

fn trust_domain(v: &str) -> Result<(), String> {
    wildcard_value(v)?;
    if v.contains('/') {
        return Err(format!("trust domain {v:?} must not contain '/'"));
    }
    Ok(())
}

/// `serviceAccounts` values: `name` or `namespace/name`, exact (no wildcards), at most 16.
fn service_accounts(cx: &mut Cx, values: &[String]) {
    if values.len() > 16 {
        cx.error(format!(
            "at most 16 service accounts are allowed, found {}",
            values.len()
        ));
    }
    each_value(cx, values, |v| {
        if v.contains('*') {
            return Err(format!(
                "{v:?}: wildcards are not allowed in service accounts"
            ));
        }
        if v.len() > 320 {
            return Err(format!(
                "service account {v:?} is longer than 320 characters"
            ));
        }
        let well_formed = match v.split_once('/') {
            Some((ns, sa)) => !ns.is_empty() && !sa.is_empty() && !sa.contains('/'),
            None => true,
        };
        if well_formed {
            Ok(())
        } else {
            Err(format!(
                "{v:?} must be `serviceAccount` or `namespace/serviceAccount`"
            ))
        }
    });
}

/// A path with optional templates: `{*}` for one segment, `{**}` for the rest (last only).
/// With a template, every other segment must be a valid literal (RFC 3986 `pchar`).
fn path_template(path: &str) -> Result<(), String> {
    let templated = path.contains("{*}") || path.contains("{**}");
    let mut seen_any = false;
    for segment in path.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if seen_any => {
                return Err(format!("path {path:?}: `{{**}}` must be the last segment"));
            }
            "{*}" => {}
            "{**}" => seen_any = true,
            _ if segment.contains(['{', '}']) => {
                return Err(format!(
                    "path {path:?}: '{{' and '}}' are only allowed in the templates {{*}} and {{**}}"
                ));
            }
            _ if templated && !is_pchar_literal(segment) => {
                return Err(format!(
                    "path {path:?}: segment {segment:?} is not a valid literal"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_pchar_literal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

/// Kinds a policy's `targetRef` may name, as (group, kind); the core group is `""`.
const TARGET_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// The attachment rules shared by AuthorizationPolicy and RequestAuthentication: at most one of
/// `selector`, `targetRef` and `targetRefs`, each well formed.
pub(crate) fn validate_policy_target(
    cx: &mut Cx,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        cx.error("only one of `selector`, `targetRef` and `targetRefs` may be set");
    }
    if let Some(s) = selector {
        cx.field("selector", |cx| {
            s.validate(cx);
            if s.match_labels.is_empty() {
                cx.warn("selector has no labels, so it selects every workload in the namespace");
            }
        });
    }
    if let Some(r) = target_ref {
        cx.field("targetRef", |cx| target(cx, r));
    }
    if target_refs.len() > 16 {
        cx.error_at("targetRefs", "at most 16 target references are allowed");
    }
    cx.each("targetRefs", target_refs, target);
}

fn target(cx: &mut Cx, r: &PolicyTargetReference) {
    r.validate(cx);
    if !r.namespace.is_empty() {
        cx.error_at(
            "namespace",
            "cross-namespace references are not supported; omit `namespace`",
        );
    }
    let group = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    if !r.kind.is_empty() && !TARGET_KINDS.contains(&(group, r.kind.as_str())) {
        let allowed: Vec<String> = TARGET_KINDS
            .iter()
            .map(|(g, k)| {
                if g.is_empty() {
                    (*k).to_owned()
                } else {
                    format!("{g}/{k}")
                }
            })
            .collect();
        cx.error(format!(
            "cannot target {}{}; allowed: {}",
            if r.group.is_empty() {
                String::new()
            } else {
                format!("{}/", r.group)
            },
            r.kind,
            allowed.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests;
