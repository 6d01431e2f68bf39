//! Virtual host selection by authority.
//!
//! Envoy's order (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#config-route-v3-virtualhost>):
//! exact domains, then the longest `*suffix` wildcard, then the longest `prefix*` wildcard, then
//! `*`. Lower-cased on both sides. A domain without a port also matches the authority with any
//! port; a domain with a port (`reviews:9080`) matches only that port. Kubernetes short names
//! (`reviews`, `reviews.default`, `reviews.default.svc`, each with or without a port) reach the
//! cluster-local domain they abbreviate when no domain matches them literally.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use weft_xds::proto;

use super::Cx;
use crate::config::{ConfigError, NodeInfo};

/// Lower-case domain text (or a wildcard's literal part) -> virtual host index.
type Names = HashMap<Box<[u8]>, usize>;

/// Wildcard literal parts grouped by their length, longest first.
type ByLength = Vec<(usize, Names)>;

/// Domains indexed for lookups by hash: one probe per exact form, one per distinct wildcard
/// length. Values are indexes into the table's virtual hosts.
#[derive(Debug, Default)]
pub(super) struct HostIndex {
    exact: Names,
    /// Short forms of cluster-local exact domains, tried after `exact`.
    short: Names,
    /// `*suffix` domains keyed by the suffix, grouped by suffix length, longest first.
    suffixes: ByLength,
    /// `prefix*` domains keyed by the prefix, grouped by prefix length, longest first.
    prefixes: ByLength,
    any: Option<usize>,
}

enum Domain {
    Any,
    Exact(String),
    Suffix(String),
    Prefix(String),
}

impl HostIndex {
    pub(super) fn build(
        virtual_hosts: &[proto::VirtualHost],
        cx: &Cx<'_>,
    ) -> Result<HostIndex, ConfigError> {
        let mut index = HostIndex::default();
        // Envoy rejects a domain served by two virtual hosts; remember where each was first seen.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut short = ShortNames::new(cx.node);
        for (v, vh) in virtual_hosts.iter().enumerate() {
            if vh.domains.is_empty() {
                return Err(cx.error(
                    format!("virtualHosts[{v}].domains"),
                    "at least one domain is required",
                ));
            }
            for (d, raw) in vh.domains.iter().enumerate() {
                let at = format!("virtualHosts[{v}].domains[{d}]");
                let lowered = raw.to_ascii_lowercase();
                if let Some(first) = seen.insert(lowered.clone(), v) {
                    return Err(cx.error(
                        at,
                        format!("domain {raw:?} is already served by virtualHosts[{first}]"),
                    ));
                }
                match parse_domain(lowered).map_err(|reason| cx.error(at, reason))? {
                    Domain::Any => index.any = Some(v),
                    Domain::Exact(name) => {
                        short.add(&name, v);
                        index.exact.insert(name.into_bytes().into(), v);
                    }
                    Domain::Suffix(suffix) => insert_by_len(&mut index.suffixes, suffix, v),
                    Domain::Prefix(prefix) => insert_by_len(&mut index.prefixes, prefix, v),
                }
            }
        }
        index.short = short.forms;
        Ok(index)
    }

    /// The virtual host for `authority`, or `None` when no domain matches it.
    pub(super) fn find(&self, authority: &str) -> Option<usize> {
        let host_len = split_port(authority).0.len();
        // Lower-case without allocating for any authority a client sends in practice.
        let mut stack = [0u8; 256];
        let heap: Vec<u8>;
        let raw = authority.as_bytes();
        let full: &[u8] = if !raw.iter().any(u8::is_ascii_uppercase) {
            raw
        } else if let Some(buf) = stack.get_mut(..raw.len()) {
            buf.copy_from_slice(raw);
            buf.make_ascii_lowercase();
            buf
        } else {
            heap = raw.to_ascii_lowercase();
            &heap
        };
        // Lower-casing ASCII keeps byte offsets, so the port split carries over.
        let host = full.get(..host_len).unwrap_or(full);
        // The authority as sent first (a domain with its port is the more specific), then
        // without the port; only the first when there is no port.
        let forms: &[&[u8]] = if host.len() == full.len() {
            &[full][..]
        } else {
            &[full, host][..]
        };

        for map in [&self.exact, &self.short] {
            if let Some(&v) = forms.iter().find_map(|f| map.get(*f)) {
                return Some(v);
            }
        }
        for (len, map) in &self.suffixes {
            // A wildcard stands for at least one character: `*.a.com` does not match `.a.com`.
            let hit = forms
                .iter()
                .filter(|f| f.len() > *len)
                .find_map(|f| map.get(f.get(f.len() - len..)?));
            if let Some(&v) = hit {
                return Some(v);
            }
        }
        for (len, map) in &self.prefixes {
            let hit = forms
                .iter()
                .filter(|f| f.len() > *len)
                .find_map(|f| map.get(f.get(..*len)?));
            if let Some(&v) = hit {
                return Some(v);
            }
        }
        self.any
    }
}

/// A lower-cased domain, classified as Envoy classifies it.
fn parse_domain(domain: String) -> Result<Domain, String> {
    if domain.is_empty() {
        return Err("domain cannot be empty".into());
    }
    if let Some(b) = domain.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "domain {domain:?} contains {:?}, which cannot appear in an authority",
            char::from(b)
        ));
    }
    if domain == "*" {
        return Ok(Domain::Any);
    }
    let wildcard_error =
        || format!("domain {domain:?}: a wildcard `*` may only start or end a domain");
    if let Some(suffix) = domain.strip_prefix('*') {
        if suffix.contains('*') {
            return Err(wildcard_error());
        }
        return Ok(Domain::Suffix(suffix.to_owned()));
    }
    if let Some(prefix) = domain.strip_suffix('*') {
        if prefix.contains('*') {
            return Err(wildcard_error());
        }
        return Ok(Domain::Prefix(prefix.to_owned()));
    }
    if domain.contains('*') {
        return Err(wildcard_error());
    }
    Ok(Domain::Exact(domain))
}

fn insert_by_len(groups: &mut ByLength, key: String, v: usize) {
    let len = key.len();
    // Longest first: the most specific wildcard wins.
    let at = groups.partition_point(|(l, _)| *l > len);
    if groups.get(at).is_none_or(|(l, _)| *l != len) {
        groups.insert(at, (len, HashMap::new()));
    }
    if let Some((_, map)) = groups.get_mut(at) {
        map.insert(key.into_bytes().into(), v);
    }
}

/// Splits `host:port` into the host and the port text. IPv6 literals keep their brackets
/// (`[::1]:80` -> `[::1]`, `80`); a bare IPv6 address has no port.
pub(crate) fn split_port(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority
            .rfind(':')
            .filter(|&i| !authority[..i].contains(':'))
    };
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

/// The short forms Kubernetes DNS resolves from a pod in `node.namespace`
/// (search path `<ns>.svc.<domain> svc.<domain> <domain>`), for each cluster-local domain.
struct ShortNames<'n> {
    node: &'n NodeInfo,
    /// `.svc.cluster.local`
    svc_suffix: String,
    forms: Names,
}

impl<'n> ShortNames<'n> {
    fn new(node: &'n NodeInfo) -> Self {
        ShortNames {
            node,
            svc_suffix: format!(".svc.{}", node.cluster_domain.to_ascii_lowercase()),
            forms: HashMap::new(),
        }
    }

    /// Records the short forms of `domain` (lower-case, maybe with a port) if it is
    /// `<service>.<namespace>.svc.<cluster domain>`.
    fn add(&mut self, domain: &str, v: usize) {
        if self.node.cluster_domain.is_empty() {
            return;
        }
        let (name, port) = split_port(domain);
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let Some(service_ns) = name.strip_suffix(self.svc_suffix.as_str()) else {
            return;
        };
        let Some((service, namespace)) = service_ns.split_once('.') else {
            return;
        };
        if service.is_empty() || namespace.is_empty() || namespace.contains('.') {
            return;
        }
        let mut forms = vec![
            format!("{service}.{namespace}.svc{port}"),
            format!("{service}.{namespace}{port}"),
        ];
        if namespace.eq_ignore_ascii_case(&self.node.namespace) {
            forms.push(format!("{service}{port}"));
        }
        for form in forms {
            // Each FQDN appears once (duplicates are rejected), so forms cannot collide.
            if let Entry::Vacant(e) = self.forms.entry(form.into_bytes().into()) {
                e.insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_split_off_hosts_and_ipv6_literals() {
        let cases = [
            ("reviews", ("reviews", None)),
            ("reviews:9080", ("reviews", Some("9080"))),
            ("[::1]:8080", ("[::1]", Some("8080"))),
            ("[::1]", ("[::1]", None)),
            ("::1", ("::1", None)),
            ("a:", ("a", Some(""))),
            ("", ("", None)),
        ];
        for (authority, want) in cases {
            assert_eq!(split_port(authority), want, "{authority:?}");
        }
    }

    #[test]
    fn domains_classify_like_envoy() {
        let kind = |d: &str| match parse_domain(d.into()) {
            Ok(Domain::Any) => "any".to_string(),
            Ok(Domain::Exact(s)) => format!("exact {s}"),
            Ok(Domain::Suffix(s)) => format!("suffix {s}"),
            Ok(Domain::Prefix(s)) => format!("prefix {s}"),
            Err(e) => format!("error {e}"),
        };
        assert_eq!(kind("*"), "any");
        assert_eq!(kind("a.com"), "exact a.com");
        assert_eq!(kind("*.a.com"), "suffix .a.com");
        assert_eq!(kind("*-b.a.com"), "suffix -b.a.com");
        assert_eq!(kind("www.*"), "prefix www.");
        assert!(kind("a.*.com").starts_with("error"));
        assert!(kind("*a*").starts_with("error"));
        assert!(kind("a com").starts_with("error"));
        assert!(kind("").starts_with("error"));
    }
}
