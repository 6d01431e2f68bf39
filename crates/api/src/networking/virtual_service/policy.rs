//! The policies of an HTTP rule, following Istio's checks (istio/istio
//! `pkg/config/validation`): header changes, redirect, direct response, rewrite, retries, CORS,
//! fault injection and mirrors.

use super::syntax::{
    decode_base64, header_to_change, header_value, invalid_header_name, is_token, match_regex,
    request_header_to_write,
};
use super::validate::required_destination;
use super::*;
use crate::suggest::did_you_mean;
use crate::validate::{Cx, Validate, rules};

impl Validate for Headers {
    fn validate(&self, cx: &mut Cx) {
        cx.opt("request", &self.request, |cx, ops| ops.check(cx, true));
        cx.opt("response", &self.response, |cx, ops| ops.check(cx, false));
    }
}

impl HeaderOperations {
    /// Request headers may set the authority (`host`, `:authority`); nothing else may touch
    /// `host` or a pseudo-header.
    fn check(&self, cx: &mut Cx, request: bool) {
        for (op, entries) in [("set", &self.set), ("add", &self.add)] {
            cx.field(op, |cx| {
                for (name, value) in entries {
                    cx.key(name, |cx| {
                        cx.check(if request {
                            request_header_to_write(name)
                        } else {
                            header_to_change(name)
                        });
                        cx.check(header_value(value));
                    });
                }
            });
        }
        cx.each("remove", &self.remove, |cx, name| {
            cx.check(header_to_change(name))
        });
    }
}

impl Validate for HttpRedirect {
    fn validate(&self, cx: &mut Cx) {
        self.validate_in(cx, &[]);
    }
}

/// The redirect codes Envoy can send.
const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

impl HttpRedirect {
    pub(super) fn validate_in(&self, cx: &mut Cx, matches: &[HttpMatchRequest]) {
        if !self.uri.is_empty() && !self.prefix_rewrite.is_empty() {
            cx.error_at(
                "prefixRewrite",
                "uri and prefixRewrite cannot both be set: uri replaces the whole path, \
                 prefixRewrite only the matched prefix",
            );
        }
        if !self.prefix_rewrite.is_empty() {
            for (i, m) in matches.iter().enumerate() {
                if m.uri.as_ref().is_some_and(|u| u.prefix.is_none()) {
                    cx.error_at(
                        "prefixRewrite",
                        format!(
                            "prefixRewrite needs every URI match of the rule to be a prefix \
                             match, but match[{i}].uri is not"
                        ),
                    );
                }
            }
        }
        if self.uri.is_empty()
            && self.prefix_rewrite.is_empty()
            && self.authority.is_empty()
            && self.scheme.is_empty()
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            cx.error(
                "redirect must set at least one of uri, prefixRewrite, authority, scheme, port \
                 or derivePort",
            );
        }
        let code = self.redirect_code;
        if code != 0 && !(300..=399).contains(&code) {
            cx.error_at(
                "redirectCode",
                format!("{code} is not a redirect status code (3xx)"),
            );
        } else if code != 0 && !REDIRECT_CODES.contains(&code) {
            cx.field("redirectCode", |cx| {
                cx.warn(format!(
                    "redirect code {code} is not one the proxy can send (301, 302, 303, 307, 308)"
                ))
            });
        }
        if !self.scheme.is_empty() && self.scheme != "http" && self.scheme != "https" {
            cx.error_at(
                "scheme",
                format!(
                    "redirect scheme {:?} is not supported: use http or https",
                    self.scheme
                ),
            );
        }
        if let Some(port) = self.port
            && port > 0
        {
            cx.check_at("port", rules::port(port));
        }
        if self.port.is_some() && self.derive_port.is_some() {
            cx.error_at("derivePort", "set only one of port or derivePort");
        }
    }
}

pub(super) const KIB: usize = 1024;
pub(super) const MIB: usize = 1024 * KIB;

impl Validate for HttpDirectResponse {
    fn validate(&self, cx: &mut Cx) {
        if self.status == 0 {
            cx.error_at(
                "status",
                "status is required (an HTTP status code, 200..599)",
            );
        } else {
            cx.check_at("status", rules::http_status(self.status));
        }
        cx.opt("body", &self.body, |cx, b| b.validate(cx));
    }
}

impl Validate for HttpBody {
    fn validate(&self, cx: &mut Cx) {
        if self.string.is_some() && self.bytes.is_some() {
            cx.error("set only one of string or bytes");
        }
        let mut size = self.string.as_ref().map_or(0, String::len);
        if let Some(bytes) = &self.bytes {
            match decode_base64(bytes) {
                Ok(decoded) => size = size.max(decoded.len()),
                Err(e) => cx.error_at("bytes", format!("bytes must be base64: {e}")),
            }
        }
        // Istio's limits: the body travels in every proxy's configuration.
        if size > MIB {
            cx.error(format!(
                "the body is {size} bytes; direct response bodies must be under 1 MiB"
            ));
        } else if size > 100 * KIB {
            cx.warn(format!(
                "the body is {size} bytes; large direct responses slow down configuration pushes"
            ));
        }
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, cx: &mut Cx) {
        if !self.uri.is_empty() && self.uri_regex_rewrite.is_some() {
            cx.error_at("uriRegexRewrite", "set only one of uri or uriRegexRewrite");
        }
        if self.uri.is_empty() && self.uri_regex_rewrite.is_none() && self.authority.is_empty() {
            cx.error("rewrite must set at least one of uri, uriRegexRewrite or authority");
        }
        cx.opt("uriRegexRewrite", &self.uri_regex_rewrite, |cx, r| {
            r.validate(cx)
        });
    }
}

impl Validate for RegexRewrite {
    fn validate(&self, cx: &mut Cx) {
        if self.pattern.is_empty() {
            cx.error_at("match", "match (the regex to replace) is required");
        } else {
            cx.check_at("match", match_regex(&self.pattern));
        }
        if self.rewrite.is_empty() {
            cx.error_at("rewrite", "rewrite (the replacement) is required");
        }
    }
}

impl Validate for HttpRetry {
    fn validate(&self, cx: &mut Cx) {
        if self.attempts < 0 {
            cx.error_at(
                "attempts",
                format!("attempts {} is negative", self.attempts),
            );
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || !self.retry_on.is_empty()
                || self.retry_remote_localities.is_some())
        {
            cx.error(
                "attempts is 0, which disables retries, yet the retry policy is configured; set \
                 attempts above 0 (or remove the other retry fields)",
            );
        }
        cx.opt("perTryTimeout", &self.per_try_timeout, |cx, d| {
            cx.check(d.check())
        });
        if !self.retry_on.is_empty() {
            cx.check_at("retryOn", rules::retry_on(&self.retry_on));
        }
        cx.opt("backoff", &self.backoff, |cx, d| cx.check(d.check()));
    }
}

/// The methods Istio accepts in `allowMethods`.
const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

impl Validate for CorsPolicy {
    fn validate(&self, cx: &mut Cx) {
        if !self.allow_origin.is_empty() {
            cx.deprecated(
                "allowOrigin",
                "allowOrigins, a list of string matches (e.g. `- exact: https://example.com`)",
            );
            if !self.allow_origins.is_empty() {
                cx.field("allowOrigin", |cx| {
                    cx.warn("allowOrigin is ignored because allowOrigins is set")
                });
            }
        }
        cx.each("allowOrigins", &self.allow_origins, |cx, origin| {
            if origin.set_count() > 1 {
                cx.error("set only one of exact, prefix or regex");
            }
            match origin.matcher() {
                None | Some(Matcher::Exact("") | Matcher::Prefix("") | Matcher::Regex("")) => {
                    cx.error("an allowed origin needs a non-empty exact, prefix or regex")
                }
                Some(Matcher::Regex(re)) => cx.check_at("regex", match_regex(re)),
                Some(_) => {}
            }
        });
        cx.each("allowMethods", &self.allow_methods, |cx, method| {
            if !CORS_METHODS.contains(&method.as_str()) {
                let hint = did_you_mean(method, CORS_METHODS)
                    .map(|m| format!("; did you mean {m:?}?"))
                    .unwrap_or_default();
                cx.error(format!(
                    "{method:?} is not a supported HTTP method (GET, HEAD, POST, PUT, PATCH, \
                     DELETE, CONNECT, OPTIONS, TRACE or *){hint}"
                ));
            }
        });
        cx.each("allowHeaders", &self.allow_headers, |cx, h| {
            cx.check(cors_header(h))
        });
        cx.each("exposeHeaders", &self.expose_headers, |cx, h| {
            cx.check(cors_header(h))
        });
        cx.opt("maxAge", &self.max_age, |cx, d| {
            match (d.check(), d.get()) {
                (Err(e), _) => cx.error(e),
                (Ok(()), Ok(age)) if age.subsec_nanos() != 0 => cx.error(format!(
                    "maxAge {d} must be whole seconds (Access-Control-Max-Age is in seconds)"
                )),
                _ => {}
            }
        });
    }
}

fn cors_header(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("header name cannot be empty".into())
    } else if name == "*" || is_token(name) {
        Ok(())
    } else {
        Err(invalid_header_name(name))
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, cx: &mut Cx) {
        if self.delay.is_none() && self.abort.is_none() {
            cx.error("fault injection needs a delay, an abort, or both");
        }
        cx.opt("delay", &self.delay, |cx, d| d.validate(cx));
        cx.opt("abort", &self.abort, |cx, a| a.validate(cx));
    }
}

impl Validate for Delay {
    fn validate(&self, cx: &mut Cx) {
        cx.opt("percentage", &self.percentage, |cx, p| {
            fault_percentage(cx, p)
        });
        if let Some(percent) = self.percent {
            cx.deprecated("percent", "percentage (e.g. `percentage: {value: 10}`)");
            cx.check_at("percent", rules::percent(i64::from(percent)));
            if self.percentage.is_some() {
                cx.field("percent", |cx| {
                    cx.warn("percent is ignored because percentage is set")
                });
            }
        }
        match (&self.fixed_delay, &self.exponential_delay) {
            (Some(_), Some(_)) => cx.error("set only one of fixedDelay or exponentialDelay"),
            // Istio drops a delay without a fixed delay.
            (None, None) => cx.warn("the delay has no fixedDelay, so nothing is delayed"),
            _ => {}
        }
        cx.opt("fixedDelay", &self.fixed_delay, |cx, d| cx.check(d.check()));
        cx.opt("exponentialDelay", &self.exponential_delay, |cx, d| {
            cx.check(d.check());
            cx.error("exponentialDelay is not supported; use fixedDelay");
        });
        if self.percentage.is_none() && self.percent.unwrap_or(0) == 0 {
            cx.warn("the delay has no percentage, so no request is delayed; add e.g. `percentage: {value: 100}`");
        }
    }
}

/// gRPC status names, as `grpcStatus` takes them, in code order (0 = OK .. 16 =
/// UNAUTHENTICATED): the numbering of gRPC's status codes, which Istio uses.
pub const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Validate for Abort {
    fn validate(&self, cx: &mut Cx) {
        cx.opt("percentage", &self.percentage, |cx, p| {
            fault_percentage(cx, p)
        });
        let set = [
            self.http_status.is_some(),
            self.grpc_status.is_some(),
            self.http2_error.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => cx.warn("the abort sets no httpStatus or grpcStatus, so nothing is aborted"),
            1 => {}
            _ => cx.error("set only one of httpStatus, grpcStatus or http2Error"),
        }
        if let Some(status) = self.http_status {
            let checked = u32::try_from(status)
                .map_err(|_| format!("HTTP status {status} is not in range 200..599"))
                .and_then(rules::http_status);
            cx.check_at("httpStatus", checked);
        }
        if let Some(status) = &self.grpc_status
            && !GRPC_STATUSES.contains(&status.as_str())
        {
            let hint = did_you_mean(status, GRPC_STATUSES)
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            cx.error_at(
                "grpcStatus",
                format!("{status:?} is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND){hint}"),
            );
        }
        if self.http2_error.is_some() {
            cx.error_at(
                "http2Error",
                "http2Error aborts are not supported; use httpStatus or grpcStatus",
            );
        }
        if self.percentage.is_none() {
            cx.warn("the abort has no percentage, so no request is aborted; add e.g. `percentage: {value: 100}`");
        }
    }
}

/// Fault percentages are 0, or between 0.0001 and 100 (Envoy's finest fraction is a millionth).
fn fault_percentage(cx: &mut Cx, p: &Percent) {
    let v = p.value;
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        cx.error_at(
            "value",
            format!("percentage {v} must be 0, or between 0.0001 and 100"),
        );
    }
}

impl Validate for HttpMirrorPolicy {
    fn validate(&self, cx: &mut Cx) {
        required_destination(cx, &self.destination);
        cx.opt("percentage", &self.percentage, |cx, p| p.validate(cx));
    }
}
