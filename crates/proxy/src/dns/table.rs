//! The DNS table of a listener: the names the proxy answers itself, checked and indexed
//! when config arrives, and how a question finds its host (exact name, search-expanded name,
//! wildcard), as Istio's DNS proxy looks names up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use weft_xds::proto;

use crate::config::ConfigError;

/// Istio's upstream timeout (its DNS proxy's client dials, reads and writes within 5s).
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses of one host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Host {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// A listener's table, with where names outside it go.
#[derive(Debug)]
pub struct Table {
    /// Lower-case names without the final dot (names and aliases alike).
    exact: HashMap<String, Arc<Host>>,
    /// `*.example.com` under `example.com`.
    wildcards: HashMap<String, Arc<Host>>,
    /// The first search domain (lower case, no dots at the ends): what a client's resolver
    /// appends first to a name with fewer dots than its `ndots`.
    search: Option<String>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
}

/// A question's host in the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// Set when the question was a table name with the search domain appended: the answer
    /// is a CNAME to this name, then its addresses.
    pub cname: Option<&'a str>,
    pub host: &'a Host,
}

impl Table {
    /// Checks and indexes `dns`; `resource` names the listener in errors, fields are under
    /// `dns.`. Upstreams and search domains left empty are read from `resolv_conf`.
    pub fn build(
        dns: &proto::DnsListener,
        resource: &str,
        resolv_conf: impl FnOnce() -> super::resolv::ResolvConf,
    ) -> Result<Table, ConfigError> {
        let err = |field: String, reason: String| ConfigError::new(resource, field, reason);
        let mut exact: HashMap<String, Arc<Host>> = HashMap::new();
        let mut wildcards: HashMap<String, Arc<Host>> = HashMap::new();
        // Where each name was defined, for a duplicate's message.
        let mut defined: HashMap<String, String> = HashMap::new();
        for (i, n) in dns.names.iter().enumerate() {
            let host = Arc::new(host(n, i).map_err(|(f, r)| err(f, r))?);
            let names = std::iter::once((format!("dns.names[{i}].name"), &n.name)).chain(
                n.aliases
                    .iter()
                    .enumerate()
                    .map(|(j, a)| (format!("dns.names[{i}].aliases[{j}]"), a)),
            );
            for (field, name) in names {
                let wildcard = name.strip_prefix("*.");
                let checked = wildcard.unwrap_or(name);
                // A fully qualified name may be written with its final dot.
                let checked = checked.strip_suffix('.').unwrap_or(checked);
                if let Err(why) = check_name(checked) {
                    return Err(err(field, format!("{name:?} {why}")));
                }
                let key = normalize(name);
                if let Some(first) = defined.get(&key) {
                    return Err(err(
                        field,
                        format!("{name:?} is already defined by {first}"),
                    ));
                }
                defined.insert(key.clone(), field);
                match key.strip_prefix("*.") {
                    Some(suffix) => wildcards.insert(suffix.to_owned(), host.clone()),
                    None => exact.insert(key, host.clone()),
                };
            }
        }
        let mut upstreams = Vec::new();
        for (i, u) in dns.upstreams.iter().enumerate() {
            let a: SocketAddr = u.parse().map_err(|_| {
                err(
                    format!("dns.upstreams[{i}]"),
                    format!("{u:?} is not ip:port"),
                )
            })?;
            upstreams.push(a);
        }
        for (i, s) in dns.search.iter().enumerate() {
            check_name(s.strip_suffix('.').unwrap_or(s))
                .map_err(|why| err(format!("dns.search[{i}]"), format!("{s:?} {why}")))?;
        }
        let mut search: Vec<String> = dns.search.iter().map(|s| normalize(s)).collect();
        if upstreams.is_empty() || search.is_empty() {
            let conf = resolv_conf();
            if upstreams.is_empty() {
                upstreams = conf.nameservers;
                if upstreams.is_empty() {
                    tracing::warn!(
                        listener = resource,
                        "DNS: no upstream resolver (none configured, none in /etc/resolv.conf): names outside the table get SERVFAIL"
                    );
                }
            }
            if search.is_empty() {
                search = conf.search;
            }
        }
        let upstream_timeout = match &dns.upstream_timeout {
            None => DEFAULT_UPSTREAM_TIMEOUT,
            Some(d) => {
                let field = "dns.upstreamTimeout";
                let d = crate::config::duration(d, resource, field)?;
                if d.is_zero() {
                    return Err(err(field.into(), "must be more than 0".into()));
                }
                d
            }
        };
        Ok(Table {
            exact,
            wildcards,
            search: search.into_iter().next(),
            upstreams,
            upstream_timeout,
        })
    }

    /// The host a question for `name` (any case, with or without the final dot) is about,
    /// None when the name is not the proxy's to answer. In Istio's order: the name itself;
    /// the name less the first search domain (answered with a CNAME); a wildcard covering
    /// the name, the closest first.
    pub fn lookup(&self, name: &str) -> Option<Found<'_>> {
        let name = normalize(name);
        if let Some(host) = self.exact.get(&name) {
            return Some(Found { cname: None, host });
        }
        if let Some(search) = &self.search
            && let Some(stripped) = name
                .strip_suffix(search.as_str())
                .and_then(|n| n.strip_suffix('.'))
            && let Some((target, host)) = self.exact.get_key_value(stripped)
        {
            return Some(Found {
                cname: Some(target),
                host,
            });
        }
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(host) = self.wildcards.get(parent) {
                return Some(Found { cname: None, host });
            }
            rest = parent;
        }
        None
    }

    /// How many names (aliases included) the table holds.
    pub fn name_count(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }
}

/// Lower case, without the final dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The addresses of `names[i]`, each an IP address.
fn host(n: &proto::DnsName, i: usize) -> Result<Host, (String, String)> {
    if n.addresses.is_empty() {
        return Err((
            format!("dns.names[{i}].addresses"),
            "at least one address is required".into(),
        ));
    }
    let mut host = Host::default();
    for (j, a) in n.addresses.iter().enumerate() {
        match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => host.v4.push(v4),
            Ok(IpAddr::V6(v6)) => host.v6.push(v6),
            Err(_) => {
                let why = if a.contains('/') {
                    "is a CIDR block; only IP addresses can be answered"
                } else {
                    "is not an IP address"
                };
                return Err((
                    format!("dns.names[{i}].addresses[{j}]"),
                    format!("{a:?} {why}"),
                ));
            }
        }
    }
    Ok(host)
}

/// A DNS name as DNS carries it: labels of 1 to 63 letters, digits, `-` or `_`, 253
/// characters at most.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("is not a DNS name (labels of 1 to 63 letters, digits, '-' or '_')")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::resolv::ResolvConf;

    fn name(n: &str, aliases: &[&str], addresses: &[&str]) -> proto::DnsName {
        proto::DnsName {
            name: n.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn listener(names: Vec<proto::DnsName>) -> proto::DnsListener {
        proto::DnsListener {
            names,
            upstreams: vec!["127.0.0.1:5353".into()],
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            upstream_timeout: None,
        }
    }

    fn no_resolv_conf() -> ResolvConf {
        panic!("resolv.conf read though upstreams and search are configured")
    }

    fn reviews() -> proto::DnsName {
        name(
            "reviews.default.svc.cluster.local",
            &["reviews", "reviews.default", "reviews.default.svc"],
            &["10.0.0.7", "fd00::7"],
        )
    }

    #[test]
    fn names_and_aliases_find_the_host_in_any_case_with_or_without_the_dot() {
        let t = Table::build(&listener(vec![reviews()]), "l", no_resolv_conf).unwrap();
        for q in [
            "reviews",
            "reviews.",
            "Reviews.Default",
            "reviews.default.svc",
            "reviews.default.svc.cluster.local.",
        ] {
            let found = t.lookup(q).unwrap_or_else(|| panic!("{q} not found"));
            assert_eq!(found.cname, None, "{q}");
            assert_eq!(found.host.v4, vec![Ipv4Addr::new(10, 0, 0, 7)]);
            assert_eq!(found.host.v6, vec!["fd00::7".parse::<Ipv6Addr>().unwrap()]);
        }
        assert_eq!(t.lookup("reviews.other"), None);
        assert_eq!(t.lookup("ratings.default.svc.cluster.local"), None);
        assert_eq!(t.name_count(), 4);
    }

    #[test]
    fn a_name_with_the_first_search_domain_appended_is_a_cname_to_the_name() {
        let t = Table::build(
            &listener(vec![
                reviews(),
                name("api.example.com", &[], &["240.240.0.9"]),
            ]),
            "l",
            no_resolv_conf,
        )
        .unwrap();
        let found = t
            .lookup("reviews.default.svc.cluster.local.default.svc.cluster.local.")
            .unwrap();
        assert_eq!(found.cname, Some("reviews.default.svc.cluster.local"));
        let found = t
            .lookup("API.example.com.default.svc.cluster.local")
            .unwrap();
        assert_eq!(found.cname, Some("api.example.com"));
        assert_eq!(found.host.v4, vec![Ipv4Addr::new(240, 240, 0, 9)]);
        // Only the first search domain, as Istio: the client stops at the first answer.
        assert_eq!(t.lookup("api.example.com.svc.cluster.local"), None);
        // A name outside the table with the search domain is not the proxy's.
        assert_eq!(t.lookup("www.google.com.default.svc.cluster.local"), None);
    }

    #[test]
    fn a_wildcard_covers_names_at_any_depth_below_it_but_not_itself() {
        let t = Table::build(
            &listener(vec![
                name("*.example.com", &[], &["192.0.2.1"]),
                name("*.eu.example.com", &[], &["192.0.2.2"]),
            ]),
            "l",
            no_resolv_conf,
        )
        .unwrap();
        let v4 = |q: &str| t.lookup(q).map(|f| f.host.v4.clone());
        assert_eq!(v4("a.example.com"), Some(vec![Ipv4Addr::new(192, 0, 2, 1)]));
        assert_eq!(
            v4("a.b.example.com"),
            Some(vec![Ipv4Addr::new(192, 0, 2, 1)])
        );
        assert_eq!(
            v4("a.eu.example.com"),
            Some(vec![Ipv4Addr::new(192, 0, 2, 2)])
        );
        assert_eq!(v4("example.com"), None);
    }

    #[test]
    fn bad_entries_are_refused_with_their_field() {
        let cases = [
            (
                listener(vec![name("a.com", &[], &["10.0.0.0/8"])]),
                "dns.names[0].addresses[0]",
                "CIDR",
            ),
            (
                listener(vec![name("a.com", &[], &["nope"])]),
                "dns.names[0].addresses[0]",
                "not an IP",
            ),
            (
                listener(vec![name("a.com", &[], &[])]),
                "dns.names[0].addresses",
                "at least one",
            ),
            (
                listener(vec![name("a..com", &[], &["10.0.0.1"])]),
                "dns.names[0].name",
                "not a DNS name",
            ),
            (
                listener(vec![reviews(), name("x.com", &["Reviews."], &["10.0.0.1"])]),
                "dns.names[1].aliases[0]",
                "already defined by dns.names[0].aliases[0]",
            ),
            (
                proto::DnsListener {
                    upstreams: vec!["10.0.0.1".into()],
                    ..listener(vec![])
                },
                "dns.upstreams[0]",
                "not ip:port",
            ),
            (
                proto::DnsListener {
                    upstream_timeout: Some(Default::default()),
                    ..listener(vec![])
                },
                "dns.upstreamTimeout",
                "more than 0",
            ),
        ];
        for (config, field, reason) in cases {
            let e = Table::build(&config, "listener \"dns\"", no_resolv_conf).unwrap_err();
            assert_eq!(e.resource, "listener \"dns\"");
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
    }

    #[test]
    fn upstreams_and_search_left_empty_come_from_resolv_conf() {
        let config = proto::DnsListener {
            names: vec![reviews()],
            ..Default::default()
        };
        let t = Table::build(&config, "l", || ResolvConf {
            nameservers: vec!["10.96.0.10:53".parse().unwrap()],
            search: vec!["default.svc.cluster.local".into()],
        })
        .unwrap();
        assert_eq!(
            t.upstreams,
            vec!["10.96.0.10:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            t.lookup("reviews.default.svc.cluster.local.default.svc.cluster.local")
                .is_some()
        );
        assert_eq!(t.upstream_timeout, Duration::from_secs(5));
    }
}
