//! The xDS server's metrics, under istiod's names (Prometheus text format 0.0.4):
//!
//! - `pilot_xds{version}` (gauge): connected xDS streams, by the proxy's version
//!   (`Node.user_agent_version`, `unknown` when the proxy sent none).
//! - `pilot_xds_pushes{type}` (counter): pushes of one type to one proxy (a push cut into
//!   several responses counts once).
//! - `pilot_total_xds_rejects{type}` (counter): responses a proxy NACKed.
//! - `pilot_xds_push_time{type}` (histogram, seconds): from the start of computing a push of
//!   a type for one proxy to its last response handed to the stream.
//! - `pilot_proxy_convergence_time` (histogram, seconds): from the config change a snapshot
//!   came from ([`crate::resource::ProxyResources::changed_at`]) to the proxy's ACK of every
//!   response the change caused. istiod stops its clock when the push is sent; weft waits
//!   for the ACK, which is when the proxy has the config in force.
//!
//! `type` is istiod's short name of the type URL: `lds`, `rds`, `cds`, `sds` (weft has no
//! separate EDS: endpoints travel in clusters). Counters keep istiod's names without the
//! `_total` suffix, as istiod exports them, so they are written here rather than by
//! prometheus-client (which always adds it); gauges and histograms are prometheus-client's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::resource::{
    CLUSTER_TYPE_URL, LISTENER_TYPE_URL, ROUTE_CONFIGURATION_TYPE_URL, SECRET_TYPE_URL,
};

/// istiod's buckets for `pilot_xds_push_time`.
const PUSH_TIME_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for `pilot_proxy_convergence_time`.
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

type Labels = Vec<(String, String)>;

fn push_time_histogram() -> Histogram {
    Histogram::new(PUSH_TIME_BUCKETS)
}

/// The metrics of one [`super::XdsServer`]; its clones share them.
pub struct XdsMetrics {
    registry: Registry,
    connected: Family<Labels, Gauge>,
    push_time: Family<Labels, Histogram, fn() -> Histogram>,
    convergence: Histogram,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    pushes: BTreeMap<&'static str, u64>,
    rejects: BTreeMap<&'static str, u64>,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        let connected = Family::<Labels, Gauge>::default();
        let push_time = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            push_time_histogram,
        );
        let convergence = Histogram::new(CONVERGENCE_BUCKETS);
        let mut registry = Registry::default();
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this control plane using xDS",
            connected.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds the control plane takes to push lds, rds, cds and sds",
            push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between a config change and a proxy ACKing all the configuration it caused",
            convergence.clone(),
        );
        Self {
            registry,
            connected,
            push_time,
            convergence,
            counters: Mutex::new(Counters::default()),
        }
    }
}

/// istiod's short name of a type URL (its `type` label).
pub fn type_label(type_url: &str) -> &'static str {
    match type_url {
        LISTENER_TYPE_URL => "lds",
        ROUTE_CONFIGURATION_TYPE_URL => "rds",
        CLUSTER_TYPE_URL => "cds",
        SECRET_TYPE_URL => "sds",
        _ => "other",
    }
}

fn version_labels(version: &str) -> Labels {
    let v = if version.is_empty() {
        "unknown"
    } else {
        version
    };
    vec![("version".to_owned(), v.to_owned())]
}

impl XdsMetrics {
    pub(crate) fn connected(&self, version: &str) {
        self.connected.get_or_create(&version_labels(version)).inc();
    }

    pub(crate) fn disconnected(&self, version: &str) {
        self.connected.get_or_create(&version_labels(version)).dec();
    }

    /// One push of `type_url` to one proxy, which took `took` to compute and hand over.
    pub(crate) fn pushed(&self, type_url: &str, took: Duration) {
        let t = type_label(type_url);
        *lock(&self.counters).pushes.entry(t).or_default() += 1;
        self.push_time
            .get_or_create(&vec![("type".to_owned(), t.to_owned())])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn rejected(&self, type_url: &str) {
        *lock(&self.counters)
            .rejects
            .entry(type_label(type_url))
            .or_default() += 1;
    }

    pub(crate) fn converged(&self, took: Duration) {
        self.convergence.observe(took.as_secs_f64());
    }

    /// Everything in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let counters = lock(&self.counters);
        counter_family(
            &mut out,
            "pilot_xds_pushes",
            "Pushes of lds, rds, cds and sds to proxies.",
            &counters.pushes,
        );
        counter_family(
            &mut out,
            "pilot_total_xds_rejects",
            "Total number of xDS responses from the control plane rejected by proxies.",
            &counters.rejects,
        );
        drop(counters);
        let mut rest = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut rest, &self.registry);
        out + &rest
    }
}

fn counter_family(out: &mut String, name: &str, help: &str, values: &BTreeMap<&str, u64>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (t, v) in values {
        let _ = writeln!(out, "{name}{{type=\"{t}\"}} {v}");
    }
}

/// Counters are plain numbers; a panic elsewhere while the lock was held leaves them usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_istiod_names_and_types() {
        let m = XdsMetrics::default();
        m.connected("0.1.0");
        m.connected("");
        m.connected("0.1.0");
        m.disconnected("0.1.0");
        m.pushed(CLUSTER_TYPE_URL, Duration::from_millis(5));
        m.pushed(CLUSTER_TYPE_URL, Duration::from_millis(50));
        m.pushed(LISTENER_TYPE_URL, Duration::from_millis(5));
        m.rejected(LISTENER_TYPE_URL);
        m.converged(Duration::from_millis(300));
        let text = m.encode();
        for line in [
            "# TYPE pilot_xds_pushes counter",
            "pilot_xds_pushes{type=\"cds\"} 2",
            "pilot_xds_pushes{type=\"lds\"} 1",
            "# TYPE pilot_total_xds_rejects counter",
            "pilot_total_xds_rejects{type=\"lds\"} 1",
            "# TYPE pilot_xds gauge",
            "pilot_xds{version=\"0.1.0\"} 1",
            "pilot_xds{version=\"unknown\"} 1",
            "# TYPE pilot_xds_push_time histogram",
            "pilot_xds_push_time_bucket{type=\"cds\",le=\"0.01\"} 1",
            "pilot_xds_push_time_bucket{type=\"cds\",le=\"0.1\"} 2",
            "pilot_xds_push_time_count{type=\"cds\"} 2",
            "# TYPE pilot_proxy_convergence_time histogram",
            "pilot_proxy_convergence_time_bucket{le=\"0.1\"} 0",
            "pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1",
            "pilot_proxy_convergence_time_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(!text.contains("_total{"), "no _total suffix: {text}");
    }
}
