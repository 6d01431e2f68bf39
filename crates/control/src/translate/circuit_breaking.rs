//! A DestinationRule's circuit breaking -> a cluster's `circuit_breakers` and
//! `outlier_detection`: Istio's `applyConnectionPool` and `applyOutlierDetection`
//! (pilot/pkg/networking/core/cluster_traffic_policy.go), with the Envoy defaults Istio leaves
//! in force written out where weft's proto has no "unset".

use weft_api::Resource;
use weft_api::networking::destination_rule::{ConnectionPoolSettings, OutlierDetection};
use weft_xds::proto;

use super::{Notes, duration};

/// Envoy's `consecutive_5xx` and `consecutive_local_origin_failure` when not configured; both
/// are enforced by default.
const ENVOY_CONSECUTIVE_FAILURES: u32 = 5;

/// The connection pool's limits; `None` when it sets none.
///
/// Istio starts every cluster from thresholds of 2^32-1 and replaces only the limits written
/// above 0: unset and 0 alike mean "no limit", which is 0 in weft's proto.
pub(crate) fn circuit_breakers(
    pool: &ConnectionPoolSettings,
    r: &Resource,
    at: &str,
    notes: &mut Notes,
) -> Option<proto::CircuitBreakers> {
    let limit = |n: i32| u32::try_from(n).unwrap_or(0);
    let mut out = proto::CircuitBreakers::default();
    if let Some(tcp) = &pool.tcp {
        out.max_connections = limit(tcp.max_connections);
    }
    if let Some(http) = &pool.http {
        out.max_pending_requests = limit(http.http1_max_pending_requests);
        out.max_requests = limit(http.http2_max_requests);
        out.max_retries = limit(http.max_retries);
        out.max_requests_per_connection = limit(http.max_requests_per_connection);
        if out.max_requests_per_connection > 1 {
            // The proxy enforces 1 (a connection per request) and accepts larger values
            // without enforcing them (config.proto, CircuitBreakers).
            notes.add(
                Some(r),
                format!("{at}.http.maxRequestsPerConnection"),
                "the proxy enforces only maxRequestsPerConnection 1 (no keep-alive); connections \
                 are reused without this limit",
            );
        }
    }
    (out != proto::CircuitBreakers::default()).then_some(out)
}

/// Outlier detection, as Envoy runs it with the settings Istio writes.
pub(crate) fn outlier_detection(
    od: &OutlierDetection,
    r: &Resource,
    at: &str,
    notes: &mut Notes,
) -> proto::OutlierDetection {
    let mut out = proto::OutlierDetection {
        // Istio passes consecutive5xxErrors only when it is written. Unset, Envoy's own
        // detector stays on (5 in a row, always enforced); 0 turns it off.
        consecutive_5xx: od
            .consecutive_5xx_errors
            .unwrap_or(ENVOY_CONSECUTIVE_FAILURES),
        // Envoy counts gateway errors but enforces no ejection for them unless told to; Istio
        // enforces them only when consecutiveGatewayErrors is above 0. Unset or 0: off.
        consecutive_gateway_errors: od.consecutive_gateway_errors.unwrap_or(0),
        // Unset: the proxy's defaults, which are Envoy's (10s, 30s).
        interval: od.interval.as_ref().and_then(duration),
        base_ejection_time: od.base_ejection_time.as_ref().and_then(duration),
        // Istio writes maxEjectionPercent only above 0; 0 here is the proxy's (Envoy's) 10.
        max_ejection_percent: u32::try_from(od.max_ejection_percent).unwrap_or(0),
        // Istio always writes minHealthPercent as Envoy's panic threshold, so its default of
        // 0 turns panic routing off rather than leaving Envoy's 50; the proto's default is 0.
        min_health_percent: u32::try_from(od.min_health_percent).unwrap_or(0),
        ..Default::default()
    };
    if od.split_external_local_origin_errors {
        // Split: local-origin failures (connect errors, resets, timeouts) have their own
        // counter, Envoy's default 5 unless consecutiveLocalOriginFailures is above 0.
        // Without the split Istio ignores consecutiveLocalOriginFailures (validation rejects
        // setting it then).
        out.split_local_origin_errors = true;
        out.consecutive_local_origin_failures = od
            .consecutive_local_origin_failures
            .filter(|n| *n > 0)
            .unwrap_or(ENVOY_CONSECUTIVE_FAILURES);
    }
    if od.consecutive_errors != 0 {
        // Istio stopped reading the deprecated field in 1.7 (it only warns): it neither
        // enables gateway-error ejection nor changes the 5xx detector.
        notes.add(
            Some(r),
            format!("{at}.consecutiveErrors"),
            "consecutiveErrors is deprecated and has no effect, as in Istio; use \
             consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if !od.outlier_detection_http_error_codes.is_empty() {
        notes.add(
            Some(r),
            format!("{at}.outlierDetectionHttpErrorCodes"),
            "custom error codes for outlier detection are not in the proxy config; 5xx \
             responses count as errors",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> Resource {
        let loaded = weft_api::load_str(
            "dr.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: r, namespace: default}\nspec: {host: r}\n",
        );
        loaded.resources[0].clone()
    }

    fn od(yaml: &str) -> (proto::OutlierDetection, Vec<String>) {
        let od: OutlierDetection = yaml_serde::from_str(yaml).expect("outlierDetection");
        let mut notes = Notes::default();
        let out = outlier_detection(
            &od,
            &resource(),
            "spec.trafficPolicy.outlierDetection",
            &mut notes,
        );
        let notes = notes.finish().iter().map(|n| n.field.clone()).collect();
        (out, notes)
    }

    #[test]
    fn outlier_detection_follows_istio() {
        // An empty outlierDetection still ejects on 5 consecutive 5xx (Envoy's default).
        let (out, notes) = od("{}");
        assert_eq!(
            out,
            proto::OutlierDetection {
                consecutive_5xx: 5,
                ..Default::default()
            }
        );
        assert!(notes.is_empty());

        let (out, _) = od("{consecutive5xxErrors: 0, consecutiveGatewayErrors: 3}");
        assert_eq!(
            (out.consecutive_5xx, out.consecutive_gateway_errors),
            (0, 3)
        );

        let (out, _) = od("{splitExternalLocalOriginErrors: true}");
        assert!(out.split_local_origin_errors);
        assert_eq!(out.consecutive_local_origin_failures, 5);
        let (out, _) =
            od("{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}");
        assert_eq!(out.consecutive_local_origin_failures, 2);

        // The deprecated field changes nothing, and says so.
        let (out, notes) = od("{consecutiveErrors: 7}");
        assert_eq!(
            (out.consecutive_5xx, out.consecutive_gateway_errors),
            (5, 0)
        );
        assert_eq!(
            notes,
            vec!["spec.trafficPolicy.outlierDetection.consecutiveErrors".to_owned()]
        );

        let (out, _) = od(
            "{interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100, minHealthPercent: 20}",
        );
        assert_eq!(out.interval.map(|d| d.seconds), Some(1));
        assert_eq!(out.base_ejection_time.map(|d| d.seconds), Some(180));
        assert_eq!(
            (out.max_ejection_percent, out.min_health_percent),
            (100, 20)
        );
    }

    #[test]
    fn unset_and_zero_limits_are_no_limit() {
        let limits = |yaml: &str| {
            let pool: ConnectionPoolSettings = yaml_serde::from_str(yaml).expect("pool");
            circuit_breakers(&pool, &resource(), "cp", &mut Notes::default())
        };
        assert_eq!(limits("{tcp: {connectTimeout: 1s}}"), None);
        assert_eq!(limits("{http: {maxRetries: 0, idleTimeout: 1s}}"), None);
        assert_eq!(
            limits(
                "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 2, \
                 http2MaxRequests: 3, maxRetries: 4, maxRequestsPerConnection: 1}}"
            ),
            Some(proto::CircuitBreakers {
                max_connections: 1,
                max_pending_requests: 2,
                max_requests: 3,
                max_retries: 4,
                max_requests_per_connection: 1,
            })
        );
    }
}
