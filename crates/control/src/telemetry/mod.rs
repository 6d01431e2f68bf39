//! Mesh traffic from the proxies' Istio metrics, for `weft stat` and the service graph.
//!
//! Two scrapes of every proxy's `/stats/prometheus` a window apart give, per series, the
//! increase over the window ([`increase`], Prometheus's `increase()` without extrapolation: a
//! counter that went down was reset and counts from zero). Grouped by workload, service or
//! graph edge ([`Traffic`]) they give what Istio's dashboards and Kiali compute with PromQL:
//! request rate, success rate (`response_code!~"5.."`), and latency quantiles computed as
//! `histogram_quantile` does ([`histogram_quantile`]) over `istio_request_duration_milliseconds`.

pub mod exposition;
pub mod graph;

use std::collections::{BTreeMap, HashMap};

pub use exposition::{ParseError, Sample, parse};

pub const REQUESTS_TOTAL: &str = "istio_requests_total";
pub const DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";

/// One scrape of every target: target address -> its samples.
pub type Scrape = BTreeMap<String, Vec<Sample>>;

/// The increase of every series of `after` since `before` (per target, same name and labels).
/// A series absent before counts from zero; one lower than before was reset.
pub fn increase(before: &Scrape, after: &Scrape) -> Vec<Sample> {
    let mut out = Vec::new();
    for (target, samples) in after {
        let earlier: HashMap<(&str, &BTreeMap<String, String>), f64> = before
            .get(target)
            .map(|b| {
                b.iter()
                    .map(|s| ((s.name.as_str(), &s.labels), s.value))
                    .collect()
            })
            .unwrap_or_default();
        for s in samples {
            let was = earlier.get(&(s.name.as_str(), &s.labels)).copied();
            let value = match was {
                Some(w) if s.value >= w => s.value - w,
                _ => s.value,
            };
            out.push(Sample { value, ..s.clone() });
        }
    }
    out
}

/// Requests and their latency histogram, summed over some series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub requests: f64,
    /// Requests answered with a 5xx.
    pub errors: f64,
    /// Cumulative latency buckets (upper bound in ms, count), summed by `le`.
    pub buckets: Vec<(f64, f64)>,
    /// Destination-reported requests, and of them those over mutual TLS.
    pub reported_by_destination: f64,
    pub mutual_tls: f64,
}

impl Traffic {
    /// Adds one (increased) sample if it is a request count or latency bucket.
    pub fn add(&mut self, s: &Sample) {
        match s.name.as_str() {
            REQUESTS_TOTAL => {
                self.requests += s.value;
                if s.label("response_code").starts_with('5') {
                    self.errors += s.value;
                }
                if s.label("reporter") == "destination" {
                    self.reported_by_destination += s.value;
                    if s.label("connection_security_policy") == "mutual_tls" {
                        self.mutual_tls += s.value;
                    }
                }
            }
            DURATION_BUCKET => {
                let le = match s.label("le") {
                    "+Inf" => f64::INFINITY,
                    le => match le.parse() {
                        Ok(v) => v,
                        Err(_) => return,
                    },
                };
                match self.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += s.value,
                    None => self.buckets.push((le, s.value)),
                }
            }
            _ => {}
        }
    }

    pub fn rps(&self, window_seconds: f64) -> f64 {
        if window_seconds > 0.0 {
            self.requests / window_seconds
        } else {
            0.0
        }
    }

    /// Non-5xx requests over all; None without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.requests - self.errors) / self.requests)
    }

    /// The `q` quantile of latency in ms; None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let v = histogram_quantile(q, &self.buckets);
        (!v.is_nan()).then_some(v)
    }

    /// Whether the destination-reported requests were all (true) or not all (false) over
    /// mutual TLS; None when no destination reported any.
    pub fn mtls(&self) -> Option<bool> {
        (self.reported_by_destination > 0.0)
            .then_some(self.mutual_tls >= self.reported_by_destination)
    }
}

/// PromQL's `histogram_quantile(q, ...)` over cumulative `buckets` (upper bound, count):
/// linear interpolation within the bucket the rank falls in, the lower bound of the first
/// bucket being 0; a rank in the `+Inf` bucket gives the highest finite bound. NaN without
/// a `+Inf` bucket or without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.len() < 2 || b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts from separate scrapes may be slightly out of order: make them monotonic.
    let mut max = f64::NEG_INFINITY;
    for (_, c) in b.iter_mut() {
        if *c < max {
            *c = max;
        }
        max = *c;
    }
    let observations = b[b.len() - 1].1;
    if observations <= 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = b
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Sums the window's samples that `keep` accepts into one [`Traffic`] per key.
pub fn group<K: Ord>(
    window: &[Sample],
    keep: impl Fn(&Sample) -> bool,
    key: impl Fn(&Sample) -> Option<K>,
) -> BTreeMap<K, Traffic> {
    let mut out: BTreeMap<K, Traffic> = BTreeMap::new();
    for s in window {
        if (s.name == REQUESTS_TOTAL || s.name == DURATION_BUCKET)
            && keep(s)
            && let Some(k) = key(s)
        {
            out.entry(k).or_default().add(s);
        }
    }
    out
}

/// One row of `weft stat`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatRow {
    pub namespace: String,
    pub name: String,
    pub requests: f64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: Option<bool>,
}

fn rows(groups: BTreeMap<(String, String), Traffic>, window_seconds: f64) -> Vec<StatRow> {
    groups
        .into_iter()
        .map(|((namespace, name), t)| StatRow {
            namespace,
            name,
            requests: t.requests,
            rps: t.rps(window_seconds),
            success_rate: t.success_rate(),
            p50_ms: t.quantile(0.5),
            p95_ms: t.quantile(0.95),
            p99_ms: t.quantile(0.99),
            mtls: t.mtls(),
        })
        .collect()
}

/// Per destination workload, what its own proxy saw (`reporter="destination"`): the
/// server's view, as Istio's workload dashboard shows inbound traffic.
pub fn workload_stats(window: &[Sample], window_seconds: f64) -> Vec<StatRow> {
    let groups = group(
        window,
        |s| s.label("reporter") == "destination",
        |s| {
            Some((
                s.label("destination_workload_namespace").to_owned(),
                s.label("destination_workload").to_owned(),
            ))
        },
    );
    rows(groups, window_seconds)
}

/// Per destination service, what its clients' proxies saw (`reporter="source"`): the
/// clients' view, as Kiali's service nodes and Istio's service dashboard show it.
pub fn service_stats(window: &[Sample], window_seconds: f64) -> Vec<StatRow> {
    let groups = group(
        window,
        |s| s.label("reporter") == "source",
        |s| {
            Some((
                s.label("destination_service_namespace").to_owned(),
                s.label("destination_service").to_owned(),
            ))
        },
    );
    rows(groups, window_seconds)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Istio's default latency buckets (ms).
    pub const BUCKETS: [f64; 20] = [
        0.5,
        1.0,
        5.0,
        10.0,
        25.0,
        50.0,
        100.0,
        250.0,
        500.0,
        1000.0,
        2500.0,
        5000.0,
        10000.0,
        30000.0,
        60000.0,
        300000.0,
        600000.0,
        1800000.0,
        3600000.0,
        f64::INFINITY,
    ];

    /// An exposition of `requests` (labels, response code, latencies in ms) as a proxy
    /// would serve it: one counter and one histogram per label set and code.
    pub fn exposition(requests: &[(&str, &str, &[f64])]) -> String {
        let mut out = String::from("# TYPE istio_requests_total counter\n");
        let mut hist = String::from("# TYPE istio_request_duration_milliseconds histogram\n");
        for (labels, code, latencies) in requests {
            let l = format!("{labels},response_code=\"{code}\"");
            out += &format!("istio_requests_total{{{l}}} {}\n", latencies.len());
            for le in BUCKETS {
                let n = latencies.iter().filter(|v| **v <= le).count();
                let le = if le.is_infinite() {
                    "+Inf".to_owned()
                } else {
                    le.to_string()
                };
                hist +=
                    &format!("istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} {n}\n");
            }
            hist += &format!(
                "istio_request_duration_milliseconds_sum{{{l}}} {}\nistio_request_duration_milliseconds_count{{{l}}} {}\n",
                latencies.iter().sum::<f64>(),
                latencies.len()
            );
        }
        out + &hist
    }

    #[test]
    fn quantiles_as_prometheus_computes_them() {
        // 10 observations: 4 in (0,1], 4 in (1,5], 2 in (5,10].
        let b = [(1.0, 4.0), (5.0, 8.0), (10.0, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.5, &b), 2.0); // rank 5: 1 + 4*(1/4)
        assert_eq!(histogram_quantile(0.2, &b), 0.5); // rank 2 in the first bucket
        assert_eq!(histogram_quantile(0.9, &b), 7.5); // rank 9: 5 + 5*(1/2)
        assert_eq!(histogram_quantile(1.0, &b), 10.0);
        // In the +Inf bucket: the highest finite bound.
        let inf = [(1.0, 1.0), (f64::INFINITY, 4.0)];
        assert_eq!(histogram_quantile(0.99, &inf), 1.0);
        assert!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert!(histogram_quantile(0.5, &[(1.0, 3.0)]).is_nan());
        assert_eq!(histogram_quantile(-1.0, &b), f64::NEG_INFINITY);
        // Out of order input and non-monotonic counts are tolerated.
        let messy = [(f64::INFINITY, 10.0), (5.0, 7.0), (1.0, 8.0), (10.0, 10.0)];
        assert_eq!(histogram_quantile(0.5, &messy), 1.0 * (5.0 / 8.0));
    }

    #[test]
    fn stats_over_a_window_of_two_scrapes() {
        let dst = "reporter=\"destination\",destination_workload=\"reviews-v1\",destination_workload_namespace=\"default\",destination_service=\"reviews.default.svc.cluster.local\",destination_service_namespace=\"default\",connection_security_policy=\"mutual_tls\"";
        let src = dst.replace("reporter=\"destination\"", "reporter=\"source\"");
        let before: Scrape = BTreeMap::from([(
            "127.1.3.1:15090".to_owned(),
            parse(&exposition(&[
                (dst, "200", &[3.0; 5]),
                (dst, "503", &[0.3]),
            ]))
            .unwrap(),
        )]);
        // 10 s later: 8 more 200s (4 at 3 ms, 4 at 20 ms), 2 more 503s (0.3 ms).
        let mut ok = vec![3.0; 9];
        ok.extend([20.0; 4]);
        let after: Scrape = BTreeMap::from([
            (
                "127.1.3.1:15090".to_owned(),
                parse(&exposition(&[(dst, "200", &ok), (dst, "503", &[0.3; 3])])).unwrap(),
            ),
            // A client proxy scraped for the first time: everything it has counts.
            (
                "127.1.6.1:15090".to_owned(),
                parse(&exposition(&[(&src, "200", &[4.0; 10])])).unwrap(),
            ),
        ]);
        let window = increase(&before, &after);
        let w = workload_stats(&window, 10.0);
        assert_eq!(w.len(), 1);
        let r = &w[0];
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("default", "reviews-v1")
        );
        assert_eq!(r.requests, 10.0);
        assert_eq!(r.rps, 1.0);
        assert_eq!(r.success_rate, Some(0.8));
        // 2 in (0,0.5], 4 in (1,5], 4 in (10,25]: rank 5 is in (1,5]: 1 + 4*(3/4) = 4.
        assert_eq!(r.p50_ms, Some(4.0));
        // rank 9.9 in (10,25]: 10 + 15*(3.9/4).
        assert_eq!(r.p99_ms, Some(10.0 + 15.0 * (3.9 / 4.0)));
        assert_eq!(r.mtls, Some(true));

        let s = service_stats(&window, 10.0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "reviews.default.svc.cluster.local");
        assert_eq!((s[0].requests, s[0].success_rate), (10.0, Some(1.0)));
        assert_eq!(s[0].mtls, None);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let before: Scrape = BTreeMap::from([(
            "t".to_owned(),
            parse("istio_requests_total{a=\"1\"} 100\n").unwrap(),
        )]);
        let after: Scrape = BTreeMap::from([(
            "t".to_owned(),
            parse("istio_requests_total{a=\"1\"} 7\n").unwrap(),
        )]);
        assert_eq!(increase(&before, &after)[0].value, 7.0);
        let later: Scrape = BTreeMap::from([(
            "t".to_owned(),
            parse("istio_requests_total{a=\"1\"} 109\n").unwrap(),
        )]);
        assert_eq!(increase(&before, &later)[0].value, 9.0);
    }
}
