//! Outlier detection (Envoy's, which Istio's DestinationRule `outlierDetection` configures):
//! endpoints that fail in a row are ejected from load balancing for a while, longer each time.
//!
//! Counting follows Envoy with `split_external_local_origin_errors` off unless configured: a
//! local origin failure (connect failure, reset, timeout) counts as a 5xx and as a gateway
//! error. Differences from Envoy, on purpose: an ejected endpoint comes back as soon as its
//! time is up (Envoy checks at the next `interval` tick), and the ejection multiplier decays
//! by one for each `interval` an endpoint spends back in service without being ejected.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use weft_xds::proto;

use super::endpoint::Endpoint;
use crate::config::{ConfigError, duration};

/// Envoy's default cap on one ejection (`max_ejection_time`).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// How an exchange with an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The upstream answered with this status.
    Status(u16),
    /// Connecting failed, or the connection was reset or timed out before a response.
    LocalFailure,
}

/// An endpoint's failure counters and ejection state. Times are milliseconds since the
/// cluster's detector was built (0: never).
#[derive(Debug, Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until this time; 0 or in the past: in service.
    ejected_until: AtomicU64,
    /// Times ejected, decayed while healthy; multiplies the base ejection time.
    ejections: AtomicU32,
    /// When the multiplier last changed (ejection or decay).
    last_change: AtomicU64,
    /// Exchanges reported, with or without outlier detection (admin `/clusters`): answered
    /// below 500, and answered 5xx or failed locally.
    rq_success: AtomicU64,
    rq_error: AtomicU64,
}

impl Health {
    /// Counts an exchange for the endpoint's admin stats.
    pub(super) fn count(&self, result: Reported) {
        match result {
            Reported::Status(s) if s < 500 => self.rq_success.fetch_add(1, Relaxed),
            _ => self.rq_error.fetch_add(1, Relaxed),
        };
    }

    /// (succeeded, failed) exchanges so far.
    pub fn requests(&self) -> (u64, u64) {
        (self.rq_success.load(Relaxed), self.rq_error.load(Relaxed))
    }
}

/// A cluster's outlier detection settings, and the clock they count in.
#[derive(Debug)]
pub struct Detector {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    split_local: bool,
    interval: Duration,
    base_ejection_time: Duration,
    max_ejection_percent: u32,
    min_health_percent: u32,
    epoch: Instant,
}

impl Detector {
    pub fn build(cfg: &proto::OutlierDetection, resource: &str) -> Result<Detector, ConfigError> {
        let dur = |d: &Option<weft_xds::proto_types::Duration>, field: &str, default: u64| {
            d.as_ref().map_or(Ok(Duration::from_secs(default)), |d| {
                duration(d, resource, &format!("outlierDetection.{field}"))
            })
        };
        let interval = dur(&cfg.interval, "interval", 10)?;
        let base_ejection_time = dur(&cfg.base_ejection_time, "baseEjectionTime", 30)?;
        for (value, field) in [
            (cfg.max_ejection_percent, "maxEjectionPercent"),
            (cfg.min_health_percent, "minHealthPercent"),
        ] {
            if value > 100 {
                return Err(ConfigError::new(
                    resource,
                    format!("outlierDetection.{field}"),
                    format!("{value} is not a percentage (0-100)"),
                ));
            }
        }
        Ok(Detector {
            consecutive_5xx: cfg.consecutive_5xx,
            consecutive_gateway: cfg.consecutive_gateway_errors,
            consecutive_local: cfg.consecutive_local_origin_failures,
            split_local: cfg.split_local_origin_errors,
            interval: if interval.is_zero() {
                Duration::from_secs(10)
            } else {
                interval
            },
            base_ejection_time,
            max_ejection_percent: if cfg.max_ejection_percent == 0 {
                10
            } else {
                cfg.max_ejection_percent
            },
            min_health_percent: cfg.min_health_percent,
            epoch: Instant::now(),
        })
    }

    /// Counts time from `previous`'s epoch, so that the ejection times of endpoints kept
    /// across a rebuild (see `Cluster::build_after`) stay right.
    pub(super) fn continue_from(&mut self, previous: &Detector) {
        self.epoch = previous.epoch;
    }

    fn now(&self) -> u64 {
        // +1 so that 0 can mean "never".
        Instant::now().duration_since(self.epoch).as_millis() as u64 + 1
    }

    pub fn is_ejected(&self, ep: &Endpoint) -> bool {
        ep.health.ejected_until.load(Relaxed) > self.now()
    }

    /// Records an exchange's result; ejects the endpoint when a threshold is reached and the
    /// cluster may lose another endpoint.
    pub fn report(&self, endpoints: &[std::sync::Arc<Endpoint>], ep: &Endpoint, result: Reported) {
        let h = &ep.health;
        let now = self.now();
        let (five_xx, gateway, local) = match result {
            Reported::Status(s) if s < 500 => {
                h.consecutive_5xx.store(0, Relaxed);
                h.consecutive_gateway.store(0, Relaxed);
                h.consecutive_local.store(0, Relaxed);
                self.decay(h, now);
                return;
            }
            Reported::Status(s) => (true, matches!(s, 502..=504), false),
            Reported::LocalFailure if self.split_local => (false, false, true),
            Reported::LocalFailure => (true, true, false),
        };
        let bump = |counter: &AtomicU32, hit: bool| {
            if hit {
                counter.fetch_add(1, Relaxed) + 1
            } else {
                counter.store(0, Relaxed);
                0
            }
        };
        let c5 = bump(&h.consecutive_5xx, five_xx);
        let gw = bump(&h.consecutive_gateway, gateway);
        let lo = if self.split_local {
            bump(&h.consecutive_local, local)
        } else {
            0
        };
        let tripped = (self.consecutive_5xx > 0 && c5 >= self.consecutive_5xx)
            || (self.consecutive_gateway > 0 && gw >= self.consecutive_gateway)
            || (self.consecutive_local > 0 && lo >= self.consecutive_local);
        if tripped && !self.is_ejected(ep) && self.may_eject(endpoints, now) {
            let times = h.ejections.fetch_add(1, Relaxed) + 1;
            let length = self
                .base_ejection_time
                .saturating_mul(times)
                .min(MAX_EJECTION_TIME.max(self.base_ejection_time));
            h.ejected_until
                .store(now + length.as_millis() as u64, Relaxed);
            h.last_change.store(now, Relaxed);
            h.consecutive_5xx.store(0, Relaxed);
            h.consecutive_gateway.store(0, Relaxed);
            h.consecutive_local.store(0, Relaxed);
            tracing::info!(endpoint = %ep.address, ?length, times, "outlier detection: ejected");
        }
    }

    /// An endpoint back in service for a whole interval has its multiplier lowered by one.
    fn decay(&self, h: &Health, now: u64) {
        let ejections = h.ejections.load(Relaxed);
        if ejections == 0 {
            return;
        }
        let back_since = h
            .ejected_until
            .load(Relaxed)
            .max(h.last_change.load(Relaxed));
        if now >= back_since + self.interval.as_millis() as u64 {
            h.ejections.store(ejections - 1, Relaxed);
            h.last_change.store(now, Relaxed);
        }
    }

    /// maxEjectionPercent, with Envoy's rule that one endpoint can always be ejected.
    fn may_eject(&self, endpoints: &[std::sync::Arc<Endpoint>], now: u64) -> bool {
        let ejected = endpoints
            .iter()
            .filter(|e| e.health.ejected_until.load(Relaxed) > now)
            .count();
        let allowed = (endpoints.len() * self.max_ejection_percent as usize / 100).max(1);
        ejected < allowed
    }

    /// Whether load balancing must avoid ejected endpoints now: not when fewer than
    /// minHealthPercent of them are in service (then every endpoint is used, as Envoy's panic
    /// mode, which Istio sets from minHealthPercent).
    pub fn enforcing(&self, endpoints: &[std::sync::Arc<Endpoint>]) -> bool {
        if self.min_health_percent == 0 {
            return true;
        }
        let now = self.now();
        let healthy = endpoints
            .iter()
            .filter(|e| e.health.ejected_until.load(Relaxed) <= now)
            .count();
        healthy * 100 >= endpoints.len() * self.min_health_percent as usize
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn detector(yaml: &str) -> Detector {
        let cfg: proto::OutlierDetection = yaml_serde::from_str(yaml).expect("config");
        Detector::build(&cfg, "cluster \"c\"").expect("builds")
    }

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Endpoint::for_test(&format!("10.0.0.{}:80", i + 1), 1))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_eject_for_growing_times() {
        let d = detector(
            "{consecutive5xx: 3, baseEjectionTime: 30s, maxEjectionPercent: 100, interval: 10s}",
        );
        let eps = endpoints(2);
        let ep = &eps[0];
        d.report(&eps, ep, Reported::Status(500));
        d.report(&eps, ep, Reported::Status(503));
        assert!(!d.is_ejected(ep));
        d.report(&eps, ep, Reported::Status(500));
        assert!(d.is_ejected(ep), "third 5xx in a row ejects");
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(d.is_ejected(ep));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!d.is_ejected(ep), "back after the base ejection time");
        // Ejected again at once: twice as long.
        for _ in 0..3 {
            d.report(&eps, ep, Reported::LocalFailure);
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(d.is_ejected(ep), "second ejection lasts 2 x 30s");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!d.is_ejected(ep));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let d = detector("{consecutive5xx: 2, maxEjectionPercent: 100}");
        let eps = endpoints(2);
        d.report(&eps, &eps[0], Reported::Status(500));
        d.report(&eps, &eps[0], Reported::Status(200));
        d.report(&eps, &eps[0], Reported::Status(500));
        assert!(!d.is_ejected(&eps[0]));
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_and_local_failures() {
        let d = detector("{consecutiveGatewayErrors: 2, maxEjectionPercent: 100}");
        let eps = endpoints(2);
        d.report(&eps, &eps[0], Reported::Status(500));
        d.report(&eps, &eps[0], Reported::Status(500));
        assert!(!d.is_ejected(&eps[0]), "500 is not a gateway error");
        d.report(&eps, &eps[0], Reported::Status(502));
        d.report(&eps, &eps[0], Reported::LocalFailure);
        assert!(
            d.is_ejected(&eps[0]),
            "a connect failure counts as a gateway error"
        );

        let split = detector(
            "{consecutive5xx: 1, consecutiveLocalOriginFailures: 2, splitLocalOriginErrors: true, maxEjectionPercent: 100}",
        );
        split.report(&eps, &eps[1], Reported::LocalFailure);
        assert!(
            !split.is_ejected(&eps[1]),
            "split: local failures count apart"
        );
        split.report(&eps, &eps[1], Reported::LocalFailure);
        assert!(split.is_ejected(&eps[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_but_always_one() {
        let d = detector("{consecutive5xx: 1, maxEjectionPercent: 10}");
        let eps = endpoints(3);
        d.report(&eps, &eps[0], Reported::Status(500));
        assert!(
            d.is_ejected(&eps[0]),
            "10% of 3 rounds down, but one may always go"
        );
        d.report(&eps, &eps[1], Reported::Status(500));
        assert!(!d.is_ejected(&eps[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn below_min_health_every_endpoint_is_used() {
        let d = detector("{consecutive5xx: 1, maxEjectionPercent: 100, minHealthPercent: 60}");
        let eps = endpoints(2);
        assert!(d.enforcing(&eps));
        d.report(&eps, &eps[0], Reported::Status(500));
        assert!(!d.enforcing(&eps), "1 of 2 healthy is under 60%");
    }

    #[test]
    fn bad_percentages_are_refused() {
        let cfg: proto::OutlierDetection =
            yaml_serde::from_str("{maxEjectionPercent: 150}").unwrap();
        let err = Detector::build(&cfg, "cluster \"c\"").unwrap_err();
        assert_eq!(err.field, "outlierDetection.maxEjectionPercent");
    }
}
