//! What the DNS proxy needs of /etc/resolv.conf: the resolvers to forward to and the search
//! domains the workload's resolver appends (Istio's agent reads the same file, which the
//! workload shares with its sidecar).

use std::net::{IpAddr, SocketAddr};

/// Where resolv.conf is.
pub const PATH: &str = "/etc/resolv.conf";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, port 53, in order.
    pub nameservers: Vec<SocketAddr>,
    /// The last `search` (or `domain`) line's domains, lower case, without the final dot.
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Reads [`PATH`]; a missing or unreadable file is an empty one (logged).
    pub fn read() -> ResolvConf {
        match std::fs::read_to_string(PATH) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) => {
                tracing::warn!("DNS: cannot read {PATH}: {e}");
                ResolvConf::default()
            }
        }
    }

    /// As glibc reads it: comments start with `#` or `;`; the last of `search` and `domain`
    /// wins; a nameserver that is not an IP address is skipped; an IPv6 nameserver may carry
    /// a zone (`fe80::1%eth0`), which is dropped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let ip = words
                        .next()
                        .map(|w| w.split('%').next().unwrap_or(w))
                        .and_then(|w| w.parse::<IpAddr>().ok());
                    match ip {
                        Some(ip) => conf.nameservers.push(SocketAddr::new(ip, 53)),
                        None => tracing::debug!("DNS: {PATH}: skipped {line:?}"),
                    }
                }
                Some("search" | "domain") => {
                    conf.search = words
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|w| !w.is_empty())
                        .collect();
                }
                _ => {}
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_resolv_conf() {
        let conf = ResolvConf::parse(
            "# generated\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\noptions ndots:5\n",
        );
        assert_eq!(conf.nameservers, vec!["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(
            conf.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }

    #[test]
    fn comments_zones_bad_lines_and_the_last_search_line() {
        let conf = ResolvConf::parse(
            "nameserver 192.0.2.53 ; primary\nnameserver fe80::1%eth0\nnameserver resolver.local\n\
             search a.example\ndomain Corp.Example.\n#nameserver 10.0.0.1\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, ["corp.example"]);
    }
}
