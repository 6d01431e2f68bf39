//! Responses the proxy makes itself. Each carries a named cause from Envoy's response-flag
//! vocabulary, in the body, in the `x-weft-response-flags` header and in the access log, so a
//! 503 is never a mystery.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ProxyBody;

/// The response header naming the cause of a local reply.
pub const FLAGS_HEADER: &str = "x-weft-response-flags";

/// Why the proxy answered itself (Envoy's response flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// NR: no route matched the request.
    NoRoute,
    /// NC: the route names a cluster that does not exist.
    NoCluster,
    /// UH: the cluster has no (healthy) endpoint.
    NoHealthyUpstream,
    /// UF: connecting to the upstream failed.
    UpstreamConnectFailure,
    /// UC: the upstream closed or reset the connection before a response.
    UpstreamConnectionTermination,
    /// DPE: the downstream request was malformed.
    DownstreamProtocolError,
    /// UT: the route's timeout (or the last attempt's per-try timeout) passed.
    UpstreamRequestTimeout,
    /// URX: retries were exhausted (or the request could no longer be replayed).
    UpstreamRetryLimitExceeded,
    /// FI: a fault injection aborted the request.
    FaultInjected,
    /// DI: a fault injection delayed the request (logged; the response is the upstream's).
    DelayInjected,
    /// UO: the cluster's circuit breaker refused the request (overflow).
    UpstreamOverflow,
    /// RL: a local rate limit refused the request.
    RateLimited,
    /// An `Upgrade` to a protocol the listener does not tunnel (403). Envoy has no flag for
    /// it (`-`); its response code details say `upgrade_failed`.
    UpgradeFailed,
    /// An HTTP/1.0 request (426), which Envoy refuses unless told otherwise and Istio does
    /// not tell it. No Envoy flag (`-`).
    Http10,
    /// A transfer coding other than chunked (501), which Envoy does not implement. No Envoy
    /// flag (`-`).
    TransferCoding,
    /// Request headers over the listener's limit (431). No Envoy flag (`-`).
    HeadersTooLarge,
    /// Authorization denied the request (403 `RBAC: access denied`). No Envoy flag (`-`);
    /// its response code details name the policy.
    RbacDenied,
    /// Request authentication refused the request's JWT (401). No Envoy flag (`-`).
    JwtDenied,
}

impl Flag {
    /// The short name, as in Envoy's access logs.
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoCluster => "NC",
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamConnectionTermination => "UC",
            Flag::DownstreamProtocolError => "DPE",
            Flag::UpstreamRequestTimeout => "UT",
            Flag::UpstreamRetryLimitExceeded => "URX",
            Flag::FaultInjected => "FI",
            Flag::DelayInjected => "DI",
            Flag::UpstreamOverflow => "UO",
            Flag::RateLimited => "RL",
            Flag::UpgradeFailed
            | Flag::Http10
            | Flag::TransferCoding
            | Flag::HeadersTooLarge
            | Flag::RbacDenied
            | Flag::JwtDenied => "-",
        }
    }

    /// The status a local reply for this cause has.
    pub fn status(self) -> StatusCode {
        match self {
            Flag::NoRoute => StatusCode::NOT_FOUND,
            Flag::DownstreamProtocolError => StatusCode::BAD_REQUEST,
            Flag::UpstreamRequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Flag::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Flag::UpgradeFailed | Flag::RbacDenied => StatusCode::FORBIDDEN,
            Flag::JwtDenied => StatusCode::UNAUTHORIZED,
            Flag::Http10 => StatusCode::UPGRADE_REQUIRED,
            Flag::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Flag::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // An HTTP abort's status is its own (`fault_abort`); this is the fallback.
            Flag::FaultInjected => StatusCode::INTERNAL_SERVER_ERROR,
            Flag::NoCluster
            | Flag::NoHealthyUpstream
            | Flag::UpstreamConnectFailure
            | Flag::UpstreamConnectionTermination
            | Flag::UpstreamRetryLimitExceeded
            | Flag::DelayInjected
            | Flag::UpstreamOverflow => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A local reply: `status`, the flag in a header, and a one-line body saying what happened.
/// A gRPC request gets a Trailers-Only response with the matching `grpc-status` (as Envoy
/// maps HTTP statuses to gRPC codes) so that gRPC clients see a proper status.
/// `grpc`: the request was gRPC ([`is_grpc`] of its headers).
pub fn local(flag: Flag, detail: &str, grpc: bool) -> Response<ProxyBody> {
    local_for(flag, Some(detail), grpc)
}

/// As [`local`]; without `detail` (a gateway's reply to a caller outside the mesh) the body
/// names the cause alone: `upstream connect error (UF)`.
pub fn local_for(flag: Flag, detail: Option<&str>, grpc: bool) -> Response<ProxyBody> {
    let status = flag.status();
    let message = match detail {
        Some(detail) => format!("{} ({}): {detail}\n", reason(flag), flag.code()),
        None => format!("{} ({})\n", reason(flag), flag.code()),
    };
    let mut resp = if grpc {
        let mut r = Response::new(empty());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        // Envoy's HTTP-to-gRPC mapping, timeouts included: a 504 UT is UNAVAILABLE (14),
        // which gRPC clients treat as retriable.
        let code = grpc_status_of(status);
        h.insert("grpc-status", HeaderValue::from_static(code));
        if let Ok(v) = HeaderValue::from_str(message.trim_end()) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(full(Bytes::from(message)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    resp.headers_mut()
        .insert(FLAGS_HEADER, HeaderValue::from_static(flag.code()));
    if flag == Flag::UpstreamOverflow {
        // What Envoy adds when a circuit breaker trips.
        resp.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    resp
}

/// A response with a fixed body (direct response, redirect); a body is `text/plain`, as
/// Envoy types a direct response's (route header operations may change it).
pub fn fixed(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let len = body.len();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    if len > 0 {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

fn reason(flag: Flag) -> &'static str {
    match flag {
        Flag::NoRoute => "no route",
        Flag::NoCluster => "no cluster",
        Flag::NoHealthyUpstream => "no healthy upstream",
        Flag::UpstreamConnectFailure => "upstream connect error",
        Flag::UpstreamConnectionTermination => "upstream connection terminated",
        Flag::DownstreamProtocolError => "bad request",
        Flag::UpstreamRequestTimeout => "upstream request timeout",
        Flag::UpstreamRetryLimitExceeded => "upstream retry limit exceeded",
        Flag::FaultInjected => "fault filter abort",
        Flag::DelayInjected => "fault filter delay",
        Flag::UpstreamOverflow => "upstream overflow",
        Flag::RateLimited => "local rate limited",
        Flag::UpgradeFailed => "upgrade failed",
        Flag::Http10 => "HTTP/1.0 is not served",
        Flag::TransferCoding => "transfer coding not implemented",
        Flag::HeadersTooLarge => "request headers too large",
        Flag::RbacDenied => "RBAC: access denied",
        Flag::JwtDenied => "Jwt verification fails",
    }
}

/// A refusal whose body is exactly `body`, as Envoy's filters send it (`RBAC: access
/// denied`, `Jwt is expired`): no detail added, whoever asks. A gRPC request gets the
/// status's gRPC code and the body as its message.
pub fn exact(flag: Flag, body: &'static str, grpc: bool) -> Response<ProxyBody> {
    let status = flag.status();
    let mut resp = if grpc {
        let mut r = Response::new(empty());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(
            "grpc-status",
            HeaderValue::from_static(grpc_status_of(status)),
        );
        h.insert("grpc-message", HeaderValue::from_static(body));
        r
    } else {
        let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    resp.headers_mut()
        .insert(FLAGS_HEADER, HeaderValue::from_static(flag.code()));
    resp
}

/// A fault injection's abort: the configured HTTP status with Envoy's body, or a Trailers-Only
/// gRPC response with the configured (or mapped) `grpc-status`; flag FI either way.
pub fn fault_abort(abort: crate::route::policy::Abort, grpc: bool) -> Response<ProxyBody> {
    use crate::route::policy::Abort;
    let grpc_code = match abort {
        Abort::Grpc(code) => Some(HeaderValue::from(code)),
        Abort::Http(status) if grpc => Some(HeaderValue::from_static(grpc_status_of(status))),
        Abort::Http(_) => None,
    };
    let mut resp = match (grpc_code, abort) {
        (Some(code), _) => {
            let mut r = Response::new(empty());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", code);
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
        (None, Abort::Http(status)) => {
            let mut r = fixed(status, Bytes::from_static(b"fault filter abort"));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        (None, Abort::Grpc(_)) => fixed(StatusCode::OK, Bytes::new()),
    };
    resp.headers_mut().insert(
        FLAGS_HEADER,
        HeaderValue::from_static(Flag::FaultInjected.code()),
    );
    resp
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` a header block (Trailers-Only headers, or trailers) carries.
pub fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Envoy's HTTP status -> gRPC status mapping for local replies.
fn grpc_status_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "13",                   // INTERNAL
        401 => "16",                   // UNAUTHENTICATED
        403 => "7",                    // PERMISSION_DENIED
        404 => "12",                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => "14", // UNAVAILABLE
        _ => "2",                      // UNKNOWN
    }
}

pub fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_reply_names_the_cause() {
        let r = local(Flag::NoRoute, "no route for reviews:9080/x", false);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[FLAGS_HEADER], "NR");
    }

    #[tokio::test]
    async fn without_detail_the_body_names_the_cause_alone() {
        use http_body_util::BodyExt;
        let r = local_for(Flag::UpstreamConnectFailure, None, false);
        assert_eq!(r.headers()[FLAGS_HEADER], "UF");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "upstream connect error (UF)\n");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let r = local_for(Flag::UpstreamConnectFailure, None, is_grpc(&h));
        assert_eq!(r.headers()["grpc-message"], "upstream connect error (UF)");
    }

    #[test]
    fn grpc_requests_get_grpc_status() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let r = local(
            Flag::NoHealthyUpstream,
            "cluster x has no endpoints",
            is_grpc(&h),
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()[FLAGS_HEADER], "UH");
    }
}
