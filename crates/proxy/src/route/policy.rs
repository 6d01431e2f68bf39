//! A forwarding route's resilience policy: timeout, retries and fault injection, converted
//! from the proto once and checked, with Envoy's semantics (which Istio's resources use).

use std::time::Duration;

use http::StatusCode;
use weft_xds::proto;

use crate::config::{ConfigError, duration};

/// Default base interval of the retry backoff (Envoy's).
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Default size up to which a request body is kept for replay (Envoy's buffer limit).
const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The whole request, retries included. None: no limit.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub fault: Option<Fault>,
    /// Clusters that get a copy, each with the share of requests mirrored (0-100].
    pub mirrors: Vec<(std::sync::Arc<str>, f64)>,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub backoff_base: Duration,
    pub buffer_limit: usize,
    /// How many times a retry's pick is drawn again while it lands on an endpoint already
    /// tried (Envoy's previous_hosts predicate); 0: no predicate, any endpoint will do.
    pub previous_host_redraws: u32,
}

/// The conditions under which an attempt is retried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    five_xx: bool,
    gateway_error: bool,
    reset: bool,
    connect_failure: bool,
    retriable_4xx: bool,
    refused_stream: bool,
    /// Set by `retriable-status-codes` (or a status code in the list): `statuses` are retried.
    status_codes: bool,
    statuses: Vec<u16>,
    /// gRPC status codes (from `grpc-status` on a Trailers-Only response).
    grpc: Vec<u32>,
}

/// How an attempt went, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    /// The upstream reset or closed before a response (or refused the stream on HTTP/2).
    Reset {
        refused_stream: bool,
    },
    PerTryTimeout,
    Response {
        status: StatusCode,
        grpc_status: Option<u32>,
    },
}

impl RetryOn {
    fn parse(text: &str, resource: &str, field: &str) -> Result<RetryOn, ConfigError> {
        let mut on = RetryOn::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-status-codes" => on.status_codes = true,
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                code => match code.parse::<u16>() {
                    Ok(n) if (100..=599).contains(&n) => {
                        // Istio: a status code in retryOn makes it retriable.
                        on.status_codes = true;
                        on.statuses.push(n);
                    }
                    _ => {
                        return Err(ConfigError::new(
                            resource,
                            field,
                            format!(
                                "{code:?} is not a retry condition (5xx, gateway-error, reset, \
                                 connect-failure, retriable-4xx, refused-stream, \
                                 retriable-status-codes, cancelled, deadline-exceeded, \
                                 internal, resource-exhausted, unavailable, or an HTTP status)"
                            ),
                        ));
                    }
                },
            }
        }
        Ok(on)
    }

    /// Whether an attempt with this outcome is retried (attempts left permitting).
    pub fn retries(&self, outcome: Outcome) -> bool {
        // Envoy: 5xx and gateway-error also cover connect failures, resets and timeouts.
        let upstream_failure = self.five_xx || self.gateway_error;
        match outcome {
            Outcome::ConnectFailure => upstream_failure || self.connect_failure || self.reset,
            Outcome::Reset { refused_stream } => {
                upstream_failure || self.reset || (refused_stream && self.refused_stream)
            }
            Outcome::PerTryTimeout => upstream_failure || self.reset,
            Outcome::Response {
                status,
                grpc_status,
            } => {
                let code = status.as_u16();
                (self.five_xx && status.is_server_error())
                    || (self.gateway_error && matches!(code, 502..=504))
                    || (self.retriable_4xx && code == 409)
                    || (self.status_codes && self.statuses.contains(&code))
                    || grpc_status.is_some_and(|g| self.grpc.contains(&g))
            }
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): uniformly random in
    /// `[0, base * (2^retry - 1)]`, capped at ten times the base, as Envoy's backoff.
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let factor = (1u64 << retry.min(16)) - 1;
        let ceiling = self
            .backoff_base
            .saturating_mul(factor as u32)
            .min(self.backoff_base.saturating_mul(10));
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }
}

/// A fault to inject before forwarding.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(Abort, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    Grpc(u32),
}

impl Policy {
    pub fn build(
        action: &proto::RouteAction,
        resource: &str,
        at: &str,
    ) -> Result<Policy, ConfigError> {
        let timeout = match &action.timeout {
            Some(d) => {
                Some(duration(d, resource, &format!("{at}.timeout"))?).filter(|d| !d.is_zero())
            }
            None => None,
        };
        let retry = match &action.retry_policy {
            Some(r) if r.num_retries > 0 => Some(retry(r, resource, &format!("{at}.retryPolicy"))?),
            _ => None,
        };
        let fault = match &action.fault {
            Some(f) => fault(f, resource, &format!("{at}.fault"))?,
            None => None,
        };
        let mut mirrors = Vec::with_capacity(action.mirrors.len());
        for (i, m) in action.mirrors.iter().enumerate() {
            if m.cluster.is_empty() {
                return Err(ConfigError::new(
                    resource,
                    format!("{at}.mirrors[{i}].cluster"),
                    "cluster is required",
                ));
            }
            let p = percentage(
                m.percentage,
                resource,
                format!("{at}.mirrors[{i}].percentage"),
            )?;
            if p > 0.0 {
                mirrors.push((m.cluster.as_str().into(), p));
            }
        }
        Ok(Policy {
            timeout,
            retry,
            fault,
            mirrors,
        })
    }
}

fn retry(r: &proto::RetryPolicy, resource: &str, at: &str) -> Result<RetryPolicy, ConfigError> {
    let per_try_timeout = match &r.per_try_timeout {
        Some(d) => {
            Some(duration(d, resource, &format!("{at}.perTryTimeout"))?).filter(|d| !d.is_zero())
        }
        None => None,
    };
    let backoff_base = match &r.backoff_base {
        Some(d) => duration(d, resource, &format!("{at}.backoffBase"))?,
        None => DEFAULT_BACKOFF_BASE,
    };
    let mut on = RetryOn::parse(&r.retry_on, resource, &format!("{at}.retryOn"))?;
    for (i, &code) in r.retriable_status_codes.iter().enumerate() {
        match u16::try_from(code) {
            Ok(n) if (100..=599).contains(&n) => on.statuses.push(n),
            _ => {
                return Err(ConfigError::new(
                    resource,
                    format!("{at}.retriableStatusCodes[{i}]"),
                    format!("{code} is not an HTTP status (100-599)"),
                ));
            }
        }
    }
    if on == RetryOn::default() {
        return Err(ConfigError::new(
            resource,
            format!("{at}.retryOn"),
            "no retry condition: name at least one (e.g. 5xx,connect-failure)",
        ));
    }
    Ok(RetryPolicy {
        num_retries: r.num_retries,
        per_try_timeout,
        on,
        backoff_base: if backoff_base.is_zero() {
            DEFAULT_BACKOFF_BASE
        } else {
            backoff_base
        },
        buffer_limit: if r.buffer_limit_bytes == 0 {
            DEFAULT_BUFFER_LIMIT
        } else {
            r.buffer_limit_bytes as usize
        },
        previous_host_redraws: match (r.previous_hosts, r.host_selection_retry_max_attempts) {
            (false, _) => 0,
            // Envoy: unset means one more draw.
            (true, 0) => 1,
            (true, n) => n,
        },
    })
}

fn percentage(p: f64, resource: &str, field: String) -> Result<f64, ConfigError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(ConfigError::new(
            resource,
            field,
            format!("{p} is not a percentage (0-100)"),
        ));
    }
    Ok(p)
}

fn fault(
    f: &proto::FaultInjection,
    resource: &str,
    at: &str,
) -> Result<Option<Fault>, ConfigError> {
    let delay = match &f.delay {
        Some(d) => {
            let fixed = d.fixed_delay.as_ref().ok_or_else(|| {
                ConfigError::new(resource, format!("{at}.delay.fixedDelay"), "required")
            })?;
            let fixed = duration(fixed, resource, &format!("{at}.delay.fixedDelay"))?;
            let p = percentage(d.percentage, resource, format!("{at}.delay.percentage"))?;
            (p > 0.0).then_some((fixed, p))
        }
        None => None,
    };
    let abort = match &f.abort {
        Some(a) => {
            let kind = match a.error_type {
                Some(proto::fault_abort::ErrorType::HttpStatus(s)) => {
                    let status = u16::try_from(s)
                        .ok()
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .filter(|s| s.as_u16() >= 200)
                        .ok_or_else(|| {
                            ConfigError::new(
                                resource,
                                format!("{at}.abort.httpStatus"),
                                format!("{s} is not an HTTP status (200-599)"),
                            )
                        })?;
                    Abort::Http(status)
                }
                Some(proto::fault_abort::ErrorType::GrpcStatus(g)) if g <= 16 => Abort::Grpc(g),
                Some(proto::fault_abort::ErrorType::GrpcStatus(g)) => {
                    return Err(ConfigError::new(
                        resource,
                        format!("{at}.abort.grpcStatus"),
                        format!("{g} is not a gRPC status code (0-16)"),
                    ));
                }
                None => {
                    return Err(ConfigError::new(
                        resource,
                        format!("{at}.abort"),
                        "one of httpStatus or grpcStatus is required",
                    ));
                }
            };
            let p = percentage(a.percentage, resource, format!("{at}.abort.percentage"))?;
            (p > 0.0).then_some((kind, p))
        }
        None => None,
    };
    Ok((delay.is_some() || abort.is_some()).then_some(Fault { delay, abort }))
}

/// True with probability `percent`/100, given a uniform `random` in [0, 1).
pub fn chance(percent: f64, random: f64) -> bool {
    random * 100.0 < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(text: &str) -> RetryOn {
        RetryOn::parse(text, "r", "retryOn").expect("parses")
    }

    fn response(code: u16) -> Outcome {
        Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            grpc_status: None,
        }
    }

    #[test]
    fn conditions_follow_envoy() {
        let five = on("5xx");
        assert!(five.retries(response(500)));
        assert!(five.retries(response(503)));
        assert!(!five.retries(response(404)));
        assert!(five.retries(Outcome::ConnectFailure));
        assert!(five.retries(Outcome::PerTryTimeout));

        let gw = on("gateway-error");
        assert!(!gw.retries(response(500)));
        assert!(gw.retries(response(502)) && gw.retries(response(504)));

        let cf = on("connect-failure");
        assert!(cf.retries(Outcome::ConnectFailure));
        assert!(!cf.retries(Outcome::Reset {
            refused_stream: false
        }));
        assert!(!cf.retries(response(503)));

        let refused = on("refused-stream");
        assert!(refused.retries(Outcome::Reset {
            refused_stream: true
        }));
        assert!(!refused.retries(Outcome::Reset {
            refused_stream: false
        }));

        // Istio's retryOn may list status codes.
        let codes = on("503, retriable-4xx");
        assert!(codes.retries(response(503)));
        assert!(!codes.retries(response(500)));
        assert!(codes.retries(response(409)));

        let grpc = on("unavailable,cancelled");
        let unavailable = Outcome::Response {
            status: StatusCode::OK,
            grpc_status: Some(14),
        };
        assert!(grpc.retries(unavailable));
        assert!(!grpc.retries(Outcome::Response {
            status: StatusCode::OK,
            grpc_status: Some(5),
        }));
    }

    #[test]
    fn retriable_status_codes_need_their_condition() {
        let policy = |yaml: &str| {
            let r: proto::RetryPolicy = yaml_serde::from_str(yaml).expect("yaml");
            retry(&r, "r", "retryPolicy")
        };
        // Istio's default policy: the listed 503 is retried, other statuses are not.
        let p = policy(
            "{numRetries: 2, retryOn: 'connect-failure,retriable-status-codes', \
             retriableStatusCodes: [503], previousHosts: true, hostSelectionRetryMaxAttempts: 5}",
        )
        .expect("valid");
        assert!(p.on.retries(response(503)));
        assert!(!p.on.retries(response(500)));
        assert_eq!(p.previous_host_redraws, 5);
        // Listed codes without `retriable-status-codes` are not retried (Envoy).
        let p =
            policy("{numRetries: 2, retryOn: 5xx, retriableStatusCodes: [409]}").expect("valid");
        assert!(!p.on.retries(response(409)));
        assert_eq!(p.previous_host_redraws, 0);
        let p = policy("{numRetries: 1, retryOn: gateway-error, previousHosts: true}").expect("ok");
        assert_eq!(p.previous_host_redraws, 1, "Envoy's default: one more draw");
        let err = policy("{numRetries: 1, retryOn: 5xx, retriableStatusCodes: [503, 42]}")
            .expect_err("42 is no status");
        assert!(
            err.to_string()
                .contains("retryPolicy.retriableStatusCodes[1]: 42 is not an HTTP status"),
            "{err}"
        );
    }

    #[test]
    fn unknown_conditions_are_named() {
        let err = RetryOn::parse("5xx,gateway-eror", "route \"r\"", "retryOn").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"gateway-eror\" is not a retry condition"),
            "{err}"
        );
        assert!(RetryOn::parse("700", "r", "f").is_err());
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = RetryPolicy {
            num_retries: 5,
            per_try_timeout: None,
            on: on("5xx"),
            backoff_base: Duration::from_millis(25),
            buffer_limit: 1024,
            previous_host_redraws: 0,
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(25));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(75));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(175));
        assert_eq!(
            p.backoff(4, 1.0),
            Duration::from_millis(250),
            "capped at 10x"
        );
        assert_eq!(p.backoff(30, 0.5), Duration::from_millis(125));
        assert_eq!(p.backoff(2, 0.0), Duration::ZERO);
    }

    #[test]
    fn faults_are_checked() {
        let yaml =
            "delay: {fixedDelay: 7s, percentage: 100}\nabort: {httpStatus: 500, percentage: 50.5}";
        let f: proto::FaultInjection = yaml_serde::from_str(yaml).unwrap();
        let built = fault(&f, "r", "route").unwrap().unwrap();
        assert_eq!(built.delay, Some((Duration::from_secs(7), 100.0)));
        assert_eq!(
            built.abort,
            Some((Abort::Http(StatusCode::INTERNAL_SERVER_ERROR), 50.5))
        );
        for (yaml, field) in [
            (
                "abort: {httpStatus: 99, percentage: 1}",
                "route.abort.httpStatus",
            ),
            (
                "abort: {grpcStatus: 17, percentage: 1}",
                "route.abort.grpcStatus",
            ),
            (
                "abort: {httpStatus: 500, percentage: 101}",
                "route.abort.percentage",
            ),
            ("delay: {percentage: 5}", "route.delay.fixedDelay"),
        ] {
            let f: proto::FaultInjection = yaml_serde::from_str(yaml).unwrap();
            let err = fault(&f, "r", "route").unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
        // Percentages of 0 inject nothing.
        let f: proto::FaultInjection =
            yaml_serde::from_str("abort: {httpStatus: 500, percentage: 0}").unwrap();
        assert!(fault(&f, "r", "route").unwrap().is_none());
    }

    #[test]
    fn chance_is_a_share() {
        assert!(chance(100.0, 0.999));
        assert!(!chance(0.0, 0.0));
        assert!(chance(50.0, 0.49) && !chance(50.0, 0.5));
    }
}
