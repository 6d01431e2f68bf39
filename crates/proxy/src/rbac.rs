//! Authorization: Istio's AuthorizationPolicy evaluated on a listener's requests (HTTP) or
//! connections (TCP), as Envoy's rbac filter evaluates what Istio generates from it.
//!
//! [`Rbac::build`] compiles the listener's `Rbac` (every string form checked, every error
//! named) when config arrives; [`Rbac::evaluate`] reads one request's [`Attributes`]:
//! DENY policies first (one matching denies), then ALLOW ones (with at least one enforced
//! ALLOW policy, a request none matches is denied); AUDIT policies and `istio.io/dry-run`
//! ones only log. On a TCP connection (no HTTP attributes), a rule field only HTTP has makes
//! an ALLOW rule never match and is ignored by a DENY or AUDIT rule, as Istio documents.

use std::net::IpAddr;

use http::HeaderMap;
use weft_xds::proto;

use crate::config::ConfigError;

/// A listener's compiled policies, in evaluation order.
#[derive(Debug)]
pub struct Rbac {
    policies: Vec<Policy>,
    /// `destination.port` and `to.ports` compare with this (0: the connection's local port).
    destination_port: u16,
    /// At least one enforced ALLOW policy: a request none matches is denied.
    enforced_allow: bool,
}

#[derive(Debug)]
struct Policy {
    /// `ns[NS]-policy[NAME]`, Istio's name for it in Envoy's config and logs.
    id: String,
    action: Action,
    dry_run: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Audit,
}

#[derive(Debug, Default)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
}

#[derive(Debug, Default)]
struct Source {
    principals: Field<Text>,
    request_principals: Field<Text>,
    namespaces: Field<Text>,
    ip_blocks: Field<Cidr>,
    remote_ip_blocks: Field<Cidr>,
}

#[derive(Debug, Default)]
struct Operation {
    hosts: Field<Text>,
    ports: Field<u16>,
    methods: Field<Text>,
    paths: Field<Text>,
}

#[derive(Debug)]
struct Condition {
    key: Key,
    values: Field<Value>,
}

/// A `when` key Istio documents.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Header(http::HeaderName),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    /// `request.auth.claims[a][b]`: nested claims.
    AuthClaim(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
}

impl Key {
    fn parse(key: &str) -> Result<Key, String> {
        let simple = match key {
            "source.ip" => Some(Key::SourceIp),
            "remote.ip" => Some(Key::RemoteIp),
            "source.namespace" => Some(Key::SourceNamespace),
            "source.principal" => Some(Key::SourcePrincipal),
            "request.auth.principal" => Some(Key::AuthPrincipal),
            "request.auth.audiences" => Some(Key::AuthAudiences),
            "request.auth.presenter" => Some(Key::AuthPresenter),
            "destination.ip" => Some(Key::DestinationIp),
            "destination.port" => Some(Key::DestinationPort),
            "connection.sni" => Some(Key::ConnectionSni),
            _ => None,
        };
        if let Some(k) = simple {
            return Ok(k);
        }
        if let Some(name) = bracketed(key, "request.headers") {
            let [name] = name.as_slice() else {
                return Err(format!("{key:?}: one header name in brackets"));
            };
            return http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map(Key::Header)
                .map_err(|_| format!("{key:?}: {name:?} is not a header name"));
        }
        if let Some(path) = bracketed(key, "request.auth.claims") {
            return Ok(Key::AuthClaim(path));
        }
        Err(format!(
            "{key:?} is not a supported condition key (supported: request.headers[NAME], \
             source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, \
             request.auth.audiences, request.auth.presenter, request.auth.claims[NAME], \
             destination.ip, destination.port, connection.sni)"
        ))
    }

    /// Only an HTTP request has it.
    fn http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_)
                | Key::AuthPrincipal
                | Key::AuthAudiences
                | Key::AuthPresenter
                | Key::AuthClaim(_)
        )
    }
}

/// `prefix[a][b]` -> `[a, b]` (at least one non-empty name), or None.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let rest = key
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    let names: Vec<String> = rest.split("][").map(str::to_owned).collect();
    (!names.iter().any(|n| n.is_empty() || n.contains(['[', ']']))).then_some(names)
}

/// A condition's value: a string form, an address block or a port, by key.
#[derive(Debug)]
enum Value {
    Text(Text),
    Cidr(Cidr),
    Port(u16),
}

/// Values a field matches (one of them) and values it must not match (none of them). A
/// field with neither matches anything.
#[derive(Debug)]
struct Field<T> {
    any: Vec<T>,
    not: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            any: Vec::new(),
            not: Vec::new(),
        }
    }
}

impl<T> Field<T> {
    fn build(
        any: &[String],
        not: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Field<T>, String> {
        let parse_all = |v: &[String]| v.iter().map(|s| parse(s)).collect::<Result<Vec<_>, _>>();
        Ok(Field {
            any: parse_all(any)?,
            not: parse_all(not)?,
        })
    }

    fn is_set(&self) -> bool {
        !self.any.is_empty() || !self.not.is_empty()
    }

    /// `one` says whether a value matches the attribute (which is absent for none).
    fn matches(&self, one: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&one)) && !self.not.iter().any(one)
    }
}

/// Istio's string forms: exact, `prefix*`, `*suffix`, `*` (any value that is present), and
/// for paths templates (`/api/{*}/x`, `/files/{**}`).
#[derive(Debug, Clone)]
enum Text {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
    Template(regex::Regex),
}

impl Text {
    /// A path: a template when it has `{*}` or `{**}` (Istio's: `{*}` one segment, `{**}`
    /// the rest, last only), else the string forms.
    fn path(s: &str) -> Result<Text, String> {
        if !s.contains('{') {
            return Ok(Text::parse(s));
        }
        let mut re = String::from("^");
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..open]));
            let after = &rest[open..];
            if let Some(r) = after.strip_prefix("{**}") {
                if !r.is_empty() {
                    return Err(format!("{s:?}: {{**}} must be the last segment"));
                }
                re.push_str(".+");
                rest = r;
            } else if let Some(r) = after.strip_prefix("{*}") {
                re.push_str("[^/]+");
                rest = r;
            } else {
                return Err(format!("{s:?}: templates are {{*}} and {{**}}"));
            }
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        regex::Regex::new(&re)
            .map(Text::Template)
            .map_err(|e| format!("{s:?}: {e}"))
    }

    fn parse(s: &str) -> Text {
        if s == "*" {
            Text::Present
        } else if let Some(p) = s.strip_suffix('*') {
            Text::Prefix(p.to_owned())
        } else if let Some(p) = s.strip_prefix('*') {
            Text::Suffix(p.to_owned())
        } else {
            Text::Exact(s.to_owned())
        }
    }

    fn lower(s: &str) -> Text {
        Text::parse(&s.to_ascii_lowercase())
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Text::Exact(e) => v == e,
            Text::Prefix(p) => v.starts_with(p.as_str()),
            Text::Suffix(p) => v.ends_with(p.as_str()),
            Text::Present => true,
            Text::Template(re) => re.is_match(v),
        }
    }
}

/// An address block: `10.0.0.0/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }

    pub(crate) fn net(&self) -> IpAddr {
        self.net
    }

    pub(crate) fn bits(&self) -> u8 {
        self.bits
    }

    /// One address (`/32`, `/128`, or no prefix length).
    pub(crate) fn is_host(&self) -> bool {
        self.bits == if self.net.is_ipv4() { 32 } else { 128 }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, ip, width) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        if shift >= 128 {
            return true;
        }
        (net >> shift) == (ip >> shift)
    }
}

fn port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?} is not a port number"))
}

/// What a request (or a TCP connection) shows the policies.
pub struct Attributes<'a> {
    /// The connection's peer (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The client as far as x-forwarded-for is trusted (`remote.ip`, `remoteIpBlocks`).
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// The verified peer identity, `cluster.local/ns/NS/sa/SA` (mTLS), or None.
    pub principal: Option<&'a str>,
    pub sni: Option<&'a str>,
    /// None on a TCP connection.
    pub http: Option<HttpAttributes<'a>>,
}

/// What only an HTTP request has.
pub struct HttpAttributes<'a> {
    /// The authority, lower case, with its port if it had one.
    pub host: &'a str,
    pub method: &'a str,
    /// The (normalized) path without its query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The request's JWT identity, when a token was verified.
    pub auth: Option<&'a crate::jwt::Identity>,
}

/// What the policies decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied; the reason as Envoy's response code details say it:
    /// `rbac_access_denied_matched_policy[ns[NS]-policy[NAME]-rule[N]]`, or `[none]` when
    /// ALLOW policies exist and none matched.
    Deny(String),
}

impl Rbac {
    /// Compiles `rbac`; errors name `resource` and the field path under `field`.
    pub fn build(rbac: &proto::Rbac, resource: &str, field: &str) -> Result<Rbac, ConfigError> {
        let mut policies = Vec::with_capacity(rbac.policies.len());
        for (i, p) in rbac.policies.iter().enumerate() {
            let at = format!("{field}.policies[{i}]");
            let action = match proto::RbacAction::try_from(p.action) {
                Ok(proto::RbacAction::Allow) => Action::Allow,
                Ok(proto::RbacAction::Deny) => Action::Deny,
                Ok(proto::RbacAction::Audit) => Action::Audit,
                Err(_) => {
                    return Err(ConfigError::new(
                        resource,
                        format!("{at}.action"),
                        format!("{} is not an action", p.action),
                    ));
                }
            };
            let mut rules = Vec::with_capacity(p.rules.len());
            for (r, rule) in p.rules.iter().enumerate() {
                let at = format!("{at}.rules[{r}]");
                rules
                    .push(build_rule(rule).map_err(|(f, why)| {
                        ConfigError::new(resource, format!("{at}.{f}"), why)
                    })?);
            }
            policies.push(Policy {
                id: format!("ns[{}]-policy[{}]", p.namespace, p.name),
                action,
                dry_run: p.dry_run,
                rules,
            });
        }
        let destination_port = u16::try_from(rbac.destination_port).map_err(|_| {
            ConfigError::new(
                resource,
                format!("{field}.destinationPort"),
                format!("{} is not a port", rbac.destination_port),
            )
        })?;
        Ok(Rbac {
            enforced_allow: policies
                .iter()
                .any(|p| p.action == Action::Allow && !p.dry_run),
            policies,
            destination_port,
        })
    }

    /// The port policies compare with, given the connection's local port.
    pub fn destination_port(&self, local: u16) -> u16 {
        if self.destination_port == 0 {
            local
        } else {
            self.destination_port
        }
    }

    /// Decides for `at`: DENY, then ALLOW. AUDIT matches and dry-run decisions are logged.
    pub fn evaluate(&self, at: &Attributes<'_>) -> Verdict {
        for p in &self.policies {
            if p.action != Action::Audit {
                continue;
            }
            if let Some(rule) = p.matching_rule(at) {
                tracing::info!(policy = %p.id, rule, "rbac: AUDIT policy matched");
            }
        }
        for p in &self.policies {
            if p.action != Action::Deny {
                continue;
            }
            if let Some(rule) = p.matching_rule(at) {
                let why = format!("rbac_access_denied_matched_policy[{}-rule[{rule}]]", p.id);
                if p.dry_run {
                    tracing::info!(policy = %p.id, rule, "rbac: dry-run DENY policy would deny");
                    continue;
                }
                return Verdict::Deny(why);
            }
        }
        let mut allowed = false;
        for p in &self.policies {
            if p.action != Action::Allow {
                continue;
            }
            let matched = p.matching_rule(at);
            if p.dry_run {
                tracing::info!(policy = %p.id, matched = matched.is_some(), "rbac: dry-run ALLOW policy");
                continue;
            }
            if matched.is_some() {
                allowed = true;
                break;
            }
        }
        if self.enforced_allow && !allowed {
            return Verdict::Deny("rbac_access_denied_matched_policy[none]".to_owned());
        }
        Verdict::Allow
    }
}

impl Policy {
    /// The index of the first rule that matches, if one does.
    fn matching_rule(&self, at: &Attributes<'_>) -> Option<usize> {
        let tcp_ignores_http = self.action != Action::Allow;
        self.rules
            .iter()
            .position(|r| r.matches(at, tcp_ignores_http))
    }
}

/// A rule's parts: the field (for the error's path) and why.
type RuleError = (String, String);

fn build_rule(rule: &proto::RbacRule) -> Result<Rule, RuleError> {
    let mut from = Vec::new();
    for (i, s) in rule.from.iter().enumerate() {
        let at = |f: &str| format!("from[{i}].{f}");
        let text = |f: &str, any: &[String], not: &[String]| {
            Field::build(any, not, |s| Ok(Text::parse(s))).map_err(|e| (at(f), e))
        };
        let cidr = |f: &str, any: &[String], not: &[String]| {
            Field::build(any, not, Cidr::parse).map_err(|e| (at(f), e))
        };
        from.push(Source {
            principals: text("principals", &s.principals, &s.not_principals)?,
            request_principals: text(
                "requestPrincipals",
                &s.request_principals,
                &s.not_request_principals,
            )?,
            namespaces: text("namespaces", &s.namespaces, &s.not_namespaces)?,
            ip_blocks: cidr("ipBlocks", &s.ip_blocks, &s.not_ip_blocks)?,
            remote_ip_blocks: cidr(
                "remoteIpBlocks",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            )?,
        });
    }
    let mut to = Vec::new();
    for (i, o) in rule.to.iter().enumerate() {
        let at = |f: &str| format!("to[{i}].{f}");
        to.push(Operation {
            hosts: Field::build(&o.hosts, &o.not_hosts, |s| Ok(Text::lower(s)))
                .map_err(|e| (at("hosts"), e))?,
            ports: Field::build(&o.ports, &o.not_ports, port).map_err(|e| (at("ports"), e))?,
            methods: Field::build(&o.methods, &o.not_methods, |s| Ok(Text::parse(s)))
                .map_err(|e| (at("methods"), e))?,
            paths: Field::build(&o.paths, &o.not_paths, Text::path)
                .map_err(|e| (at("paths"), e))?,
        });
    }
    let mut when = Vec::new();
    for (i, c) in rule.when.iter().enumerate() {
        let key = Key::parse(&c.key).map_err(|e| (format!("when[{i}].key"), e))?;
        let parse = |s: &str| -> Result<Value, String> {
            Ok(match key {
                Key::SourceIp | Key::RemoteIp | Key::DestinationIp => Value::Cidr(Cidr::parse(s)?),
                Key::DestinationPort => Value::Port(port(s)?),
                _ => Value::Text(Text::parse(s)),
            })
        };
        if c.values.is_empty() && c.not_values.is_empty() {
            return Err((
                format!("when[{i}]"),
                "one of values or notValues is required".to_owned(),
            ));
        }
        let values =
            Field::build(&c.values, &c.not_values, parse).map_err(|e| (format!("when[{i}]"), e))?;
        when.push(Condition { key, values });
    }
    Ok(Rule { from, to, when })
}

impl Rule {
    /// `ignore_http`: on a TCP connection, fields only HTTP has are ignored (DENY, AUDIT)
    /// rather than never matching (ALLOW).
    fn matches(&self, at: &Attributes<'_>, ignore_http: bool) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(at, ignore_http)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(at, ignore_http)))
            && self.when.iter().all(|c| c.matches(at, ignore_http))
    }
}

/// A field only HTTP requests have, on a connection that may not be one: its verdict.
fn http_field<T>(
    field: &Field<T>,
    at: &Attributes<'_>,
    ignore_http: bool,
    on_http: impl FnOnce(&HttpAttributes<'_>) -> bool,
) -> bool {
    if !field.is_set() {
        return true;
    }
    match &at.http {
        Some(h) => on_http(h),
        None => ignore_http,
    }
}

fn text_of(field: &Field<Text>, value: Option<&str>) -> bool {
    field.matches(|t| value.is_some_and(|v| t.matches(v)))
}

impl Source {
    fn matches(&self, at: &Attributes<'_>, ignore_http: bool) -> bool {
        let namespace = at.principal.and_then(namespace_of);
        text_of(&self.principals, at.principal)
            && text_of(&self.namespaces, namespace)
            && self.ip_blocks.matches(|c| c.contains(at.source_ip))
            && self.remote_ip_blocks.matches(|c| c.contains(at.remote_ip))
            && http_field(&self.request_principals, at, ignore_http, |h| {
                text_of(
                    &self.request_principals,
                    h.auth.map(|a| a.principal.as_str()),
                )
            })
    }
}

/// The namespace in a principal: `cluster.local/ns/NS/sa/SA` -> `NS`.
fn namespace_of(principal: &str) -> Option<&str> {
    let (_, rest) = principal.split_once("/ns/")?;
    rest.split('/').next()
}

impl Operation {
    fn matches(&self, at: &Attributes<'_>, ignore_http: bool) -> bool {
        self.ports.matches(|p| *p == at.destination_port)
            && http_field(&self.hosts, at, ignore_http, |h| {
                let bare = crate::route::split_port(h.host).0;
                self.hosts.matches(|t| t.matches(h.host) || t.matches(bare))
            })
            && http_field(&self.methods, at, ignore_http, |h| {
                text_of(&self.methods, Some(h.method))
            })
            && http_field(&self.paths, at, ignore_http, |h| {
                text_of(&self.paths, Some(h.path))
            })
    }
}

impl Condition {
    fn matches(&self, at: &Attributes<'_>, ignore_http: bool) -> bool {
        if self.key.http_only() {
            let Some(h) = &at.http else {
                return ignore_http;
            };
            return self.http_matches(h);
        }
        let text = |v: Option<&str>| {
            self.values
                .matches(|x| matches!(x, Value::Text(t) if v.is_some_and(|v| t.matches(v))))
        };
        match &self.key {
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp => {
                let ip = match self.key {
                    Key::SourceIp => at.source_ip,
                    Key::RemoteIp => at.remote_ip,
                    _ => at.destination_ip,
                };
                self.values
                    .matches(|x| matches!(x, Value::Cidr(c) if c.contains(ip)))
            }
            Key::DestinationPort => self
                .values
                .matches(|x| matches!(x, Value::Port(p) if *p == at.destination_port)),
            Key::SourceNamespace => text(at.principal.and_then(namespace_of)),
            Key::SourcePrincipal => text(at.principal),
            Key::ConnectionSni => text(at.sni),
            _ => false,
        }
    }

    fn http_matches(&self, h: &HttpAttributes<'_>) -> bool {
        let any_of = |vals: &[&str]| {
            self.values
                .matches(|x| matches!(x, Value::Text(t) if vals.iter().any(|v| t.matches(v))))
        };
        match &self.key {
            Key::Header(name) => {
                let vals: Vec<&str> = h
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                // Several values of one header are matched joined, as Envoy joins them.
                if vals.len() > 1 {
                    let joined = vals.join(",");
                    return any_of(&[joined.as_str()]);
                }
                any_of(&vals)
            }
            Key::AuthPrincipal => any_of(
                &h.auth
                    .map(|a| a.principal.as_str())
                    .into_iter()
                    .collect::<Vec<_>>(),
            ),
            Key::AuthAudiences => {
                let auds: Vec<&str> = h
                    .auth
                    .map(|a| a.audiences.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                any_of(&auds)
            }
            Key::AuthPresenter => any_of(
                &h.auth
                    .and_then(|a| a.presenter.as_deref())
                    .into_iter()
                    .collect::<Vec<_>>(),
            ),
            Key::AuthClaim(path) => {
                let vals = h.auth.map(|a| a.claim(path)).unwrap_or_default();
                let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
                any_of(&refs)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
