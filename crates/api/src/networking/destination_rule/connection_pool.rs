//! The circuit-breaking part of a DestinationRule's traffic policy: connection pool limits and
//! outlier detection.

use serde::{Deserialize, Serialize};

use super::duration;
use crate::Duration;
use crate::networking::gateway::is_default;
use crate::validate::{Cx, Validate, rules};

/// Circuit-breaker limits on the connections and requests to each upstream host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Limits for TCP (and HTTP/1.1) connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum connections to a host; unlimited (2^32-1) when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_connections: i32,
    /// TCP connect timeout; 10s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Enables SO_KEEPALIVE with these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// A connection is closed this long after it was established; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Close the connection after this long without bytes either way; 1h when unset, `0s`
    /// disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive; unset fields use the operating system's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    #[serde(default, skip_serializing_if = "is_default")]
    pub probes: u32,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Limits for HTTP/1.1, HTTP/2 and gRPC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests queued while waiting for a connection; unlimited when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub http1_max_pending_requests: i32,
    /// Active requests to a host (HTTP/1.1 and HTTP/2); unlimited when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub http2_max_requests: i32,
    /// Requests per connection; 1 disables keep-alive, 0 is unlimited.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_requests_per_connection: i32,
    /// Outstanding retries to all hosts; unlimited when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_retries: i32,
    /// Close a pooled connection after this long without active requests; 1h when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 connections to the upstream are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "is_default")]
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Use the client's HTTP version upstream (then `h2UpgradePolicy` has no effect).
    #[serde(default, skip_serializing_if = "is_default")]
    pub use_client_protocol: bool,
    /// Concurrent streams per HTTP/2 connection; 2^31-1 when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_concurrent_streams: i32,
    /// HTTP/2 PING keepalive towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide default.
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// HTTP/2 PING frames; both fields are required when set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Ejects hosts that keep failing from the load-balancing pool for a while.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated. Istio's meaning is that of `consecutiveGatewayErrors`: consecutive 502, 503
    /// or 504 responses (connect failures and timeouts over TCP) before a host is ejected.
    #[serde(default, skip_serializing_if = "is_default")]
    pub consecutive_errors: i32,
    /// Count locally originated failures (connect errors, timeouts) separately, against
    /// `consecutiveLocalOriginFailures`, instead of as 5xx errors.
    #[serde(default, skip_serializing_if = "is_default")]
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection; 5 when unset. Needs
    /// `splitExternalLocalOriginErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504) before ejection; off when unset or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx errors before ejection; 5 when unset, 0 disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps; 10s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection time, multiplied by the number of times the host was ejected; 30s when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Most hosts of the pool that may be ejected, in percent; 10 when 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_ejection_percent: i32,
    /// Outlier detection is suspended when fewer hosts than this percent are healthy; 0 (never)
    /// by default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_health_percent: i32,
    /// HTTP statuses (100..599) that count as errors; 5xx when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, cx: &mut Cx) {
        if self.tcp.is_none() && self.http.is_none() {
            cx.error("connectionPool must set tcp or http");
        }
        cx.opt("tcp", &self.tcp, |cx, tcp| {
            non_negative(cx, "maxConnections", tcp.max_connections);
            duration(cx, "connectTimeout", &tcp.connect_timeout);
            duration(cx, "maxConnectionDuration", &tcp.max_connection_duration);
            // 0s turns the idle timeout off.
            cx.opt("idleTimeout", &tcp.idle_timeout, |cx, d| {
                cx.check(d.check_allow_zero())
            });
            cx.opt("tcpKeepalive", &tcp.tcp_keepalive, |cx, ka| {
                duration(cx, "time", &ka.time);
                duration(cx, "interval", &ka.interval);
            });
        });
        cx.opt("http", &self.http, |cx, http| {
            non_negative(
                cx,
                "http1MaxPendingRequests",
                http.http1_max_pending_requests,
            );
            non_negative(cx, "http2MaxRequests", http.http2_max_requests);
            non_negative(
                cx,
                "maxRequestsPerConnection",
                http.max_requests_per_connection,
            );
            non_negative(cx, "maxRetries", http.max_retries);
            non_negative(cx, "maxConcurrentStreams", http.max_concurrent_streams);
            duration(cx, "idleTimeout", &http.idle_timeout);
            if http.h2_upgrade_policy == H2UpgradePolicy::Upgrade && http.use_client_protocol {
                cx.error_at(
                    "useClientProtocol",
                    "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
                );
            }
            cx.opt("http2KeepAlive", &http.http2_keep_alive, |cx, ka| {
                for (name, d) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                    match d {
                        None => cx.error_at(name, format!("http2KeepAlive {name} is required")),
                        Some(d) => cx.check_at(name, d.check()),
                    }
                }
            });
        });
    }
}

fn non_negative(cx: &mut Cx, name: &str, value: i32) {
    if value < 0 {
        cx.error_at(name, format!("{name} must not be negative (got {value})"));
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, cx: &mut Cx) {
        if self.consecutive_errors != 0 {
            cx.deprecated(
                "consecutiveErrors",
                "`consecutiveGatewayErrors` (the same meaning: 502, 503 and 504) or \
                 `consecutive5xxErrors`",
            );
        }
        if !self.split_external_local_origin_errors
            && self
                .consecutive_local_origin_failures
                .is_some_and(|n| n > 0)
        {
            cx.error_at(
                "consecutiveLocalOriginFailures",
                "consecutiveLocalOriginFailures only applies when \
                 splitExternalLocalOriginErrors is true",
            );
        }
        duration(cx, "interval", &self.interval);
        duration(cx, "baseEjectionTime", &self.base_ejection_time);
        cx.check_at(
            "maxEjectionPercent",
            rules::percent(self.max_ejection_percent.into()),
        );
        cx.check_at(
            "minHealthPercent",
            rules::percent(self.min_health_percent.into()),
        );
        cx.field("outlierDetectionHttpErrorCodes", |cx| {
            for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
                if !(100..=599).contains(code) {
                    cx.index(i, |cx| {
                        cx.error(format!("HTTP status {code} is not in range 100..599"))
                    });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::networking::destination_rule::tests::check;
    use crate::validate::test_support::errors;

    #[test]
    fn invalid_connection_pool() {
        let cp = "spec.trafficPolicy.connectionPool";
        let cases: &[(&str, Vec<(String, &str)>)] = &[
            ("{}", vec![(cp.into(), "tcp or http")]),
            (
                "{tcp: {maxConnections: -1, connectTimeout: 500us, maxConnectionDuration: 0s, idleTimeout: 1.5ms, tcpKeepalive: {time: 0s, interval: 1.0001s}}}",
                vec![
                    (format!("{cp}.tcp.maxConnections"), "must not be negative"),
                    (format!("{cp}.tcp.connectTimeout"), "at least 1ms"),
                    (format!("{cp}.tcp.maxConnectionDuration"), "at least 1ms"),
                    (format!("{cp}.tcp.idleTimeout"), "ms precision"),
                    (format!("{cp}.tcp.tcpKeepalive.time"), "at least 1ms"),
                    (format!("{cp}.tcp.tcpKeepalive.interval"), "ms precision"),
                ],
            ),
            (
                "{http: {http1MaxPendingRequests: -1, http2MaxRequests: -1, maxRequestsPerConnection: -1, maxRetries: -1, maxConcurrentStreams: -1, idleTimeout: 0s}}",
                vec![
                    (format!("{cp}.http.http1MaxPendingRequests"), "negative"),
                    (format!("{cp}.http.http2MaxRequests"), "negative"),
                    (format!("{cp}.http.maxRequestsPerConnection"), "negative"),
                    (format!("{cp}.http.maxRetries"), "negative"),
                    (format!("{cp}.http.maxConcurrentStreams"), "negative"),
                    (format!("{cp}.http.idleTimeout"), "at least 1ms"),
                ],
            ),
            (
                "{http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true, http2KeepAlive: {interval: 10s}}}",
                vec![
                    (format!("{cp}.http.useClientProtocol"), "UPGRADE"),
                    (format!("{cp}.http.http2KeepAlive.timeout"), "required"),
                ],
            ),
        ];
        for (pool, want) in cases {
            let yaml = format!("host: r\ntrafficPolicy:\n  connectionPool: {pool}\n");
            let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
            check(&[(&yaml, &want)], errors);
        }
    }

    #[test]
    fn invalid_outlier_detection() {
        let od = "spec.trafficPolicy.outlierDetection";
        let yaml = "host: r\ntrafficPolicy:\n  outlierDetection: {consecutiveLocalOriginFailures: 5, interval: 1x, baseEjectionTime: 0s, maxEjectionPercent: 101, minHealthPercent: -1, outlierDetectionHttpErrorCodes: [503, 99, 600]}";
        let want = [
            (
                format!("{od}.consecutiveLocalOriginFailures"),
                "splitExternalLocalOriginErrors",
            ),
            (format!("{od}.interval"), "invalid duration"),
            (format!("{od}.baseEjectionTime"), "at least 1ms"),
            (format!("{od}.maxEjectionPercent"), "0..100"),
            (format!("{od}.minHealthPercent"), "0..100"),
            (
                format!("{od}.outlierDetectionHttpErrorCodes[1]"),
                "100..599",
            ),
            (
                format!("{od}.outlierDetectionHttpErrorCodes[2]"),
                "100..599",
            ),
        ];
        let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        check(&[(yaml, &want)], errors);
    }
}
