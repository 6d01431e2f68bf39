//! Locality load balancing: Istio's `localityLbSetting` (a DestinationRule's
//! `trafficPolicy.loadBalancer`, else the mesh config's) turned into endpoint priorities and
//! weights relative to the proxy that asks, as istiod does per proxy in
//! `pilot/pkg/networking/core/loadbalancer/loadbalancer.go`.
//!
//! - **distribute**: the first rule whose `from` matches the proxy's locality splits traffic
//!   over its `to` localities; an endpoint's weight becomes its share of its target's
//!   percentage, and endpoints in no target are left out. Applies with or without outlier
//!   detection, as in Istio.
//! - **failover** (only when the cluster has outlier detection, else nothing ever fails over):
//!   priorities by how much of the proxy's locality an endpoint shares (subzone 0, zone 1,
//!   region 2, elsewhere 3); a `failover` entry from the proxy's region keeps its `to` region
//!   at 3 and moves every other region to 4. `failoverPriority` ranks by labels first, the
//!   locality order breaking ties only when `failover` is also set. Priorities are then
//!   renumbered 0, 1, 2, ... without gaps.
//!
//! The proxy goes to the best priority with healthy endpoints and spills over as health falls
//! (Envoy's overprovisioning factor 1.4), which is Envoy's behaviour for the priorities istiod
//! sends.

use std::collections::BTreeMap;

use weft_api::networking::destination_rule::{
    Distribute, Failover, LoadBalancerSettings, LocalityLoadBalancerSetting,
};
use weft_xds::proto;

use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::registry::{REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL};

/// The label `failoverPriority` may start with to rank other networks last without ignoring
/// the labels after it (Istio's special case for multi-network meshes).
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// `locality_priority` yields 0..=4: combined with a label rank as `label * SLOTS + locality`.
const SLOTS: u32 = 5;

/// Distribution weights are exact (least common multiple of the targets' total endpoint
/// weights) while that multiple stays at most this.
const EXACT_SCALE_LIMIT: u64 = 10_000;
/// Past [`EXACT_SCALE_LIMIT`], weights are rounded at this scale (at most 100 times it).
const ROUNDED_SCALE: f64 = 1_000_000.0;

/// A locality split into its levels (Istio's `SplitLocalityLabel`: extra levels are ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Locality<'a> {
    pub region: &'a str,
    pub zone: &'a str,
    pub subzone: &'a str,
}

impl<'a> Locality<'a> {
    pub(crate) fn parse(text: &'a str) -> Locality<'a> {
        let mut parts = text.split('/');
        Locality {
            region: parts.next().unwrap_or(""),
            zone: parts.next().unwrap_or(""),
            subzone: parts.next().unwrap_or(""),
        }
    }

    fn of(l: Option<&'a proto::Locality>) -> Locality<'a> {
        l.map_or_else(Locality::default, |l| Locality {
            region: &l.region,
            zone: &l.zone,
            subzone: &l.subzone,
        })
    }

    /// Whether this locality falls under `pattern` (`region[/zone[/subzone]]`; `*` or a missing
    /// level matches anything at that level), Istio's `LocalityMatch`.
    pub(crate) fn matches(&self, pattern: &str) -> bool {
        let p = Locality::parse(pattern);
        let level = |want: &str, have: &str| want == "*" || want == have;
        level(p.region, self.region)
            && (p.zone.is_empty() || level(p.zone, self.zone))
            && (p.subzone.is_empty() || level(p.subzone, self.subzone))
    }
}

/// The proto form of a `region/zone/subzone` text; `None` when empty.
pub(crate) fn to_proto(text: &str) -> Option<proto::Locality> {
    if text.is_empty() {
        return None;
    }
    let l = Locality::parse(text);
    Some(proto::Locality {
        region: l.region.to_owned(),
        zone: l.zone.to_owned(),
        subzone: l.subzone.to_owned(),
    })
}

/// The setting in force for a cluster whose merged traffic policy load-balances with `lb`:
/// the rule's `localityLbSetting` replaces the mesh's whole, and `enabled: false` (at the level
/// that decides) turns locality load balancing off. Istio's `GetEffectiveLbSetting`, where a
/// rule's `zoneAwareLbSetting` wins over both (weft notes it unsupported and applies none).
pub(crate) fn effective<'a>(
    lb: Option<&'a LoadBalancerSettings>,
    mesh: &'a MeshConfig,
) -> Option<&'a LocalityLoadBalancerSetting> {
    if lb.is_some_and(|lb| lb.zone_aware_lb_setting.is_some()) {
        return None;
    }
    let setting = lb
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .or(mesh.locality_lb_setting.as_ref())?;
    (setting.enabled != Some(false)).then_some(setting)
}

/// Applies `setting` to one cluster's endpoints for `node`: weights and dropped endpoints for
/// `distribute`, else priorities when the cluster has outlier detection. Istio's
/// `ApplyLocalityLoadBalancer`.
pub(crate) fn apply(
    endpoints: &mut Vec<proto::Endpoint>,
    setting: Option<&LocalityLoadBalancerSetting>,
    outlier_detection: bool,
    node: &ProxyNode,
) {
    let Some(setting) = setting else {
        return;
    };
    if !setting.distribute.is_empty() {
        distribute(
            endpoints,
            &setting.distribute,
            Locality::parse(&node.locality),
        );
    } else if outlier_detection {
        failover(endpoints, setting, node);
    }
}

fn failover(
    endpoints: &mut [proto::Endpoint],
    setting: &LocalityLoadBalancerSetting,
    node: &ProxyNode,
) {
    let proxy = Locality::parse(&node.locality);
    let ranks: Vec<u32> = if setting.failover_priority.is_empty() {
        endpoints
            .iter()
            .map(|e| locality_priority(proxy, Locality::of(e.locality.as_ref()), &setting.failover))
            .collect()
    } else {
        let proxy_labels = with_topology(
            node.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            proxy,
        );
        endpoints
            .iter()
            .map(|e| {
                let locality = Locality::of(e.locality.as_ref());
                let labels = with_topology(
                    e.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    locality,
                );
                // Istio ranks by labels only when the proxy has some (topology labels count).
                let by_labels = if proxy_labels.is_empty() {
                    0
                } else {
                    label_priority(&proxy_labels, &labels, &setting.failover_priority)
                };
                // `failover` next to `failoverPriority` orders by locality within each label
                // rank (Istio applies the locality failover on top, priority * 5 + locality).
                if setting.failover.is_empty() {
                    by_labels
                } else {
                    by_labels * SLOTS + locality_priority(proxy, locality, &setting.failover)
                }
            })
            .collect()
    };
    let mut levels = ranks.clone();
    levels.sort_unstable();
    levels.dedup();
    for (e, rank) in endpoints.iter_mut().zip(ranks) {
        // Renumbered without gaps: 0 is the best rank present.
        e.priority = levels.partition_point(|&l| l < rank) as u32;
    }
}

/// How far `endpoint` is from `proxy`: 0 same subzone, 1 same zone, 2 same region, 3 another
/// region. A `failover` entry from the proxy's region (the first one) keeps its `to` region at 3
/// and puts every other region at 4. Istio's `LbPriority` and `applyLocalityFailover`.
pub(crate) fn locality_priority(
    proxy: Locality<'_>,
    endpoint: Locality<'_>,
    failover: &[Failover],
) -> u32 {
    if proxy.region == endpoint.region {
        return if proxy.zone != endpoint.zone {
            2
        } else if proxy.subzone != endpoint.subzone {
            1
        } else {
            0
        };
    }
    match failover.iter().find(|f| f.from == proxy.region) {
        Some(f) if endpoint.region != f.to => 4,
        _ => 3,
    }
}

/// An endpoint's rank by `failoverPriority` (`key` compares the proxy's value, `key=value` that
/// value; a label both lack matches): 0 when every label matches, `N - j` when label `j` is the
/// first that does not (N labels), so only leading matches count. When the first entry is
/// exactly `topology.istio.io/network`, another network does not end the comparison: it adds N,
/// ranking those endpoints after every one on the proxy's network by the remaining labels.
/// Istio's `applyFailoverPriorityPerLocality`.
pub(crate) fn label_priority(
    proxy: &BTreeMap<&str, &str>,
    endpoint: &BTreeMap<&str, &str>,
    failover_priority: &[String],
) -> u32 {
    let n = failover_priority.len() as u32;
    let network_first = failover_priority
        .first()
        .is_some_and(|l| l == NETWORK_LABEL);
    let mut adjust = 0;
    for (j, entry) in (0u32..).zip(failover_priority) {
        // `a=b=c` is the key `a` without a value, as Istio splits it.
        let parts: Vec<&str> = entry.split('=').collect();
        let key = parts[0];
        let wanted = match parts[..] {
            [_, value] => value,
            _ => proxy.get(key).copied().unwrap_or(""),
        };
        if wanted != endpoint.get(key).copied().unwrap_or("") {
            if j == 0 && network_first {
                adjust = n;
                continue;
            }
            return adjust + n - j;
        }
    }
    adjust
}

/// `labels` with the topology labels of `locality` added (replacing any already there), as
/// Istio's `AugmentLabels` gives every workload and proxy.
fn with_topology<'a>(
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    locality: Locality<'a>,
) -> BTreeMap<&'a str, &'a str> {
    let mut out: BTreeMap<&str, &str> = labels.collect();
    for (key, value) in [
        (REGION_LABEL, locality.region),
        (ZONE_LABEL, locality.zone),
        (SUBZONE_LABEL, locality.subzone),
    ] {
        if !value.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

/// The first rule whose `from` matches `proxy` splits traffic over its `to` localities: each
/// target's percentage is shared by the endpoints it covers in proportion to their weights, and
/// endpoints no target covers are dropped. No rule matching leaves the endpoints as they are.
/// Istio's `applyLocalityWeights`, with the locality weights Envoy would apply folded into
/// endpoint weights (the proxy balances endpoints, not localities).
fn distribute(endpoints: &mut Vec<proto::Endpoint>, rules: &[Distribute], proxy: Locality<'_>) {
    let Some(rule) = rules.iter().find(|d| proxy.matches(&d.from)) else {
        return;
    };
    let targets: Vec<(&String, &u32)> = rule.to.iter().collect();
    // Each endpoint's target: the first `to` locality covering it (validation keeps them
    // from overlapping). A target of weight 0 (only an unvalidated mesh config has one) gets
    // nothing, as Envoy gives a locality without a weight.
    let target: Vec<Option<usize>> = endpoints
        .iter()
        .map(|e| {
            let l = Locality::of(e.locality.as_ref());
            targets
                .iter()
                .position(|(pattern, _)| l.matches(pattern))
                .filter(|&t| *targets[t].1 > 0)
        })
        .collect();
    let mut kept: Vec<(proto::Endpoint, usize)> = std::mem::take(endpoints)
        .into_iter()
        .zip(target)
        .filter_map(|(e, t)| Some((e, t?)))
        .collect();
    let mut totals = vec![0u64; targets.len()];
    for (e, t) in &kept {
        totals[*t] += u64::from(e.weight.max(1));
    }
    let shares: Vec<Share> = kept
        .iter()
        .map(|(e, t)| Share {
            percent: u64::from(*targets[*t].1),
            weight: u64::from(e.weight.max(1)),
            total: totals[*t],
        })
        .collect();
    for ((e, _), w) in kept.iter_mut().zip(share_weights(&shares)) {
        e.weight = w;
    }
    endpoints.extend(kept.into_iter().map(|(e, _)| e));
}

/// One endpoint's part of a distribution: `percent` of the traffic goes to its target, whose
/// endpoints weigh `total` together, `weight` of it this endpoint's.
#[derive(Debug, Clone, Copy)]
struct Share {
    percent: u64,
    weight: u64,
    total: u64,
}

/// Integer weights (at least 1) proportional to `percent * weight / total`: exact when the
/// totals' least common multiple is small, else rounded at a fixed scale; divided by their
/// greatest common divisor either way, so 80/20 over one endpoint each is 4 and 1.
fn share_weights(shares: &[Share]) -> Vec<u32> {
    let multiple = shares.iter().try_fold(1u64, |m, s| {
        let l = lcm(m, s.total.max(1));
        (l <= EXACT_SCALE_LIMIT).then_some(l)
    });
    let raw: Vec<u64> = match multiple {
        Some(m) => shares
            .iter()
            .map(|s| s.percent * s.weight * (m / s.total.max(1)))
            .collect(),
        None => shares
            .iter()
            .map(|s| {
                let exact = (s.percent * s.weight) as f64 * ROUNDED_SCALE / s.total.max(1) as f64;
                (exact.round() as u64).max(1)
            })
            .collect(),
    };
    let divisor = raw.iter().copied().fold(0, gcd).max(1);
    raw.into_iter()
        .map(|w| u32::try_from((w / divisor).max(1)).unwrap_or(u32::MAX))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(pairs: &[(&str, &str)]) -> Vec<Failover> {
        pairs
            .iter()
            .map(|(from, to)| Failover {
                from: (*from).into(),
                to: (*to).into(),
            })
            .collect()
    }

    #[test]
    fn locality_priority_by_shared_levels_and_failover() {
        let proxy = Locality::parse("us-west/zone1/a");
        let to_east = failover(&[("us-east", "eu"), ("us-west", "us-east")]);
        let cases: [(&str, &[Failover], u32); 11] = [
            ("us-west/zone1/a", &[], 0),
            ("us-west/zone1/b", &[], 1),
            ("us-west/zone1", &[], 1),
            ("us-west/zone2/a", &[], 2),
            ("us-east/zone1/a", &[], 3),
            ("", &[], 3),
            // Failover from the proxy's region: its `to` stays next, the rest after.
            ("us-east/zone9", &to_east, 3),
            ("eu/zone1", &to_east, 4),
            ("", &to_east, 4),
            ("us-west/zone2", &to_east, 2),
            // An entry from another region changes nothing.
            ("eu/zone1", &failover(&[("eu", "us-west")]), 3),
        ];
        for (endpoint, failover, want) in cases {
            assert_eq!(
                locality_priority(proxy, Locality::parse(endpoint), failover),
                want,
                "{endpoint:?} {failover:?}"
            );
        }
        // A proxy without a locality: endpoints without one are the nearest.
        assert_eq!(
            locality_priority(Locality::default(), Locality::default(), &[]),
            0
        );
        assert_eq!(
            locality_priority(Locality::default(), Locality::parse("us-west"), &[]),
            3
        );
    }

    #[test]
    fn localities_to_proto() {
        assert_eq!(to_proto(""), None);
        let l = to_proto("us-east/zone-a").unwrap();
        assert_eq!(
            (l.region.as_str(), l.zone.as_str(), l.subzone.as_str()),
            ("us-east", "zone-a", "")
        );
    }

    #[test]
    fn locality_patterns() {
        let l = Locality::parse("us-west/zone1/a");
        for (pattern, want) in [
            ("*", true),
            ("us-west", true),
            ("us-west/*", true),
            ("us-west/zone1", true),
            ("us-west/zone1/*", true),
            ("us-west/zone1/a", true),
            ("us-west/zone1/b", false),
            ("us-west/zone2/*", false),
            ("us-east/*", false),
        ] {
            assert_eq!(l.matches(pattern), want, "{pattern}");
        }
        assert!(Locality::default().matches("*"));
        assert!(!Locality::default().matches("us-west"));
    }

    fn labels<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn label_priority_counts_leading_matches() {
        let keys: Vec<String> = ["version", "topology.kubernetes.io/zone", "rack"]
            .map(String::from)
            .to_vec();
        let proxy = labels(&[
            ("version", "v1"),
            ("topology.kubernetes.io/zone", "z1"),
            ("rack", "r1"),
        ]);
        let cases: [(&[(&str, &str)], u32); 5] = [
            (
                &[
                    ("version", "v1"),
                    ("topology.kubernetes.io/zone", "z1"),
                    ("rack", "r1"),
                ],
                0,
            ),
            (
                &[
                    ("version", "v1"),
                    ("topology.kubernetes.io/zone", "z1"),
                    ("rack", "r2"),
                ],
                1,
            ),
            (&[("version", "v1"), ("rack", "r1")], 2),
            // Only leading matches count: a later match after a miss does not.
            (
                &[("version", "v2"), ("topology.kubernetes.io/zone", "z1")],
                3,
            ),
            (&[], 3),
        ];
        for (endpoint, want) in cases {
            assert_eq!(
                label_priority(&proxy, &labels(endpoint), &keys),
                want,
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn label_priority_with_values_and_networks() {
        // `key=value` compares with the value, not the proxy's label.
        let keys = vec![
            "version=v1".to_owned(),
            "topology.istio.io/cluster=a".to_owned(),
        ];
        let proxy = labels(&[("version", "v2")]);
        let ep = |v: &'static str, c: &'static str| {
            labels(&[("version", v), ("topology.istio.io/cluster", c)])
        };
        assert_eq!(label_priority(&proxy, &ep("v1", "a"), &keys), 0);
        assert_eq!(label_priority(&proxy, &ep("v1", "b"), &keys), 1);
        assert_eq!(label_priority(&proxy, &ep("v2", "a"), &keys), 2);

        // Another network ranks after the proxy's, still ordered by the labels after it.
        let keys = vec![NETWORK_LABEL.to_owned(), "zone".to_owned()];
        let proxy = labels(&[(NETWORK_LABEL, "n1"), ("zone", "z1")]);
        let ep = |n: &'static str, z: &'static str| labels(&[(NETWORK_LABEL, n), ("zone", z)]);
        assert_eq!(label_priority(&proxy, &ep("n1", "z1"), &keys), 0);
        assert_eq!(label_priority(&proxy, &ep("n1", "z2"), &keys), 1);
        assert_eq!(label_priority(&proxy, &ep("n2", "z1"), &keys), 2);
        assert_eq!(label_priority(&proxy, &ep("n2", "z2"), &keys), 3);
    }

    fn endpoint(address: &str, locality: &str, labels: &[(&str, &str)]) -> proto::Endpoint {
        proto::Endpoint {
            address: address.into(),
            locality: to_proto(locality),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ..Default::default()
        }
    }

    fn node(locality: &str, labels: &[(&str, &str)]) -> ProxyNode {
        let mut n = ProxyNode::parse_id("sidecar~10.0.0.1~a-0.default~default.svc.cluster.local")
            .expect("parses");
        n.locality = locality.into();
        n.labels = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        n
    }

    fn priorities(endpoints: &[proto::Endpoint]) -> Vec<u32> {
        endpoints.iter().map(|e| e.priority).collect()
    }

    #[test]
    fn failover_priorities_are_renumbered_without_gaps() {
        let mut eps = vec![
            endpoint("10.0.0.1:80", "us-west/zone1", &[]),
            endpoint("10.0.0.2:80", "us-west/zone2", &[]),
            endpoint("10.0.0.3:80", "us-east/zone1", &[]),
            endpoint("10.0.0.4:80", "eu/zone1", &[]),
        ];
        let setting = LocalityLoadBalancerSetting::default();
        apply(&mut eps, Some(&setting), true, &node("us-west/zone1", &[]));
        // 0 (same zone), 2 (same region), 3, 3 -> 0, 1, 2, 2.
        assert_eq!(priorities(&eps), [0, 1, 2, 2]);

        let setting = LocalityLoadBalancerSetting {
            failover: failover(&[("us-west", "eu")]),
            ..Default::default()
        };
        apply(&mut eps, Some(&setting), true, &node("us-west/zone1", &[]));
        assert_eq!(priorities(&eps), [0, 1, 3, 2]);

        // Without outlier detection nothing fails over: priorities are left alone.
        let mut fresh = vec![endpoint("10.0.0.3:80", "us-east/zone1", &[])];
        apply(
            &mut fresh,
            Some(&setting),
            false,
            &node("us-west/zone1", &[]),
        );
        assert_eq!(priorities(&fresh), [0]);
    }

    #[test]
    fn failover_priority_labels_then_locality() {
        let eps = || {
            vec![
                endpoint("10.0.0.1:80", "us-west/zone1", &[("version", "v1")]),
                endpoint("10.0.0.2:80", "us-east/zone1", &[("version", "v1")]),
                endpoint("10.0.0.3:80", "us-west/zone1", &[("version", "v2")]),
                endpoint("10.0.0.4:80", "eu/zone1", &[("version", "v2")]),
            ]
        };
        let proxy = node("us-west/zone1", &[("version", "v1")]);
        // Labels alone: the locality plays no part.
        let by_labels = LocalityLoadBalancerSetting {
            failover_priority: vec!["version".into()],
            ..Default::default()
        };
        let mut e = eps();
        apply(&mut e, Some(&by_labels), true, &proxy);
        assert_eq!(priorities(&e), [0, 0, 1, 1]);
        // With `failover`, the locality order within each label rank.
        let both = LocalityLoadBalancerSetting {
            failover: failover(&[("us-west", "us-east")]),
            ..by_labels.clone()
        };
        let mut e = eps();
        apply(&mut e, Some(&both), true, &proxy);
        assert_eq!(priorities(&e), [0, 1, 2, 3]);
        // Topology labels come from localities: a region label matches by locality.
        let by_region = LocalityLoadBalancerSetting {
            failover_priority: vec![REGION_LABEL.into()],
            ..Default::default()
        };
        let mut e = eps();
        apply(&mut e, Some(&by_region), true, &proxy);
        assert_eq!(priorities(&e), [0, 1, 0, 1]);
    }

    #[test]
    fn distribute_weights_shares_and_drops_the_rest() {
        let mut eps = vec![
            endpoint("10.0.0.1:80", "us-west/zone1", &[]),
            endpoint("10.0.0.2:80", "us-west/zone1", &[]),
            endpoint("10.0.0.3:80", "us-west/zone2", &[]),
            endpoint("10.0.0.4:80", "us-east/zone1", &[]),
        ];
        let setting = LocalityLoadBalancerSetting {
            distribute: vec![
                Distribute {
                    from: "eu/*".into(),
                    to: BTreeMap::from([("eu".into(), 100)]),
                },
                Distribute {
                    from: "us-west/*".into(),
                    to: BTreeMap::from([
                        ("us-west/zone1".into(), 80),
                        ("us-west/zone2".into(), 20),
                    ]),
                },
            ],
            ..Default::default()
        };
        // Distribute needs no outlier detection.
        apply(&mut eps, Some(&setting), false, &node("us-west/zone1", &[]));
        let got: Vec<(&str, u32)> = eps.iter().map(|e| (e.address.as_str(), e.weight)).collect();
        // 40% + 40% + 20%.
        assert_eq!(
            got,
            [("10.0.0.1:80", 2), ("10.0.0.2:80", 2), ("10.0.0.3:80", 1)]
        );
        assert_eq!(priorities(&eps), [0, 0, 0]);

        // No rule from the proxy's locality: unchanged.
        let mut eps = vec![endpoint("10.0.0.4:80", "us-east/zone1", &[])];
        apply(&mut eps, Some(&setting), false, &node("ap/zone1", &[]));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].weight, 0);
    }

    #[test]
    fn share_weights_are_exact_or_rounded() {
        let s = |percent, weight, total| Share {
            percent,
            weight,
            total,
        };
        // 80 over three endpoints, 20 over one: 26.7% each and 20%.
        assert_eq!(
            share_weights(&[s(80, 1, 3), s(80, 1, 3), s(80, 1, 3), s(20, 1, 1)]),
            [4, 4, 4, 3]
        );
        // Endpoint weights count within a target.
        assert_eq!(
            share_weights(&[s(50, 3, 4), s(50, 1, 4), s(50, 1, 1)]),
            [3, 1, 4]
        );
        // Totals whose multiple is too large: rounded, still in proportion.
        let w = share_weights(&[s(50, 1, 9_973), s(50, 1, 9_967)]);
        let ratio = f64::from(w[0]) / f64::from(w[1]);
        assert!((ratio - 9_967.0 / 9_973.0).abs() < 1e-3, "{w:?}");
    }

    #[test]
    fn effective_setting_rule_over_mesh() {
        let mesh = MeshConfig::default();
        assert_eq!(effective(None, &mesh).and_then(|s| s.enabled), Some(true));
        let off = LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLoadBalancerSetting {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(effective(Some(&off), &mesh).is_none());
        let zone_aware = LoadBalancerSettings {
            zone_aware_lb_setting: Some(Default::default()),
            ..Default::default()
        };
        assert!(effective(Some(&zone_aware), &mesh).is_none());
        let mesh_off = MeshConfig {
            locality_lb_setting: None,
            ..MeshConfig::default()
        };
        assert!(effective(None, &mesh_off).is_none());
        assert!(effective(Some(&LoadBalancerSettings::default()), &mesh_off).is_none());
    }
}
