//! The load-balancing part of a DestinationRule's traffic policy: the algorithm, consistent
//! hashing, locality-aware and zone-aware balancing, and slow start of new endpoints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::duration;
use crate::Duration;
use crate::networking::gateway::is_default;
use crate::validate::{Cx, Validate, rules};

/// How requests are spread over the endpoints. `simple`, `consistentHash` and
/// `backendUtilization` are alternatives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Hash a request property for soft session affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Weight endpoints by the load they report (ORCA utilization metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilization>,
    /// Locality-weighted distribution and failover. Replaces the mesh-wide setting entirely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Envoy's zone-aware routing. Only one of this and `localityLbSetting` may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// Deprecated form of `warmup.duration`: how long a new endpoint ramps up its traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start: new endpoints get progressively more traffic over a window (ROUND_ROBIN and
    /// LEAST_REQUEST only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Utilization-based balancing: endpoints report their load (ORCA metrics) and are weighted by
/// it. Durations default to Envoy's (update 1s, expiration 3m, stabilization 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilization {
    /// Extra weight penalty for endpoints that answer errors, as a percentage of utilization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_utilization_penalty_percent: Option<u32>,
    /// Custom ORCA metric names to compute utilization from (default: CPU utilization).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_names_for_computing_utilization: Vec<String>,
    /// A weight not refreshed for this long reverts to the default (equal) weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<Duration>,
    /// How long after an endpoint first reports before its weight is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_stabilization_period: Option<Duration>,
    /// How often weights are recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<Duration>,
}

impl Validate for BackendUtilization {
    fn validate(&self, cx: &mut Cx) {
        for (name, d) in [
            ("weightExpirationPeriod", &self.weight_expiration_period),
            (
                "weightStabilizationPeriod",
                &self.weight_stabilization_period,
            ),
            ("weightUpdatePeriod", &self.weight_update_period),
        ] {
            cx.opt(name, d, |cx, d| cx.check(d.check()));
        }
        cx.field("metricNamesForComputingUtilization", |cx| {
            for (i, m) in self
                .metric_names_for_computing_utilization
                .iter()
                .enumerate()
            {
                if m.is_empty() {
                    cx.index(i, |cx| cx.error("metric name must not be empty"));
                }
            }
        });
    }
}

/// Load-balancing algorithms that need no tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio picks (LEAST_REQUEST).
    #[default]
    Unspecified,
    /// Deprecated alias of `LEAST_REQUEST`; Istio configures exactly the same balancer.
    LeastConn,
    Random,
    /// Forward to the original destination address, without load balancing.
    Passthrough,
    RoundRobin,
    /// Prefer endpoints with fewer outstanding requests.
    LeastRequest,
}

/// Consistent hashing: one hash key, and optionally the hash algorithm (ring hash by default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash this cookie (generated with `ttl` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash the source IP (TCP and HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated form of `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring; 1024 when unset.
    #[serde(default, skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size: a prime below 5000011 (Envoy's default is 65537).
    #[serde(default, skip_serializing_if = "is_default")]
    pub table_size: u64,
}

/// The cookie used as the hash key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name. Required.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Lifetime of a generated cookie; when set, the proxy generates the cookie if missing
    /// (`0s` makes it a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Slow start of new endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Length of the warm-up window. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Share of its full weight an endpoint starts with, in percent; 10 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// How fast traffic ramps up; 1.0 (linear) when unset, larger is faster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Locality-aware load balancing: weighted distribution between localities, or failover order.
/// Localities are `region/zone/subzone`, with a trailing `*` wildcard allowed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic from a locality split over target localities by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<Distribute>,
    /// Which region to fail over to when a region's endpoints are unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    /// Ordered labels (`key` or `key=value`) ranking endpoints by how many leading labels they
    /// share with the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Turn locality load balancing on or off for this destination, whatever the mesh says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribute {
    /// The originating locality.
    #[serde(default)]
    pub from: String,
    /// Target locality -> weight; weights are 1..100 and sum to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Fail over from one region to another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Envoy's zone-aware routing: prefer the client's zone in proportion to its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLoadBalancerSetting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Cross-region failover order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    /// Label-based priority tiers; region, zone and subzone labels are not allowed (handled
    /// automatically).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Hosts required in the local region for zone awareness; 6 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

impl LoadBalancerSettings {
    /// Istio's `validateLoadBalancer`. Failover settings need outlier detection in the same
    /// policy to have any effect.
    pub fn check(&self, cx: &mut Cx, has_outlier_detection: bool) {
        let policies = [
            self.simple.is_some(),
            self.consistent_hash.is_some(),
            self.backend_utilization.is_some(),
        ];
        if policies.iter().filter(|p| **p).count() > 1 {
            cx.error("only one of simple, consistentHash or backendUtilization may be set");
        }
        cx.opt("backendUtilization", &self.backend_utilization, |cx, b| {
            b.validate(cx)
        });
        if self.simple == Some(SimpleLb::LeastConn) {
            cx.field("simple", |cx| {
                cx.warn("LEAST_CONN is deprecated; use LEAST_REQUEST (Istio treats them the same)")
            });
        }
        cx.opt("consistentHash", &self.consistent_hash, |cx, h| {
            h.validate(cx)
        });

        if self.locality_lb_setting.is_some() && self.zone_aware_lb_setting.is_some() {
            cx.error("only one of localityLbSetting or zoneAwareLbSetting may be set");
        }
        cx.opt("localityLbSetting", &self.locality_lb_setting, |cx, l| {
            l.check(cx, has_outlier_detection)
        });
        cx.opt(
            "zoneAwareLbSetting",
            &self.zone_aware_lb_setting,
            |cx, z| z.check(cx, has_outlier_detection),
        );

        if self.warmup_duration_secs.is_some() {
            cx.deprecated("warmupDurationSecs", "`warmup.duration`");
            if self.warmup.is_some() {
                cx.error("only one of warmupDurationSecs or warmup may be set");
            }
        }
        duration(cx, "warmupDurationSecs", &self.warmup_duration_secs);
        if let Some(warmup) = &self.warmup {
            cx.field("warmup", |cx| warmup.validate(cx));
        }
        let warms = self.warmup.is_some() || self.warmup_duration_secs.is_some();
        let warmup_lb = self.consistent_hash.is_none()
            && !matches!(self.simple, Some(SimpleLb::Random | SimpleLb::Passthrough));
        if warms && !warmup_lb {
            let field = if self.warmup.is_some() {
                "warmup"
            } else {
                "warmupDurationSecs"
            };
            cx.field(field, |cx| {
                cx.warn(
                    "warmup only works with ROUND_ROBIN and LEAST_REQUEST load balancing; \
                     it is ignored here",
                )
            });
        }
    }
}

impl Validate for WarmupConfiguration {
    fn validate(&self, cx: &mut Cx) {
        match &self.duration {
            None => cx.error_at("duration", "duration is required"),
            Some(d) => cx.check_at("duration", d.check()),
        }
        if let Some(p) = self.minimum_percent {
            cx.check_at("minimumPercent", rules::percentage(p));
        }
        if let Some(a) = self.aggression
            && a <= 0.0
        {
            cx.error_at(
                "aggression",
                format!("aggression {a} must be greater than 0"),
            );
        }
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, cx: &mut Cx) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => cx.warn(
                "consistentHash has no hash key (httpHeaderName, httpCookie, useSourceIp or \
                 httpQueryParameterName), so requests are not hashed",
            ),
            1 => {}
            _ => cx.error(
                "only one hash key may be set: httpHeaderName, httpCookie, useSourceIp or \
                 httpQueryParameterName",
            ),
        }
        if self.http_header_name.as_deref() == Some("") {
            cx.error_at("httpHeaderName", "httpHeaderName must not be empty");
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            cx.error_at(
                "httpQueryParameterName",
                "httpQueryParameterName must not be empty",
            );
        }
        cx.opt("httpCookie", &self.http_cookie, |cx, c| c.validate(cx));

        let algorithm = self.ring_hash.is_some() || self.maglev.is_some();
        if self.ring_hash.is_some() && self.maglev.is_some() {
            cx.error("only one of ringHash or maglev may be set");
        }
        if self.minimum_ring_size != 0 {
            cx.deprecated("minimumRingSize", "`ringHash.minimumRingSize`");
            if algorithm {
                cx.error_at(
                    "minimumRingSize",
                    "minimumRingSize cannot be set together with ringHash or maglev",
                );
            }
        }
        cx.opt("maglev", &self.maglev, |cx, m| {
            cx.field("tableSize", |cx| match m.table_size {
                0 => cx.error("tableSize is required for maglev"),
                n if n >= 5_000_011 => {
                    cx.error(format!("maglev tableSize {n} must be less than 5000011"))
                }
                n if !is_prime(n) => {
                    cx.error(format!("maglev tableSize {n} must be a prime number"))
                }
                _ => {}
            })
        });
    }
}

/// Trial division, as Envoy checks a Maglev table size.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut f = 3;
    while f * f <= n {
        if n.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

impl Validate for HttpCookie {
    fn validate(&self, cx: &mut Cx) {
        if self.name.is_empty() {
            cx.error_at("name", "cookie name is required");
        }
        cx.opt("ttl", &self.ttl, |cx, d| cx.check(d.get().map(|_| ())));
        let mut names = BTreeSet::new();
        cx.field("attributes", |cx| {
            for (i, a) in self.attributes.iter().enumerate() {
                cx.index(i, |cx| {
                    if a.name.is_empty() {
                        cx.error_at("name", "cookie attribute name is required");
                    } else if !names.insert(a.name.as_str()) {
                        cx.error_at("name", format!("duplicate cookie attribute {:?}", a.name));
                    }
                });
            }
        });
    }
}

impl LocalityLoadBalancerSetting {
    /// Istio's `ValidateLocalityLbSetting`.
    pub fn check(&self, cx: &mut Cx, has_outlier_detection: bool) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            cx.error("distribute and failover cannot both be set");
        }
        if !self.failover.is_empty() {
            cx.field("failoverPriority", |cx| {
                for (i, label) in self.failover_priority.iter().enumerate() {
                    if TOPOLOGY_LABELS.contains(&label.as_str()) {
                        cx.index(i, |cx| {
                            cx.error(format!(
                                "{label} cannot be used in failoverPriority together with failover"
                            ))
                        });
                    }
                }
            });
        }

        cx.field("distribute", |cx| {
            for (i, d) in self.distribute.iter().enumerate() {
                cx.index(i, |cx| d.validate(cx));
            }
        });
        let froms: Vec<&str> = self.distribute.iter().map(|d| d.from.as_str()).collect();
        for (i, problem) in locality_problems(&froms) {
            cx.field("distribute", |cx| {
                cx.index(i, |cx| cx.error_at("from", problem))
            });
        }

        if (!self.failover.is_empty() || !self.failover_priority.is_empty())
            && !has_outlier_detection
        {
            cx.warn(
                "failover needs outlierDetection in the same traffic policy: without it unhealthy \
                 endpoints are never detected",
            );
        }
        cx.field("failover", |cx| {
            for (i, f) in self.failover.iter().enumerate() {
                cx.index(i, |cx| check_failover(cx, f));
            }
        });
    }
}

impl Validate for Distribute {
    fn validate(&self, cx: &mut Cx) {
        cx.field("to", |cx| {
            let mut total: u64 = 0;
            let mut in_range = true;
            for (locality, weight) in &self.to {
                if !(1..=100).contains(weight) {
                    in_range = false;
                    cx.key(locality, |cx| {
                        cx.error(format!("locality weight {weight} must be in range 1..100"))
                    });
                }
                total += u64::from(*weight);
            }
            if in_range && total != 100 {
                cx.error(format!("locality weights must sum to 100, not {total}"));
            }
            let targets: Vec<&str> = self.to.keys().map(String::as_str).collect();
            for (i, problem) in locality_problems(&targets) {
                cx.key(targets[i], |cx| cx.error(problem));
            }
        });
    }
}

fn check_failover(cx: &mut Cx, f: &Failover) {
    if f.from == f.to {
        cx.error(format!(
            "failover must go to a different region, not from {:?} to itself",
            f.from
        ));
    }
    for (name, region) in [("from", &f.from), ("to", &f.to)] {
        if region.contains('/') {
            cx.error_at(
                name,
                format!("{region:?}: failover names a region only (no '/')"),
            );
        }
        if region.contains('*') {
            cx.error_at(
                name,
                format!("{region:?}: failover regions cannot contain '*'"),
            );
        }
    }
}

/// Istio's `validateLocalities`: each locality is `region[/zone[/subzone]]` with at most one
/// `*`, at the end, and no two localities overlap. Returns `(index, problem)` pairs.
fn locality_problems(localities: &[&str]) -> Vec<(usize, String)> {
    // region -> zone -> subzones; `*` marks a wildcard level.
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, &locality) in localities.iter().enumerate() {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            problems.push((
                i,
                format!("locality {locality:?}: at most one '*', and only at the end"),
            ));
            continue;
        }
        let overlap = || {
            (
                i,
                format!("locality {locality:?} overlaps with an earlier one"),
            )
        };
        if seen.contains_key("*") {
            problems.push(overlap());
            continue;
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            problems.push((
                i,
                format!("locality {locality:?} has an empty region, zone or subzone"),
            ));
            continue;
        }
        let star_zone = || BTreeMap::from([("*", BTreeSet::from(["*"]))]);
        match parts[..] {
            [region] => {
                if seen.contains_key(region) {
                    problems.push(overlap());
                } else {
                    seen.insert(region, star_zone());
                }
            }
            [region, zone] => match seen.get_mut(region) {
                Some(zones) if zones.contains_key("*") || zones.contains_key(zone) => {
                    problems.push(overlap())
                }
                Some(zones) => {
                    zones.insert(zone, BTreeSet::from(["*"]));
                }
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from(["*"]))]));
                }
            },
            [region, zone, subzone] => match seen.get_mut(region) {
                Some(zones) if zones.contains_key("*") => problems.push(overlap()),
                Some(zones) => match zones.get_mut(zone) {
                    Some(subzones) if subzones.contains("*") || subzones.contains(subzone) => {
                        problems.push(overlap())
                    }
                    Some(subzones) => {
                        subzones.insert(subzone);
                    }
                    None => {
                        zones.insert(zone, BTreeSet::from([subzone]));
                    }
                },
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from([subzone]))]));
                }
            },
            _ => {}
        }
    }
    problems
}

impl ZoneAwareLoadBalancerSetting {
    /// Istio's `ValidateZoneAwareLbSetting`.
    pub fn check(&self, cx: &mut Cx, has_outlier_detection: bool) {
        cx.field("failoverPriority", |cx| {
            for (i, label) in self.failover_priority.iter().enumerate() {
                if TOPOLOGY_LABELS.contains(&label.as_str()) {
                    cx.index(i, |cx| {
                        cx.error(format!(
                            "{label} cannot be used with zone-aware load balancing: region, zone \
                             and subzone routing are automatic"
                        ))
                    });
                }
            }
        });
        if (!self.failover.is_empty() || !self.failover_priority.is_empty())
            && !has_outlier_detection
        {
            cx.warn(
                "failover needs outlierDetection in the same traffic policy: without it unhealthy \
                 endpoints are never detected",
            );
        }
        cx.field("failover", |cx| {
            for (i, f) in self.failover.iter().enumerate() {
                cx.index(i, |cx| check_failover(cx, f));
            }
        });
        if self.min_cluster_size == Some(0) {
            cx.error_at("minClusterSize", "minClusterSize must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networking::destination_rule::tests::check;
    use crate::validate::test_support::errors;

    #[test]
    fn invalid_load_balancer() {
        let lb = "spec.trafficPolicy.loadBalancer";
        let ch = "spec.trafficPolicy.loadBalancer.consistentHash";
        let cases: &[(String, Vec<(String, &str)>)] = &[
            (
                "{simple: RANDOM, consistentHash: {useSourceIp: true}}".into(),
                vec![(lb.into(), "only one of simple, consistentHash or backendUtilization")],
            ),
            (
                "{consistentHash: {useSourceIp: true, httpHeaderName: x-user}}".into(),
                vec![(ch.into(), "only one hash key")],
            ),
            (
                "{consistentHash: {httpHeaderName: '', ringHash: {}, maglev: {tableSize: 65537}}}".into(),
                vec![(format!("{ch}.httpHeaderName"), "must not be empty"), (ch.into(), "only one of ringHash or maglev")],
            ),
            (
                "{consistentHash: {useSourceIp: true, minimumRingSize: 1024, ringHash: {minimumRingSize: 10}}}".into(),
                vec![(format!("{ch}.minimumRingSize"), "cannot be set together")],
            ),
            (
                "{consistentHash: {useSourceIp: true, maglev: {}}}".into(),
                vec![(format!("{ch}.maglev.tableSize"), "required")],
            ),
            (
                "{consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}".into(),
                vec![(format!("{ch}.maglev.tableSize"), "prime")],
            ),
            (
                "{consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}".into(),
                vec![(format!("{ch}.maglev.tableSize"), "less than 5000011")],
            ),
            (
                "{consistentHash: {httpQueryParameterName: ''}}".into(),
                vec![(format!("{ch}.httpQueryParameterName"), "must not be empty")],
            ),
            (
                "{consistentHash: {httpCookie: {ttl: 10x, attributes: [{name: a}, {name: a}, {value: v}]}}}".into(),
                vec![
                    (format!("{ch}.httpCookie.name"), "cookie name is required"),
                    (format!("{ch}.httpCookie.ttl"), "invalid duration"),
                    (format!("{ch}.httpCookie.attributes[1].name"), "duplicate cookie attribute"),
                    (format!("{ch}.httpCookie.attributes[2].name"), "required"),
                ],
            ),
            (
                "{simple: ROUND_ROBIN, warmupDurationSecs: 10s, warmup: {duration: 10s}}".into(),
                vec![(lb.into(), "only one of warmupDurationSecs or warmup")],
            ),
            (
                "{warmup: {minimumPercent: 120, aggression: 0}}".into(),
                vec![
                    (format!("{lb}.warmup.duration"), "duration is required"),
                    (format!("{lb}.warmup.minimumPercent"), "0..100"),
                    (format!("{lb}.warmup.aggression"), "greater than 0"),
                ],
            ),
            ("{warmupDurationSecs: 0s}".into(), vec![(format!("{lb}.warmupDurationSecs"), "at least 1ms")]),
            (
                "{localityLbSetting: {enabled: true}, zoneAwareLbSetting: {enabled: true}}".into(),
                vec![(lb.into(), "only one of localityLbSetting or zoneAwareLbSetting")],
            ),
        ];
        for (settings, want) in cases {
            let yaml = format!("host: r\ntrafficPolicy:\n  loadBalancer: {settings}\n");
            let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
            check(&[(&yaml, &want)], errors);
        }
    }

    #[test]
    fn invalid_locality() {
        let l = "spec.trafficPolicy.loadBalancer.localityLbSetting";
        let z = "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting";
        let cases: &[(&str, Vec<(String, &str)>)] = &[
            (
                "localityLbSetting: {distribute: [{from: a, to: {a: 100}}], failover: [{from: a, to: b}]}",
                vec![(l.into(), "distribute and failover cannot both be set")],
            ),
            (
                "localityLbSetting: {failover: [{from: a, to: b}], failoverPriority: [topology.kubernetes.io/region, version]}",
                vec![(format!("{l}.failoverPriority[0]"), "together with failover")],
            ),
            (
                "localityLbSetting: {distribute: [{from: a, to: {x: 0, y: 101}}, {from: b, to: {x: 30, y: 60}}]}",
                vec![
                    (format!("{l}.distribute[0].to[x]"), "1..100"),
                    (format!("{l}.distribute[0].to[y]"), "1..100"),
                    (format!("{l}.distribute[1].to"), "sum to 100, not 90"),
                ],
            ),
            (
                "localityLbSetting: {distribute: [{from: 'us-west/*', to: {us-west/z1: 50, 'us-west/*': 50}}, {from: us-west/z1, to: {a: 100}}, {from: 'a/*/c', to: {'a//c': 100}}]}",
                vec![
                    (format!("{l}.distribute[0].to[us-west/z1]"), "overlaps"),
                    (
                        format!("{l}.distribute[2].to[a//c]"),
                        "empty region, zone or subzone",
                    ),
                    (format!("{l}.distribute[1].from"), "overlaps"),
                    (format!("{l}.distribute[2].from"), "only at the end"),
                ],
            ),
            (
                "localityLbSetting: {failover: [{from: us-east, to: us-east}, {from: us-east/z1, to: '*'}]}",
                vec![
                    (format!("{l}.failover[0]"), "different region"),
                    (format!("{l}.failover[1].from"), "region only"),
                    (format!("{l}.failover[1].to"), "cannot contain '*'"),
                ],
            ),
            (
                "zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/zone], failover: [{from: a/b, to: c}], minClusterSize: 0}",
                vec![
                    (format!("{z}.failoverPriority[0]"), "automatic"),
                    (format!("{z}.failover[0].from"), "region only"),
                    (format!("{z}.minClusterSize"), "at least 1"),
                ],
            ),
        ];
        for (settings, want) in cases {
            let yaml = format!(
                "host: r\ntrafficPolicy:\n  outlierDetection: {{interval: 1s}}\n  loadBalancer: {{{settings}}}\n"
            );
            let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
            check(&[(&yaml, &want)], errors);
        }
    }

    #[test]
    fn locality_overlap_rules() {
        let cases: &[(&[&str], &[usize])] = &[
            (
                &["us-west", "us-east/z1", "us-east/z2/s1", "us-east/z2/s2"],
                &[],
            ),
            (&["*", "us-west"], &[1]),
            (&["us-west", "us-west/z1"], &[1]),
            (&["us-west/*", "us-west/z1/s1"], &[1]),
            (&["us-west/z1/*", "us-west/z1/s1"], &[1]),
            (&["us-west/z1/s1", "us-west/z1/s1"], &[1]),
            (&["us-west/z1/s1/extra"], &[]),
            (&["us-*/z1", "/z1", "*/*"], &[0, 1, 2]),
        ];
        for (localities, bad) in cases {
            let got: Vec<usize> = locality_problems(localities)
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            assert_eq!(&got, bad, "{localities:?}");
        }
    }
}
