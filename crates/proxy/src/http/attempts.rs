//! Phase 5, the attempts: pick an endpoint, get admitted by the circuit breaker, send, and
//! classify what came back; under a retry policy, retry after a jittered backoff (on another
//! endpoint when there is one) or give up. The route timeout bounds them all, backoff
//! included; a per-try timeout bounds each.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::decide::Routed;
use super::outbound::{Outbound, route_timeout};
use super::{Exchange, Held};
use crate::body::{ProxyBody, Replayable};
use crate::breaker::Admission;
use crate::cluster::{Pick, Reported};
use crate::error::{self, Cause, Error};
use crate::reply::Flag;
use crate::route::policy::{Outcome, Policy, RetryPolicy};
use crate::snapshot::ClusterState;
use crate::stats::class_index;
use crate::upstream::HttpClient;

static ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static EXPECTED_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

/// The request body for each attempt.
pub(super) enum RequestBody {
    /// No body: every attempt sends none.
    Empty,
    /// Streamed to the one attempt there is.
    Once(Option<ProxyBody>),
    /// Recorded, so that a retry can send it again.
    Replay(Replayable),
}

impl RequestBody {
    fn attempt(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Empty => Some(crate::reply::empty()),
            RequestBody::Once(b) => b.take(),
            RequestBody::Replay(r) => r.attempt(),
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Once(_) => false,
            RequestBody::Replay(r) => r.can_replay(),
        }
    }
}

/// The upstream's response, and what it holds until its body ends.
pub(super) struct Answer {
    pub resp: Response<ProxyBody>,
    pub held: Held,
    /// When the answering attempt was sent (`x-envoy-upstream-service-time`).
    pub sent: Instant,
}

/// One attempt's way to a response, before classification.
struct Sent {
    resp: Response<Incoming>,
    admission: Admission,
    at: Instant,
}

pub(super) async fn run(
    ex: &mut Exchange,
    cluster: &ClusterState,
    routed: &Routed<'_>,
    out: &mut Outbound,
    mut body: RequestBody,
    deadline: Option<tokio::time::Instant>,
) -> Result<Answer, Error> {
    let name = &routed.destination.cluster;
    // An upgrade is never retried: the downstream connection is handed over.
    let retry = routed
        .policy()
        .retry
        .as_ref()
        .filter(|_| out.upgrade.is_none());
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries_done = 0u32;
    // The place of the retry in flight under the cluster's maxRetries.
    let mut retry_place = None;
    loop {
        let last_chance = retry.is_none_or(|r| retries_done >= r.num_retries);
        let redraws = retry.map_or(0, |r| r.previous_host_redraws);
        let Some(pick) = pick_avoiding(out, cluster, &tried, redraws) else {
            let detail = format!("cluster {name:?} has no healthy endpoint");
            return Err(Error::new(Cause::NoHealthyUpstream, detail));
        };
        let endpoint = pick.endpoint.address;
        ex.note(|l| l.upstream_host = endpoint.to_string());
        let Some((client, h2)) = cluster.upstream.client(&pick.endpoint, out.downstream_h2) else {
            let detail = format!("{endpoint} has no connection pool");
            return Err(Error::new(Cause::NoHealthyUpstream, detail));
        };
        let Some(attempt_body) = body.attempt() else {
            // Only reachable on a retry: the body outgrew what could be kept for replay.
            let detail = "the request body is too large to replay for a retry";
            return Err(Error::new(Cause::ReplayLimit, detail));
        };
        let mut req = request(out, attempt_body, h2, retries_done + 1, last_chance);
        // The time the upstream has, as Envoy tells it: the per-try timeout, else the route's.
        if let Some(t) = retry
            .and_then(|r| r.per_try_timeout)
            .or(routed.policy().timeout)
        {
            req.headers_mut().insert(
                EXPECTED_TIMEOUT.clone(),
                HeaderValue::from(t.as_millis() as u64),
            );
        }
        let sent = Attempt {
            cluster,
            name,
            endpoint,
            client,
            h2,
            deadline,
            per_try: retry.and_then(|r| r.per_try_timeout),
            policy: routed.policy(),
        }
        .send(req)
        .await;

        // What happened: a response to pass on (or retry), or a failure.
        let failure = match sent {
            Ok(sent) => {
                let status = sent.resp.status();
                cluster
                    .cluster
                    .report(&pick.endpoint, Reported::Status(status.as_u16()));
                let outcome = Outcome::Response {
                    status,
                    grpc_status: grpc_status_of(sent.resp.headers()),
                };
                let retriable = retry.is_some_and(|r| r.on.retries(outcome));
                let place = match () {
                    _ if !retriable => None,
                    // Envoy passes the last response on, noting that retries ran out.
                    _ if last_chance => {
                        ex.flag(Flag::UpstreamRetryLimitExceeded);
                        None
                    }
                    _ if !body.can_replay() => None,
                    _ => retry_place_or_note(cluster, ex),
                };
                let Some(place) = place else {
                    let held = Held {
                        pick: Some(pick),
                        admission: Some(sent.admission),
                        retry: retry_place,
                    };
                    let resp = sent.resp.map(|b| b.map_err(Into::into).boxed_unsync());
                    return Ok(Answer {
                        resp,
                        held,
                        sent: sent.at,
                    });
                };
                retry_place = Some(place);
                cluster.stats.upstream_rq_xx[class_index(status.as_u16())].fetch_add(1, Relaxed);
                None
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            let Some(condition) = e.retry_condition() else {
                return Err(e);
            };
            cluster
                .cluster
                .report(&pick.endpoint, Reported::LocalFailure);
            let retriable = retry.is_some_and(|r| r.on.retries(condition)) && body.can_replay();
            if !retriable {
                return Err(e);
            }
            if last_chance {
                return Err(e.exhausted(retries_done + 1));
            }
            match retry_place_or_note(cluster, ex) {
                Some(place) => retry_place = Some(place),
                // maxRetries in flight: this failure is final.
                None => return Err(e),
            }
        }
        // Retry, after a jittered backoff, on another endpoint when there is one.
        retries_done += 1;
        cluster.stats.upstream_rq_retry.fetch_add(1, Relaxed);
        tried.push(endpoint);
        drop(pick);
        if let Some(r) = retry {
            backoff(r, retries_done, deadline)
                .await
                .map_err(|()| route_timeout(routed.policy()))?;
        }
    }
}

/// A place for one more retry under the cluster's maxRetries; when there is none, Envoy's
/// retry overflow: counted, and noted as UO on the request.
fn retry_place_or_note(
    cluster: &ClusterState,
    ex: &mut Exchange,
) -> Option<crate::breaker::RetryPlace> {
    let place = cluster.breaker.retry();
    if place.is_none() {
        cluster
            .stats
            .upstream_rq_retry_overflow
            .fetch_add(1, Relaxed);
        ex.flag(Flag::UpstreamOverflow);
    }
    place
}

/// Sleeps the jittered backoff before retry number `retries_done`; Err when the route's
/// deadline comes first.
async fn backoff(
    retry: &RetryPolicy,
    retries_done: u32,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), ()> {
    let pause = retry.backoff(retries_done, fastrand::f64());
    let wake = tokio::time::Instant::now() + pause;
    if deadline.is_some_and(|d| d <= wake) {
        return Err(());
    }
    tokio::time::sleep_until(wake).await;
    Ok(())
}

/// The request one attempt sends. The last attempt takes the URI and headers; earlier ones
/// send copies.
fn request(
    out: &mut Outbound,
    body: ProxyBody,
    h2: bool,
    attempt: u32,
    last: bool,
) -> Request<ProxyBody> {
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = if last {
        std::mem::take(&mut out.uri)
    } else {
        out.uri.clone()
    };
    *req.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = if last {
        std::mem::take(&mut out.headers)
    } else {
        out.headers.clone()
    };
    if h2 {
        // HTTP/2 carries the authority in :authority, not Host.
        req.headers_mut().remove(header::HOST);
    } else if req.body().is_end_stream()
        && !bodiless_method(req.method())
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        // Envoy's HTTP/1 codec says an empty body is empty, except for methods that have
        // none (GET, HEAD, DELETE, TRACE, CONNECT).
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    // Which attempt this is, from 1, as Envoy with Istio's `include_request_attempt_count`.
    req.headers_mut()
        .insert(ATTEMPT_COUNT.clone(), attempt_count(attempt));
    req
}

/// One attempt: where it goes, and what bounds it.
struct Attempt<'a> {
    cluster: &'a ClusterState,
    name: &'a str,
    endpoint: SocketAddr,
    client: &'a HttpClient,
    h2: bool,
    deadline: Option<tokio::time::Instant>,
    per_try: Option<Duration>,
    policy: &'a Policy,
}

impl Attempt<'_> {
    /// Admission under the circuit breaker (maybe waiting for a connection), then the
    /// exchange; the route's deadline and the per-try timeout bound both.
    async fn send(self, req: Request<ProxyBody>) -> Result<Sent, Error> {
        let stats = &self.cluster.stats;
        let exchange = async {
            let admission = self
                .cluster
                .breaker
                .admit(self.h2)
                .await
                .map_err(|overflow| {
                    // Envoy does not retry an overflow: the cluster is saturated.
                    stats.upstream_rq_pending_overflow.fetch_add(1, Relaxed);
                    Error::new(
                        Cause::Overflow,
                        format!("cluster {:?}: {overflow}", self.name),
                    )
                })?;
            stats.upstream_rq_total.fetch_add(1, Relaxed);
            let at = Instant::now();
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(Sent {
                resp,
                admission,
                at,
            })
        };
        let per_try_at = self.per_try.map(|t| tokio::time::Instant::now() + t);
        let limit = match (self.deadline, per_try_at) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        };
        stats.upstream_rq_active.fetch_add(1, Relaxed);
        let result = match limit {
            Some(at) => tokio::time::timeout_at(at, exchange).await,
            None => Ok(exchange.await),
        };
        stats.upstream_rq_active.fetch_sub(1, Relaxed);
        result.unwrap_or_else(|_| {
            stats.upstream_rq_timeout.fetch_add(1, Relaxed);
            let whole = self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() >= d);
            Err(if whole {
                route_timeout(self.policy)
            } else {
                let detail = format!("{}: per-try timeout passed", self.endpoint);
                Error::new(Cause::PerTryTimeout, detail)
            })
        })
    }

    /// Why the exchange failed: connecting (UF), the client's own body breaking (400: its
    /// fault, not the upstream's, and not worth a retry), or the upstream closing or
    /// resetting before its response (UC).
    fn failed(&self, e: &hyper_util::client::legacy::Error) -> Error {
        let endpoint = self.endpoint;
        if e.is_connect() {
            let stats = &self.cluster.stats;
            stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
            let detail = format!("connecting to {endpoint}: {}", error::chain(e));
            return Error::new(Cause::ConnectFailure, detail);
        }
        if is_downstream_body_error(e) {
            let detail = format!("reading the request body: {}", error::chain(e));
            return Error::new(Cause::BadRequest, detail);
        }
        let refused_stream = is_refused_stream(e);
        let detail = format!("{endpoint}: {}", error::chain(e));
        Error::new(Cause::Reset { refused_stream }, detail)
    }
}

/// Picks an endpoint; a pick that lands on one already tried is drawn again, up to `redraws`
/// times (Envoy's previous_hosts retry predicate with its host_selection_retry_max_attempts).
fn pick_avoiding(
    out: &Outbound,
    cluster: &ClusterState,
    tried: &[SocketAddr],
    redraws: u32,
) -> Option<Pick> {
    let mut choice = out.pick(cluster)?;
    for _ in 0..redraws {
        if !tried.contains(&choice.endpoint.address) {
            break;
        }
        choice = out.pick(cluster)?;
    }
    Some(choice)
}

/// `grpc-status` of a Trailers-Only response (in the headers), if any.
fn grpc_status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The client's request body failed while it was being sent upstream: hyper reports an
/// error of the body it was given as a "user" error.
fn is_downstream_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_user();
        }
        source = err.source();
    }
    false
}

/// An HTTP/2 upstream refused the stream (REFUSED_STREAM: safe to retry anywhere).
fn is_refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
}

/// Methods whose requests have no body (RFC 9110), as Envoy's codec lists them.
fn bodiless_method(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
    ]
    .contains(method)
}

/// `x-envoy-attempt-count`'s value, without formatting (an allocation) for the usual few.
fn attempt_count(n: u32) -> HeaderValue {
    match n {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        n => HeaderValue::from(n),
    }
}
