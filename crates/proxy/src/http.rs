//! The HTTP request path: one function from request to response. Route by the snapshot's
//! route table, pick a destination and an endpoint, forward, and answer; every response the
//! proxy makes itself names its cause (see `reply`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::Entry;
use crate::body::{Deadline, Observed, ProxyBody, Replayable};
use crate::cluster::{HashInput, Reported};
use crate::reply::{self, Flag};
use crate::route::cors::{PREFLIGHT_STATUS, Verdict};
use crate::route::policy::{Outcome, chance};
use crate::route::{Action, RequestView};
use crate::server::Shared;
use crate::snapshot::ClusterState;
use crate::stats::class_index;

/// What a request's connection contributes: where it came from, which listener.
pub struct ConnContext {
    pub shared: Arc<Shared>,
    pub listener: String,
    pub route_config: String,
    pub explicit_proxy: bool,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub access_log: bool,
    /// The connection's TLS (scheme `https`), when it has some.
    pub tls: Option<TlsConn>,
    /// The listener's rate limit, taken before routing.
    pub rate_limit: Option<Arc<crate::ratelimit::TokenBucket>>,
    /// The downstream is in the mesh: true on sidecars (their callers are apps and other
    /// sidecars), false on gateways ([`crate::config::NodeInfo::gateway`]), whose clients
    /// are outside. An outside client gets local replies without their detail (addresses,
    /// socket errors, TLS reasons: those go to the access log and the debug log), and the
    /// `x-envoy-*` headers it sends are dropped, as Envoy drops them from external requests.
    pub internal_downstream: bool,
    /// How request paths are normalized before routing ([`crate::path`]).
    pub path_normalization: weft_xds::proto::PathNormalization,
}

/// What a TLS connection was handshaken with.
pub struct TlsConn {
    pub termination: Arc<crate::tls::Termination>,
    /// The certificate (and client verification) its SNI chose.
    pub served: Arc<crate::tls::Served>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
static ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
/// What every response says it came through, as Istio names its proxies (Envoy's
/// `server_name`, with the upstream's own `server` header overwritten).
static SERVER: HeaderValue = HeaderValue::from_static("istio-envoy");

/// Handles one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<Incoming>,
    cx: Arc<ConnContext>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let shared = &cx.shared;
    shared.stats.downstream_rq_total.fetch_add(1, Relaxed);
    shared.stats.downstream_rq_active.fetch_add(1, Relaxed);
    let snapshot = shared.snapshot.load_full();

    let (mut parts, body) = req.into_parts();
    let downstream_h2 = parts.version == Version::HTTP_2;
    if !cx.internal_downstream {
        remove_envoy_headers(&mut parts.headers);
    }
    if !parts.headers.contains_key(&REQUEST_ID) {
        parts.headers.insert(REQUEST_ID.clone(), new_request_id());
    }
    // Built only when this listener logs: it costs a dozen allocations.
    let mut log = cx
        .access_log
        .then(|| Box::new(Entry::begin(&parts, cx.peer)));
    let grpc = reply::is_grpc(&parts.headers);
    if let Some((flag, why)) = http1_refusal(&parts) {
        let mut resp = local_reply(&cx, flag, why, grpc, log);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    }
    if let Some(bucket) = &cx.rate_limit
        && !bucket.try_acquire()
    {
        let detail = format!("listener {:?}: local rate limit", cx.listener);
        return Ok(local_reply(&cx, Flag::RateLimited, &detail, grpc, log));
    }

    // Authority and scheme: absolute-form (explicit proxy, HTTP/2 :authority) or Host.
    let authority =
        match request_authority(&parts.method, &parts.uri, &parts.headers, cx.explicit_proxy) {
            Ok(a) => a,
            Err(why) => {
                return Ok(local_reply(
                    &cx,
                    Flag::DownstreamProtocolError,
                    why,
                    grpc,
                    log,
                ));
            }
        };
    if let Some(l) = log.as_mut() {
        l.authority.clone_from(&authority);
    }
    let scheme = original_scheme(&cx, &parts);
    let received = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path_and_query = match crate::path::normalize(received, cx.path_normalization) {
        Ok(p) => p.into_owned(),
        Err(why) => {
            let detail = format!("path {received:?}: {why}");
            return Ok(local_reply(
                &cx,
                Flag::DownstreamProtocolError,
                &detail,
                grpc,
                log,
            ));
        }
    };

    if let Some(tls) = &cx.tls {
        let (host, _) = crate::route::split_port(&authority);
        if !tls.termination.admits(&tls.served, host) {
            let detail = format!(
                "no route for {authority}: it is served with other client certificate \
                 verification than this connection's SNI selected"
            );
            return Ok(local_reply(&cx, Flag::NoRoute, &detail, grpc, log));
        }
    }
    let Some(table) = snapshot.routes.get(&cx.route_config) else {
        return Ok(local_reply(
            &cx,
            Flag::NoRoute,
            &format!("route configuration {:?} is not loaded", cx.route_config),
            grpc,
            log,
        ));
    };
    let view = RequestView {
        method: &parts.method,
        scheme: &scheme,
        authority: &authority,
        path_and_query: &path_and_query,
        headers: &parts.headers,
        port: cx.local.port(),
        // Istio's sourceLabels name the workload sending the request: on a sidecar's outbound
        // side and on a gateway, that is this proxy's own workload.
        source_labels: &snapshot.node.labels,
    };
    let Some(matched) = table.route(&view) else {
        let detail = format!("no route for {authority}{path_and_query}");
        return Ok(local_reply(&cx, Flag::NoRoute, &detail, grpc, log));
    };
    if let Some(l) = log.as_mut() {
        matched.route_name().clone_into(&mut l.route);
    }

    // CORS first (a preflight from an allowed origin is answered here, taking no token), then
    // the route's rate limit.
    let mut cors_origin = None;
    if let Some(cors) = matched.cors() {
        match cors.verdict(&parts.method, &parts.headers) {
            Verdict::PassThrough => {}
            Verdict::Decorate(origin) => cors_origin = Some((cors, origin)),
            Verdict::Answer(headers) => {
                let mut resp = reply::fixed(PREFLIGHT_STATUS, Bytes::new());
                resp.headers_mut().extend(headers);
                return Ok(finish(&cx, resp, None, log, ()));
            }
        }
    }
    if let Some(bucket) = matched.rate_limit()
        && !bucket.try_acquire()
    {
        let detail = format!("route {:?}: local rate limit", matched.route_name());
        return Ok(local_reply(&cx, Flag::RateLimited, &detail, grpc, log));
    }
    let decorate = |headers: &mut HeaderMap| {
        if let Some((cors, origin)) = &cors_origin {
            cors.decorate(origin.clone(), headers);
        }
    };

    // A local reply after routing carries the route's response header operations and CORS
    // headers, as Envoy's router finalizes its own replies (UF, UH, UT, UO, ...) with the route.
    let routed = |mut resp: Response<ProxyBody>| {
        decorate(resp.headers_mut());
        matched.response_headers().apply(resp.headers_mut());
        resp
    };

    let forward = match matched.action() {
        Action::Direct(d) => {
            let mut resp = reply::fixed(d.status, d.body.clone());
            decorate(resp.headers_mut());
            matched.response_headers().apply(resp.headers_mut());
            return Ok(finish(&cx, resp, None, log, ()));
        }
        Action::Redirect(_) => {
            let mut resp = match matched.redirect(&view) {
                Some((status, location)) => redirect(status, &location),
                None => reply::fixed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(b"bad redirect\n"),
                ),
            };
            decorate(resp.headers_mut());
            matched.response_headers().apply(resp.headers_mut());
            return Ok(finish(&cx, resp, None, log, ()));
        }
        Action::Forward(f) => f,
    };

    let destination = forward.pick(fastrand::u32(..));
    if let Some(l) = log.as_mut() {
        l.cluster = destination.cluster.to_string();
    }
    let Some(state) = snapshot.clusters.get(&destination.cluster) else {
        let detail = format!("cluster {:?} is not defined", destination.cluster);
        return Ok(routed(local_reply(
            &cx,
            Flag::NoCluster,
            &detail,
            grpc,
            log,
        )));
    };
    let policy = forward.policy();

    // Faults come first, as Envoy's fault filter runs before the router.
    if let Some(fault) = &policy.fault {
        if let Some((delay, percent)) = fault.delay
            && chance(percent, fastrand::f64())
        {
            tokio::time::sleep(delay).await;
            if let Some(l) = log.as_mut() {
                l.flags = Flag::DelayInjected.code();
            }
        }
        if let Some((abort, percent)) = fault.abort
            && chance(percent, fastrand::f64())
        {
            let resp = reply::fault_abort(abort, grpc);
            return Ok(finish(&cx, resp, Some(Flag::FaultInjected), log, ()));
        }
    }

    // The route timeout starts here (after a fault's delay, as in Envoy, where the fault
    // filter runs before the router); it bounds an ORIGINAL_DST name lookup too.
    let deadline = policy.timeout.map(|t| tokio::time::Instant::now() + t);

    // An ORIGINAL_DST cluster: the cluster of the destination the request asked for.
    let original;
    let state: &ClusterState = match &state.original_dst {
        None => state,
        Some(destinations) => {
            let default_port = if scheme == "https" { 443 } else { 80 };
            let lookup = destinations.state_for(state, &authority, default_port, cx.local);
            let found = match deadline {
                Some(at) => match tokio::time::timeout_at(at, lookup).await {
                    Ok(found) => found,
                    Err(_) => return Ok(routed(route_timeout(&cx, policy, grpc, log))),
                },
                None => lookup.await,
            };
            match found {
                Ok(s) => {
                    original = s;
                    &original
                }
                Err(why) => {
                    let flag = match why {
                        crate::original_dst::Unavailable::Full => Flag::UpstreamOverflow,
                        crate::original_dst::Unavailable::NoDestination(_) => {
                            Flag::NoHealthyUpstream
                        }
                    };
                    let detail = format!("cluster {:?}: {why}", destination.cluster);
                    return Ok(routed(local_reply(&cx, flag, &detail, grpc, log)));
                }
            }
        }
    };

    // The upstream request: same method and body, new URI, headers per the route. A rewritten
    // path leaves the original in x-envoy-original-path, as Envoy does.
    let rewritten = matched.rewritten_path(&view);
    if rewritten.is_some()
        && let Ok(original) = HeaderValue::from_str(&path_and_query)
    {
        parts.headers.insert(ORIGINAL_PATH.clone(), original);
    }
    let path = rewritten.unwrap_or_else(|| path_and_query.clone());
    let upstream_authority = forward
        .authority_rewrite()
        .cloned()
        .or_else(|| HeaderValue::from_str(&authority).ok());
    let mut uri = match upstream_uri(state.upstream.scheme(), upstream_authority.as_ref(), &path) {
        Ok(u) => u,
        Err(detail) => {
            return Ok(routed(local_reply(
                &cx,
                Flag::DownstreamProtocolError,
                &detail,
                grpc,
                log,
            )));
        }
    };
    // HTTP/1.1 Upgrade to WebSocket, the one upgrade Istio configures: the upgrade headers
    // travel on, and on a 101 both connections are handed over and joined byte for byte.
    // Other protocols get 403, as from Envoy (a raw tunnel past routing and policy).
    let upgrade = if parts.version <= Version::HTTP_11 && wants_upgrade(&parts.headers) {
        match parts.headers.get(header::UPGRADE) {
            Some(protocol) if is_websocket(protocol) => {
                let protocol = protocol.clone();
                parts
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(|on| (on, protocol))
            }
            // HTTP/2 over cleartext: served as the HTTP/1.1 request it also is; dropping the
            // hop-by-hop headers below drops the offer.
            Some(protocol) if protocol.as_bytes().eq_ignore_ascii_case(b"h2c") => None,
            protocol => {
                let detail = format!(
                    "Upgrade: {}: this listener upgrades to websocket only",
                    protocol.and_then(|p| p.to_str().ok()).unwrap_or("?")
                );
                return Ok(routed(local_reply(
                    &cx,
                    Flag::UpgradeFailed,
                    &detail,
                    grpc,
                    log,
                )));
            }
        }
    } else {
        None
    };
    remove_hop_by_hop(&mut parts.headers);
    if let Some((_, protocol)) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Some(host) = upstream_authority {
        parts.headers.insert(header::HOST, host);
    }
    let hash = |headers: &HeaderMap| {
        let query = path_and_query.split_once('?').map(|(_, q)| q);
        state.cluster.pick(&HashInput {
            headers,
            source_ip: cx.peer.ip(),
            query,
        })
    };
    if parts.method == Method::CONNECT {
        let Some(pick) = hash(&parts.headers) else {
            let detail = format!("cluster {:?} has no healthy endpoint", destination.cluster);
            return Ok(routed(local_reply(
                &cx,
                Flag::NoHealthyUpstream,
                &detail,
                grpc,
                log,
            )));
        };
        return Ok(tunnel(&cx, state, pick, &mut parts, grpc, log).await);
    }
    // Envoy's use_remote_address as Istio sets it: on for gateways, which add their client
    // to x-forwarded-for and say the connection's scheme in x-forwarded-proto; off for
    // sidecars, which leave x-forwarded-for alone and set x-forwarded-proto only when absent.
    let proto = HeaderValue::from_static(if scheme == "https" { "https" } else { "http" });
    if cx.internal_downstream {
        parts.headers.entry(&FORWARDED_PROTO).or_insert(proto);
    } else {
        append_forwarded_for(&mut parts.headers, cx.peer);
        parts.headers.insert(FORWARDED_PROTO.clone(), proto);
    }
    // Envoy's order: the destination's operations, then the route's (which win a conflict).
    destination.request_headers.apply(&mut parts.headers);
    matched.request_headers().apply(&mut parts.headers);

    // Attempts: one, or more under a retry policy (never for upgrades: the downstream
    // connection is handed over). The route timeout bounds them all, backoff included.
    let retry = policy.retry.as_ref().filter(|_| upgrade.is_none());
    let empty_body = body.is_end_stream();
    let mut body: ProxyBody = match log.as_ref() {
        // %BYTES_RECEIVED%: the request body's bytes, counted as they are read.
        Some(l) => {
            let received = l.bytes_received.clone();
            body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    received.fetch_add(data.len() as u64, Relaxed);
                }
                frame
            })
            .map_err(Into::into)
            .boxed_unsync()
        }
        None => body.map_err(Into::into).boxed_unsync(),
    };
    if !policy.mirrors.is_empty() && upgrade.is_none() {
        let original = crate::mirror::Original {
            method: &parts.method,
            uri: &uri,
            headers: &parts.headers,
            downstream_h2,
            source_ip: cx.peer.ip(),
            empty: empty_body,
            timeout: policy.timeout,
        };
        body = crate::mirror::start(&snapshot, &policy.mirrors, &original, body);
    }
    let mut body = if empty_body {
        RequestBody::Empty
    } else if let Some(r) = retry {
        RequestBody::Replay(Replayable::new(body, r.buffer_limit))
    } else {
        RequestBody::Once(Some(body))
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries_done = 0u32;
    // The place of the retry in flight under the cluster's maxRetries.
    let mut retry_place = None;
    let (mut resp, pick, sent, admission) = loop {
        let last_chance = retry.is_none_or(|r| retries_done >= r.num_retries);
        let redraws = retry.map_or(0, |r| r.previous_host_redraws);
        let Some(pick) = pick_avoiding(&hash, &parts.headers, &tried, redraws) else {
            let detail = format!("cluster {:?} has no healthy endpoint", destination.cluster);
            return Ok(routed(local_reply(
                &cx,
                Flag::NoHealthyUpstream,
                &detail,
                grpc,
                log,
            )));
        };
        let endpoint = pick.endpoint.address;
        if let Some(l) = log.as_mut() {
            l.upstream_host = endpoint.to_string();
        }
        let Some((client, h2_upstream)) = state.upstream.client(&pick.endpoint, downstream_h2)
        else {
            let detail = format!("{endpoint} has no connection pool");
            return Ok(routed(local_reply(
                &cx,
                Flag::NoHealthyUpstream,
                &detail,
                grpc,
                log,
            )));
        };
        let Some(attempt_body) = body.attempt() else {
            // Only reachable on a retry: the body outgrew what could be kept for replay.
            let detail = "the request body is too large to replay for a retry";
            return Ok(routed(local_reply(
                &cx,
                Flag::UpstreamRetryLimitExceeded,
                detail,
                grpc,
                log,
            )));
        };
        let mut req = Request::new(attempt_body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = if last_chance {
            std::mem::take(&mut uri)
        } else {
            uri.clone()
        };
        *req.version_mut() = if h2_upstream {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = if last_chance {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if h2_upstream {
            // HTTP/2 carries the authority in :authority, not Host.
            req.headers_mut().remove(header::HOST);
        }
        // Which attempt this is, from 1, as Envoy with Istio's `include_request_attempt_count`.
        req.headers_mut()
            .insert(ATTEMPT_COUNT.clone(), attempt_count(retries_done + 1));

        // Admission under the circuit breaker (maybe waiting for a connection), then the
        // exchange; the route and per-try timeouts bound both.
        let attempt = async {
            let admission = state
                .breaker
                .admit(h2_upstream)
                .await
                .map_err(AttemptError::Overflow)?;
            state.stats.upstream_rq_total.fetch_add(1, Relaxed);
            let sent = Instant::now();
            let resp = client.request(req).await.map_err(AttemptError::Upstream)?;
            Ok::<_, AttemptError>((resp, admission, sent))
        };
        let per_try = retry
            .and_then(|r| r.per_try_timeout)
            .map(|t| tokio::time::Instant::now() + t);
        let limit = match (deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        };
        state.stats.upstream_rq_active.fetch_add(1, Relaxed);
        let result = match limit {
            Some(at) => tokio::time::timeout_at(at, attempt).await,
            None => Ok(attempt.await),
        };
        state.stats.upstream_rq_active.fetch_sub(1, Relaxed);

        // What happened, and what the downstream gets if this is the end.
        let (outcome, flag, detail) = match result {
            Ok(Ok((resp, admission, sent))) => {
                state
                    .cluster
                    .report(&pick.endpoint, Reported::Status(resp.status().as_u16()));
                let outcome = Outcome::Response {
                    status: resp.status(),
                    grpc_status: grpc_status_of(resp.headers()),
                };
                let retriable = retry.is_some_and(|r| r.on.retries(outcome));
                let place = (retriable && !last_chance && body.can_replay())
                    .then(|| state.breaker.retry())
                    .flatten();
                let Some(place) = place else {
                    let resp = resp.map(|b| b.map_err(Into::into).boxed_unsync());
                    break (resp, pick, sent, admission);
                };
                retry_place = Some(place);
                state.stats.upstream_rq_xx[class_index(resp.status().as_u16())]
                    .fetch_add(1, Relaxed);
                let detail = format!("{endpoint} answered {}", resp.status());
                (outcome, Flag::UpstreamRetryLimitExceeded, detail)
            }
            Ok(Err(AttemptError::Overflow(overflow))) => {
                // Envoy does not retry an overflow: the cluster is saturated.
                state
                    .stats
                    .upstream_rq_pending_overflow
                    .fetch_add(1, Relaxed);
                let detail = format!("cluster {:?}: {overflow}", destination.cluster);
                return Ok(routed(local_reply(
                    &cx,
                    Flag::UpstreamOverflow,
                    &detail,
                    grpc,
                    log,
                )));
            }
            Ok(Err(AttemptError::Upstream(e))) if e.is_connect() => {
                state.stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
                let detail = format!("connecting to {endpoint}: {}", error_chain(&e));
                (
                    Outcome::ConnectFailure,
                    Flag::UpstreamConnectFailure,
                    detail,
                )
            }
            Ok(Err(AttemptError::Upstream(e))) if is_downstream_body_error(&e) => {
                // The client's body broke (a bad chunk, a reset): the client's fault, not
                // the upstream's, and not worth a retry.
                let detail = format!("reading the request body: {}", error_chain(&e));
                return Ok(routed(local_reply(
                    &cx,
                    Flag::DownstreamProtocolError,
                    &detail,
                    grpc,
                    log,
                )));
            }
            Ok(Err(AttemptError::Upstream(e))) => {
                let refused_stream = is_refused_stream(&e);
                let detail = format!("{endpoint}: {}", error_chain(&e));
                (
                    Outcome::Reset { refused_stream },
                    Flag::UpstreamConnectionTermination,
                    detail,
                )
            }
            Err(_) => {
                state.stats.upstream_rq_timeout.fetch_add(1, Relaxed);
                let whole = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if whole {
                    return Ok(routed(route_timeout(&cx, policy, grpc, log)));
                }
                let detail = format!("{endpoint}: per-try timeout passed");
                (Outcome::PerTryTimeout, Flag::UpstreamRequestTimeout, detail)
            }
        };
        if !matches!(outcome, Outcome::Response { .. }) {
            state.cluster.report(&pick.endpoint, Reported::LocalFailure);
            let retriable = retry.is_some_and(|r| r.on.retries(outcome)) && body.can_replay();
            if !retriable {
                return Ok(routed(local_reply(&cx, flag, &detail, grpc, log)));
            }
            if last_chance {
                // Envoy answers a last per-try timeout as a timeout, anything else as URX.
                let flag = match outcome {
                    Outcome::PerTryTimeout => Flag::UpstreamRequestTimeout,
                    _ => Flag::UpstreamRetryLimitExceeded,
                };
                let detail = format!("{} attempts, the last: {detail}", retries_done + 1);
                return Ok(routed(local_reply(&cx, flag, &detail, grpc, log)));
            }
            match state.breaker.retry() {
                Some(place) => retry_place = Some(place),
                None => {
                    // maxRetries in flight: this failure is final.
                    state.stats.upstream_rq_retry_overflow.fetch_add(1, Relaxed);
                    return Ok(routed(local_reply(&cx, flag, &detail, grpc, log)));
                }
            }
        }
        // Retry, after a jittered backoff, on another endpoint when there is one.
        retries_done += 1;
        state.stats.upstream_rq_retry.fetch_add(1, Relaxed);
        tried.push(endpoint);
        drop(pick);
        let pause = retry.map_or(Duration::ZERO, |r| r.backoff(retries_done, fastrand::f64()));
        let wake = tokio::time::Instant::now() + pause;
        if deadline.is_some_and(|d| d <= wake) {
            return Ok(routed(route_timeout(&cx, policy, grpc, log)));
        }
        tokio::time::sleep_until(wake).await;
    };

    state.stats.upstream_rq_xx[class_index(resp.status().as_u16())].fetch_add(1, Relaxed);
    let upstream_ms = sent.elapsed().as_millis();
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_protocol = resp.headers().get(header::UPGRADE).cloned();
    remove_hop_by_hop(resp.headers_mut());
    if let (true, Some((downstream, _)), Some(protocol)) = (switching, upgrade, upstream_protocol) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, protocol);
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(join_upgraded(downstream, upstream));
    }
    resp.headers_mut()
        .insert(UPSTREAM_TIME.clone(), HeaderValue::from(upstream_ms as u64));
    if let Some(cookie) = &pick.set_cookie {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    decorate(resp.headers_mut());
    destination.response_headers.apply(resp.headers_mut());
    matched.response_headers().apply(resp.headers_mut());
    if let Some(l) = log.as_mut() {
        l.upstream_ms = Some(upstream_ms);
        l.started = start;
    }
    if let Some(at) = deadline {
        resp = resp.map(|b| Deadline::new(b, at).boxed_unsync());
    }
    // Held until the response body ends: the endpoint's active count, the circuit
    // breaker's places.
    let hold = (pick, admission, retry_place);
    Ok(finish(&cx, resp, None, log, hold))
}

/// Why an attempt produced no response.
enum AttemptError {
    Overflow(crate::breaker::Overflow),
    Upstream(hyper_util::client::legacy::Error),
}

/// The request body for each attempt.
enum RequestBody {
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

/// Picks an endpoint; a pick that lands on one already tried is drawn again, up to `redraws`
/// times (Envoy's previous_hosts retry predicate with its host_selection_retry_max_attempts).
fn pick_avoiding<F>(
    pick: &F,
    headers: &HeaderMap,
    tried: &[SocketAddr],
    redraws: u32,
) -> Option<crate::cluster::Pick>
where
    F: Fn(&HeaderMap) -> Option<crate::cluster::Pick>,
{
    let mut choice = pick(headers)?;
    for _ in 0..redraws {
        if !tried.contains(&choice.endpoint.address) {
            break;
        }
        choice = pick(headers)?;
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

/// 504 UT: the route's timeout passed.
fn route_timeout(
    cx: &Arc<ConnContext>,
    policy: &crate::route::policy::Policy,
    grpc: bool,
    log: Option<Box<Entry>>,
) -> Response<ProxyBody> {
    let detail = format!(
        "route timeout of {:?} passed",
        policy.timeout.unwrap_or_default()
    );
    local_reply(cx, Flag::UpstreamRequestTimeout, &detail, grpc, log)
}

/// A local reply for `flag`, counted and logged like any response.
fn local_reply(
    cx: &Arc<ConnContext>,
    flag: Flag,
    detail: &str,
    grpc: bool,
    mut log: Option<Box<Entry>>,
) -> Response<ProxyBody> {
    tracing::debug!(peer = %cx.peer, flag = flag.code(), "local reply: {detail}");
    if let Some(l) = log.as_mut() {
        detail.clone_into(&mut l.details);
    }
    let shown = cx.internal_downstream.then_some(detail);
    finish(cx, reply::local_for(flag, shown, grpc), Some(flag), log, ())
}

/// Counts the response, and wraps its body so that the access log line is written (and the
/// endpoint's active-request count released) when the body ends.
fn finish<H: Send + Unpin + 'static>(
    cx: &Arc<ConnContext>,
    resp: Response<ProxyBody>,
    flag: Option<Flag>,
    log: Option<Box<Entry>>,
    hold: H,
) -> Response<ProxyBody> {
    let shared = cx.shared.clone();
    shared.stats.downstream_rq_xx[class_index(resp.status().as_u16())].fetch_add(1, Relaxed);
    if let Some(f) = flag {
        shared.stats.local_reply(f.code());
    }
    let status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(header::SERVER, SERVER.clone());
    let body = Observed::new(body, move |bytes, _complete| {
        drop(hold);
        shared.stats.downstream_rq_active.fetch_sub(1, Relaxed);
        if let Some(mut log) = log {
            log.status = status;
            if let Some(f) = flag {
                // A local reply's cause; otherwise whatever was noted on the way (DI).
                log.flags = f.code();
            }
            log.bytes_sent = bytes;
            shared.access_log.write(&log);
        }
    });
    Response::from_parts(parts, body.boxed_unsync())
}

/// `Upgrade: websocket` (any case; a list is not a WebSocket handshake).
fn is_websocket(protocol: &HeaderValue) -> bool {
    protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
}

/// True for `Connection: upgrade` with an `Upgrade` header.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// After a 101: copy bytes both ways until either side closes.
async fn join_upgraded(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    crate::tunnel::splice(&mut down, &mut up, None).await;
}

/// CONNECT (HTTP/1.1, or HTTP/2's stream form): open a connection to the picked endpoint,
/// answer 200, and splice the downstream's tunnel to it. A failed connect answers 503 UF.
async fn tunnel(
    cx: &Arc<ConnContext>,
    state: &ClusterState,
    pick: crate::cluster::Pick,
    parts: &mut http::request::Parts,
    grpc: bool,
    log: Option<Box<Entry>>,
) -> Response<ProxyBody> {
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        let detail = "CONNECT without a tunnel to hand over";
        return local_reply(cx, Flag::DownstreamProtocolError, detail, grpc, log);
    };
    let upstream = match crate::tunnel::connect(state, &pick).await {
        Ok(s) => s,
        Err(detail) => {
            return local_reply(cx, Flag::UpstreamConnectFailure, &detail, grpc, log);
        }
    };
    let idle = state.cluster.tcp_idle_timeout();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(down) => {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(upstream);
                crate::tunnel::splice(&mut down, &mut up, idle).await;
            }
            Err(e) => tracing::debug!("CONNECT tunnel: {e}"),
        }
        drop(pick);
    });
    // A 2xx to CONNECT has no body and no Content-Length (RFC 9110 §9.3.6).
    let resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    finish(cx, resp, None, log, ())
}

fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut r = reply::fixed(status, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
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

/// What Envoy's HTTP/1 codec refuses before routing, as Istio configures it: HTTP/1.0 (426;
/// Istio leaves `accept_http_10` off), a transfer coding other than chunked (501: the
/// coding would be lost on the way, as Transfer-Encoding is hop by hop), and a method that
/// is not a registered one in its registered (upper) case (400).
fn http1_refusal(parts: &http::request::Parts) -> Option<(Flag, &'static str)> {
    if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 {
        return Some((
            Flag::Http10,
            "HTTP/1.0 is not served; use HTTP/1.1 or HTTP/2",
        ));
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    if codings
        .filter(|c| !c.is_empty())
        .any(|c| !c.eq_ignore_ascii_case(b"chunked"))
    {
        return Some((
            Flag::TransferCoding,
            "only the chunked transfer coding is implemented",
        ));
    }
    if !KNOWN_METHODS.contains(&parts.method.as_str()) {
        return Some((
            Flag::DownstreamProtocolError,
            "unknown method (methods are case-sensitive: GET, not get)",
        ));
    }
    None
}

/// The methods Envoy's HTTP/1 parser knows: HTTP's, WebDAV's and a few more.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// Drops every `x-envoy-*` header an outside client sent. They steer proxies (retries,
/// timeouts, `x-envoy-internal`), so only the mesh may set them; Envoy drops its list of
/// them from external requests, weft the whole prefix.
fn remove_envoy_headers(headers: &mut HeaderMap) {
    let envoy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for name in envoy {
        headers.remove(&name);
    }
}

/// The authority a request is for: the absolute-form URI's (explicit proxy), HTTP/2's
/// :authority, or the Host header. Requests RFC 9112 says to answer with 400 are refused:
/// no Host, several Host headers, a Host that is not an authority, a CONNECT whose target
/// is not `host:port`, a `host:port` target for anything but CONNECT, and `*` for anything
/// but OPTIONS.
fn request_authority(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    explicit_proxy: bool,
) -> Result<String, &'static str> {
    if method == Method::CONNECT && uri.authority().is_none_or(|a| a.port().is_none()) {
        return Err("CONNECT needs a host:port target");
    }
    // `GET example.com HTTP/1.1`: the authority form is CONNECT's alone (RFC 9112 3.2.3);
    // routing it by its target while Host says otherwise would let the two disagree.
    if method != Method::CONNECT && uri.scheme().is_none() && uri.authority().is_some() {
        return Err("only CONNECT takes a host:port request target");
    }
    if uri.path() == "*" && uri.authority().is_none() && method != Method::OPTIONS {
        return Err("the * target is for OPTIONS only");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("request has more than one Host header");
    }
    if let Some(a) = uri.authority()
        && (explicit_proxy
            || uri.scheme().is_none()
            || uri.scheme() == Some(&Scheme::HTTP)
            || uri.scheme() == Some(&Scheme::HTTPS))
    {
        return Ok(a.as_str().to_ascii_lowercase());
    }
    let host = host.ok_or("request has no Host or :authority")?;
    // RFC 3986 authority characters (reg-name or IP literal, and a port), no userinfo.
    let valid = !host.is_empty()
        && host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b));
    match host.to_str() {
        Ok(h) if valid => Ok(h.to_ascii_lowercase()),
        _ => Err("the Host header is not a valid authority"),
    }
}

/// The upstream request's URI: the request's (or rewritten) authority, so that HTTP/2 sends
/// it as `:authority`.
fn upstream_uri(
    scheme: Scheme,
    authority: Option<&HeaderValue>,
    path: &str,
) -> Result<Uri, String> {
    // The connection goes to the picked endpoint whatever the URI says; a request whose
    // authority is not a valid URI authority goes with a placeholder (Host is still sent).
    let authority = authority
        .and_then(|a| Authority::try_from(a.as_bytes()).ok())
        .unwrap_or_else(|| Authority::from_static("upstream"));
    let pq = PathAndQuery::try_from(path).map_err(|e| format!("bad path {path:?}: {e}"))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| e.to_string())
}

/// RFC 9110 §7.6.1: connection-specific headers are not forwarded (and HTTP/2 forbids them).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // The proxy answered `100 Continue` itself (when it started reading the body), as Envoy
    // does; the upstream gets the body without being asked.
    if headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        headers.remove(header::EXPECT);
    }
    // `te: trailers` is how gRPC asks for trailers; anything else is hop-by-hop.
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// The scheme the client used: the request's own (absolute form, HTTP/2 `:scheme`) or the
/// connection's; on a sidecar, an `x-forwarded-proto` of `http` or `https` wins (set by a
/// proxy in front that terminated TLS, which Envoy trusts with use_remote_address off). A
/// gateway's clients are outside: it goes by its own connection. Redirects and `scheme`
/// matches read it.
fn original_scheme(cx: &ConnContext, parts: &http::request::Parts) -> String {
    let forwarded = cx
        .internal_downstream
        .then(|| parts.headers.get(&FORWARDED_PROTO))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .filter(|p| p == "http" || p == "https");
    forwarded.unwrap_or_else(|| {
        parts
            .uri
            .scheme_str()
            .unwrap_or(if cx.tls.is_some() { "https" } else { "http" })
            .to_owned()
    })
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(FORWARDED_FOR.clone(), v);
    }
}

fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
