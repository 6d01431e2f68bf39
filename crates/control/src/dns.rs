//! DNS names in the registry and what they resolved to.
//!
//! ServiceEntries with `resolution: DNS` or `DNS_ROUND_ROBIN` name their endpoints by DNS
//! (or, without endpoints, by their own host). Envoy resolves such names in every proxy
//! (STRICT_DNS / LOGICAL_DNS clusters); weft resolves them once, in the control plane
//! (`server::dns`, every `dnsRefreshRate`), and sends proxies the addresses as ordinary
//! endpoints: one per address for `DNS` (STRICT_DNS), the first address for `DNS_ROUND_ROBIN`
//! (LOGICAL_DNS). This module is the pure part: which names to resolve and the table of
//! answers translation reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::registry::{Registry, Resolution, Service};

/// The answers of the last resolution, by name: the addresses, or why there are none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsTable {
    answers: BTreeMap<String, Result<Vec<IpAddr>, String>>,
}

impl DnsTable {
    pub fn insert(&mut self, name: String, answer: Result<Vec<IpAddr>, String>) {
        self.answers.insert(name, answer);
    }

    /// `None`: not resolved yet.
    pub fn get(&self, name: &str) -> Option<&Result<Vec<IpAddr>, String>> {
        self.answers.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.answers.keys().map(String::as_str)
    }
}

/// Whether `svc`'s endpoints are named by DNS and resolved for the proxies.
pub fn resolves_by_dns(svc: &Service) -> bool {
    matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
}

/// Every name the registry's DNS services use.
pub fn names(registry: &Registry) -> BTreeSet<String> {
    registry
        .services()
        .iter()
        .filter(|s| resolves_by_dns(s))
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.address.parse::<IpAddr>().is_err())
        .map(|e| e.address.clone())
        .collect()
}

/// The addresses an endpoint of `svc` at `address` stands for: itself when it is an IP; for a
/// DNS name, its answer in `table` (all of it for `DNS`, the first address for
/// `DNS_ROUND_ROBIN`), nothing when it has none (yet).
pub fn endpoint_addresses(svc: &Service, address: &str, table: &DnsTable) -> Vec<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return vec![ip];
    }
    if !resolves_by_dns(svc) {
        return Vec::new();
    }
    match table.get(address) {
        Some(Ok(ips)) if svc.resolution == Resolution::DnsRoundRobin => {
            ips.iter().take(1).copied().collect()
        }
        Some(Ok(ips)) => ips.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::load_str;

    fn registry(yaml: &str) -> Registry {
        let loaded = load_str("t.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        Registry::build(&loaded.resources, Vec::new())
    }

    const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: a.example.net}, {address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: own-host, namespace: default}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: default}
spec:
  hosts: [s.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"#;

    #[test]
    fn dns_services_name_their_endpoints_or_their_host() {
        let reg = registry(ENTRIES);
        let names: Vec<String> = names(&reg).into_iter().collect();
        assert_eq!(names, ["a.example.net", "db.example.com"]);
    }

    #[test]
    fn answers_become_addresses_per_resolution() {
        let reg = registry(ENTRIES);
        let svc = |host: &str| reg.by_host(host).next().cloned().expect(host);
        let mut table = DnsTable::default();
        let ips: Vec<IpAddr> = vec!["10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap()];
        table.insert("a.example.net".into(), Ok(ips.clone()));
        table.insert("db.example.com".into(), Ok(ips.clone()));
        let api = svc("api.example.com");
        assert_eq!(endpoint_addresses(&api, "a.example.net", &table), ips);
        assert_eq!(
            endpoint_addresses(&api, "10.0.0.9", &table),
            ["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        // DNS_ROUND_ROBIN (Envoy's LOGICAL_DNS) connects to the first address.
        let db = svc("db.example.com");
        assert_eq!(endpoint_addresses(&db, "db.example.com", &table), ips[..1]);
        // Unresolved or failed names stand for nothing.
        table.insert("a.example.net".into(), Err("no such host".into()));
        assert!(endpoint_addresses(&api, "a.example.net", &table).is_empty());
        assert!(endpoint_addresses(&api, "b.example.net", &table).is_empty());
    }
}
