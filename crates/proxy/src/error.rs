//! The request path's one error: why a request did not get an upstream's response. Each phase
//! of [`crate::http`] returns it; the local reply, the access log's response flags and the
//! stats all read the same value.
//!
//! An error knows:
//! - its response flag (Envoy's vocabulary, [`Flag`]) and the status of its reply;
//! - whether a retry policy may retry it ([`Error::retry_condition`]);
//! - what the client may see (the flag's reason; the detail only for callers inside the mesh)
//!   and what only the operator sees (the detail: addresses, socket errors, in the access log
//!   and the debug log).

use std::fmt;

use http::Response;

use crate::body::ProxyBody;
use crate::reply::{self, Flag};
use crate::route::policy::{Abort, Outcome};

/// What went wrong, as far as the reply, the log and a retry policy are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A request HTTP does not allow (a bad authority or path, a broken body): 400 DPE.
    BadRequest,
    /// HTTP/1.0, which Istio's Envoy refuses: 426.
    Http10,
    /// A transfer coding other than chunked: 501.
    TransferCoding,
    /// Request headers over the listener's limit: 431.
    HeadersTooLarge,
    /// A local rate limit (the listener's or the route's): 429 RL.
    RateLimited,
    /// No route matched, or the route table is not loaded: 404 NR.
    NoRoute,
    /// The route names a cluster that does not exist: 503 NC.
    NoCluster,
    /// An `Upgrade` to a protocol other than WebSocket: 403.
    UpgradeRefused,
    /// No endpoint to send to: 503 UH.
    NoHealthyUpstream,
    /// The circuit breaker refused the request: 503 UO. Never retried (the cluster is full).
    Overflow,
    /// Connecting to the endpoint failed: 503 UF.
    ConnectFailure,
    /// The upstream closed or reset before its response: 503 UC.
    Reset { refused_stream: bool },
    /// The attempt's per-try timeout passed: 504 UT, retriable.
    PerTryTimeout,
    /// The route's timeout passed: 504 UT, final.
    RouteTimeout,
    /// A retry was due, but the request body outgrew what was kept to replay it: 503 URX.
    ReplayLimit,
    /// A fault injection aborted the request, with its own status: FI.
    Fault(Abort),
    /// An AuthorizationPolicy denied the request: 403 `RBAC: access denied`.
    AccessDenied,
    /// The request's JWT did not verify: 401, Envoy's jwt_authn message as the body.
    JwtRejected(crate::jwt::Failure),
}

/// A request the proxy answers itself. `detail` is for the operator.
#[derive(Debug)]
pub struct Error {
    cause: Cause,
    detail: String,
    /// Retries ran out: the attempts made, this error being the last one's.
    attempts: Option<u32>,
    /// A 401's `www-authenticate` value.
    challenge: Option<http::HeaderValue>,
}

impl Error {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Error {
        Error {
            cause,
            detail: detail.into(),
            attempts: None,
            challenge: None,
        }
    }

    /// The reply carries `www-authenticate: value` (a 401's challenge).
    pub fn with_challenge(mut self, value: http::HeaderValue) -> Error {
        self.challenge = Some(value);
        self
    }

    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// What only the operator sees in full: the access log's response code details.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// This error ended the last of `attempts` attempts a retry policy allowed.
    pub fn exhausted(mut self, attempts: u32) -> Error {
        self.attempts = Some(attempts);
        self.detail = format!("{attempts} attempts, the last: {}", self.detail);
        self
    }

    /// The flag of the reply: the cause's own, except that retries that ran out answer as
    /// URX (Envoy answers a last per-try timeout as a timeout, though).
    pub fn flag(&self) -> Flag {
        match (self.attempts, self.cause) {
            (Some(_), Cause::PerTryTimeout) | (None, _) => self.cause_flag(),
            (Some(_), _) => Flag::UpstreamRetryLimitExceeded,
        }
    }

    /// Every response flag the access log shows, in the order Envoy sets them: retries that
    /// ran out are URX and the last attempt's cause (`URX,UF`, `URX,UT`).
    pub fn flags(&self) -> Flags {
        let mut flags = Flags::default();
        if self.attempts.is_some() {
            flags.add(Flag::UpstreamRetryLimitExceeded);
        }
        flags.add(self.cause_flag());
        flags
    }

    fn cause_flag(&self) -> Flag {
        match self.cause {
            Cause::BadRequest => Flag::DownstreamProtocolError,
            Cause::Http10 => Flag::Http10,
            Cause::TransferCoding => Flag::TransferCoding,
            Cause::HeadersTooLarge => Flag::HeadersTooLarge,
            Cause::RateLimited => Flag::RateLimited,
            Cause::NoRoute => Flag::NoRoute,
            Cause::NoCluster => Flag::NoCluster,
            Cause::UpgradeRefused => Flag::UpgradeFailed,
            Cause::NoHealthyUpstream => Flag::NoHealthyUpstream,
            Cause::Overflow => Flag::UpstreamOverflow,
            Cause::ConnectFailure => Flag::UpstreamConnectFailure,
            Cause::Reset { .. } => Flag::UpstreamConnectionTermination,
            Cause::PerTryTimeout | Cause::RouteTimeout => Flag::UpstreamRequestTimeout,
            Cause::ReplayLimit => Flag::UpstreamRetryLimitExceeded,
            Cause::Fault(_) => Flag::FaultInjected,
            Cause::AccessDenied => Flag::RbacDenied,
            Cause::JwtRejected(_) => Flag::JwtDenied,
        }
    }

    /// The condition a retry policy's `retryOn` is asked about, or None for an error that is
    /// never retried (the request's own fault, a saturated cluster, the route's deadline).
    pub fn retry_condition(&self) -> Option<Outcome> {
        match self.cause {
            Cause::ConnectFailure => Some(Outcome::ConnectFailure),
            Cause::Reset { refused_stream } => Some(Outcome::Reset { refused_stream }),
            Cause::PerTryTimeout => Some(Outcome::PerTryTimeout),
            _ => None,
        }
    }

    /// The reply the client gets. A caller inside the mesh (`internal`) reads the detail in
    /// the body; one outside (a gateway's client) reads the cause alone. Its
    /// `x-weft-response-flags` names the reply's flag; the request path puts all of the
    /// request's flags there ([`Flags`]).
    pub fn reply(&self, grpc: bool, internal: bool) -> Response<ProxyBody> {
        match self.cause {
            Cause::Fault(abort) => return reply::fault_abort(abort, grpc),
            Cause::AccessDenied => {
                return reply::exact(Flag::RbacDenied, "RBAC: access denied", grpc);
            }
            Cause::JwtRejected(failure) => {
                let mut resp = reply::exact(Flag::JwtDenied, failure.message(), grpc);
                if let Some(c) = &self.challenge {
                    resp.headers_mut()
                        .insert(http::header::WWW_AUTHENTICATE, c.clone());
                }
                return resp;
            }
            _ => {}
        }
        reply::local_for(self.flag(), internal.then_some(&*self.detail), grpc)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag().code(), self.detail)
    }
}

impl std::error::Error for Error {}

/// The response flags of one request, in the order they were set; `-` when none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    set: [Option<Flag>; 4],
}

impl Flags {
    /// Adds `flag` unless it is there already (or there are four).
    pub fn add(&mut self, flag: Flag) {
        if self.set.contains(&Some(flag)) {
            return;
        }
        if let Some(slot) = self.set.iter_mut().find(|s| s.is_none()) {
            *slot = Some(flag);
        }
    }

    /// Adds `other`'s flags after these.
    pub fn merge(&mut self, other: Flags) {
        for flag in other.set.into_iter().flatten() {
            self.add(flag);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set[0].is_none()
    }

    pub fn contains(&self, flag: Flag) -> bool {
        self.set.contains(&Some(flag))
    }

    /// The flags with an Envoy code (some refusals have none, `-`).
    fn codes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.set
            .iter()
            .flatten()
            .map(|f| f.code())
            .filter(|c| *c != "-")
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for code in self.codes() {
            if any {
                f.write_str(",")?;
            }
            f.write_str(code)?;
            any = true;
        }
        if !any {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// An error and its sources, joined with `: `, for logs and local-reply details.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_retries_keep_the_last_cause_in_the_flags() {
        let e = Error::new(Cause::ConnectFailure, "connecting to 127.0.0.1:1: refused");
        assert_eq!(e.flags().to_string(), "UF");
        assert_eq!(e.retry_condition(), Some(Outcome::ConnectFailure));
        let e = e.exhausted(3);
        assert_eq!(e.flag(), Flag::UpstreamRetryLimitExceeded);
        assert_eq!(e.flags().to_string(), "URX,UF");
        assert!(e.detail().starts_with("3 attempts, the last: connecting"));
        // A last per-try timeout answers as a timeout.
        let e = Error::new(Cause::PerTryTimeout, "per-try timeout").exhausted(2);
        assert_eq!(e.flag(), Flag::UpstreamRequestTimeout);
        assert_eq!(e.flags().to_string(), "URX,UT");
    }

    #[test]
    fn the_request_deadline_and_overflow_are_never_retried() {
        for cause in [Cause::RouteTimeout, Cause::Overflow, Cause::BadRequest] {
            assert_eq!(Error::new(cause, "").retry_condition(), None, "{cause:?}");
        }
    }

    #[test]
    fn flags_render_in_the_order_set_and_skip_codeless_ones() {
        let mut flags = Flags::default();
        assert_eq!(flags.to_string(), "-");
        flags.add(Flag::DelayInjected);
        flags.add(Flag::UpstreamConnectFailure);
        flags.add(Flag::DelayInjected);
        assert_eq!(flags.to_string(), "DI,UF");
        let mut codeless = Flags::default();
        codeless.add(Flag::UpgradeFailed);
        assert_eq!(codeless.to_string(), "-");
    }

    #[test]
    fn a_gateways_client_reads_the_cause_but_not_the_detail() {
        let e = Error::new(
            Cause::ConnectFailure,
            "connecting to 10.1.2.3:8080: refused",
        );
        let body = |resp: Response<ProxyBody>| {
            let bytes = futures_body(resp);
            String::from_utf8_lossy(&bytes).into_owned()
        };
        assert!(body(e.reply(false, true)).contains("10.1.2.3"));
        assert!(!body(e.reply(false, false)).contains("10.1.2.3"));
    }

    fn futures_body(resp: Response<ProxyBody>) -> bytes::Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(resp.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }
}
