//! The HTTP request path. [`handle`] reads top to bottom, one phase a call, each phase in a
//! module of its own:
//!
//! 1. [`downstream::check`]: what a request must be before anything else (HTTP/1 rules, the
//!    listener's rate limit, its authority, its path normalized, TLS admission);
//! 2. [`authn::check`] and [`authz::check`]: the request's JWT (RequestAuthentication), then
//!    the listener's authorization (AuthorizationPolicy), before routing as Envoy's
//!    jwt_authn and rbac filters run before its router;
//! 3. [`decide::route`]: the route table's decision: an answer made here (CORS preflight,
//!    direct response, redirect) or a destination;
//! 4. [`decide::inject_faults`]: the route's fault injection (Envoy's fault filter);
//! 5. [`outbound::target`] and [`outbound::build`]: the cluster, and the upstream request
//!    (URI, headers, the WebSocket offer);
//! 6. [`attempts::run`]: pick, admit, send, classify; retry after a backoff or give up;
//! 7. [`respond::upstream`]: the response (header operations, deadline, upgrade join).
//!
//! Every phase says why it cannot go on with one [`Error`]; [`Exchange::error_reply`] turns
//! it into the local reply, and [`finish`] counts and logs whatever answers. A new concern
//! (authentication, authorization, metrics, tracing) is one more phase call in [`serve`].

mod attempts;
mod authn;
mod authz;
mod decide;
mod downstream;
mod outbound;
mod report;
mod respond;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::access_log::Entry;
use crate::body::{Observed, ProxyBody};
use crate::error::{Error, Flags};
use crate::reply::Flag;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::stats::class_index;
use decide::Decision;

/// What a request's connection contributes: where it came from, which listener.
pub struct ConnContext {
    pub shared: Arc<Shared>,
    pub listener: String,
    pub route_config: String,
    pub explicit_proxy: bool,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The listener's access log, when it has one.
    pub access_log: Option<Arc<crate::access_log::Sink>>,
    /// The connection's TLS (scheme `https`), when it has some.
    pub tls: Option<TlsConn>,
    /// The verified peer's principal: the SPIFFE URI SAN (without `spiffe://`,
    /// `cluster.local/ns/NS/sa/SA`, Istio's `source.principal`) of the client certificate
    /// verified on this connection: mesh mTLS, or a TLS listener's client verification. None
    /// for plaintext and for certificates without one. Authorization's `principals`,
    /// `namespaces` and `source.*` read it.
    pub peer_identity: Option<Arc<str>>,
    /// The client certificate's details as an `x-forwarded-client-cert` element
    /// (`By=...;Hash=...;Subject="...";URI=...`), on a connection with a verified client
    /// certificate.
    pub client_cert_details: Option<Arc<str>>,
    /// What happens to `x-forwarded-client-cert` (Envoy's forward_client_cert_details).
    pub forward_client_cert: ForwardClientCert,
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
    /// Proxies in front to trust (Envoy's xff_num_trusted_hops): see
    /// [`downstream::client_address`].
    pub xff_num_trusted_hops: u32,
    /// The listener's limit on a request's headers (`maxRequestHeadersKb`), in bytes.
    pub max_header_bytes: usize,
    /// The listener's drain: the connection, and the tunnels its requests open, run under it.
    pub drain: crate::drain::Watcher,
    /// What the listener reports in the standard metrics.
    pub reporting: Arc<crate::metrics::peer::Reporting>,
    /// The connection's source workload, once a request said it.
    pub source: report::SourceCache,
    /// A captured connection's original destination (`local` is it too): a Host without a
    /// port is routed with its port, and an ORIGINAL_DST cluster sends there.
    pub original_dst: Option<SocketAddr>,
}

/// Envoy's forward_client_cert_details, as Istio sets it: APPEND_FORWARD on a sidecar's
/// inbound (mesh mTLS) listeners, SANITIZE_SET on gateways (`gatewayTopology`'s default),
/// SANITIZE (Envoy's default) elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// The header is removed.
    Sanitize,
    /// The client certificate's details are appended to what arrived (kept as is without a
    /// client certificate).
    AppendForward,
    /// The header is replaced by the client certificate's details (removed without one).
    SanitizeSet,
}

/// What a TLS connection was handshaken with.
pub struct TlsConn {
    pub termination: Arc<crate::tls::Termination>,
    /// The certificate (and client verification) its SNI chose.
    pub served: Arc<crate::tls::Served>,
    /// The SNI the client sent (`connection.sni`).
    pub sni: Option<Box<str>>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// What every response says it came through, as Istio names its proxies (Envoy's
/// `server_name`, with the upstream's own `server` header overwritten).
static SERVER: HeaderValue = HeaderValue::from_static("istio-envoy");

/// Handles one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<Incoming>,
    cx: Arc<ConnContext>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut ex = Exchange::begin(&cx, &mut parts);
    let span = ex.span.clone();
    let snapshot = cx.shared.snapshot.load_full();
    // Boxed: the phases' state is a few KiB, and the handler's future is moved whole into
    // the task hyper spawns for each HTTP/2 stream; a box moves as a pointer.
    let reply = match Box::pin(serve(&cx, &mut ex, &snapshot, parts, body).instrument(span)).await {
        Ok(reply) => reply,
        Err(e) => ex.error_reply(&cx, e),
    };
    Ok(finish(&cx, ex, reply))
}

/// The phases, in order. An error before routing is answered as it is; one after routing
/// gets the route's response header operations too ([`decide::Routed::finalize`]), except a
/// fault's abort: Envoy's fault filter answers before the router.
async fn serve(
    cx: &ConnContext,
    ex: &mut Exchange,
    snapshot: &Arc<Snapshot>,
    parts: http::request::Parts,
    body: Incoming,
) -> Result<Reply, Error> {
    let mut request = downstream::check(cx, ex, parts)?;
    ex.trace = crate::trace::start(
        snapshot.tracer(&cx.listener),
        &mut request.parts.headers,
        &request.parts.method,
        request.parts.version,
        &crate::trace::RequestInfo {
            peer: cx.peer,
            local: cx.local,
            scheme: request.scheme,
            authority: &request.authority,
            path: &request.path_and_query,
        },
    );
    let (jwt_authn, rbac) = snapshot.http_policies(&cx.listener);
    let identity = authn::check(cx, ex, jwt_authn, &mut request)?;
    authz::check(cx, ex, rbac, &request, identity.as_ref())?;
    let routed = match decide::route(cx, ex, snapshot, &request)? {
        Decision::Answer(resp) => return Ok(Reply::new(resp)),
        Decision::Forward(routed) => routed,
    };
    // The route's destination is the request's service in the metrics, a fault's abort and a
    // missing cluster included (as Istio reports the route's service).
    if let (Some(r), Some(c)) = (
        ex.report.as_mut(),
        snapshot.clusters.get(&routed.destination.cluster),
    ) {
        r.destined(&c.report);
    }
    if let Some(t) = ex.trace.as_deref_mut() {
        t.upstream_cluster(&routed.destination.cluster);
    }
    decide::inject_faults(ex, routed.policy()).await?;
    match forward(cx, ex, snapshot, &routed, request, body).await {
        Ok(reply) => Ok(reply),
        Err(e) => Ok(routed.finalize(ex.error_reply(cx, e))),
    }
}

/// A routed request's way upstream and back.
async fn forward(
    cx: &ConnContext,
    ex: &mut Exchange,
    snapshot: &Arc<Snapshot>,
    routed: &decide::Routed<'_>,
    request: downstream::Checked,
    body: Incoming,
) -> Result<Reply, Error> {
    let policy = routed.policy();
    // The route timeout starts here (after a fault's delay, as in Envoy), and bounds all
    // that follows: an ORIGINAL_DST lookup, the attempts and their backoff, the response body.
    let deadline = policy.timeout.map(|t| tokio::time::Instant::now() + t);
    let cluster = outbound::target(cx, snapshot, routed, &request, deadline).await?;
    let mut outbound = outbound::build(cx, snapshot, routed, &cluster, request)?;
    report::routed(
        cx,
        ex.report.as_mut(),
        &cluster.report,
        &mut outbound.headers,
    );
    if outbound.is_connect() {
        return respond::tunnel(cx, &cluster, routed, &mut outbound).await;
    }
    let body = outbound::body(ex, snapshot, policy, &outbound, body);
    let answer = attempts::run(ex, &cluster, routed, &mut outbound, body, deadline).await?;
    let upgrade = outbound.upgrade.take();
    Ok(respond::upstream(
        cx, ex, &cluster, routed, answer, upgrade, deadline,
    ))
}

/// One request's bookkeeping, from arrival to the end of its response body.
pub(crate) struct Exchange {
    /// The request is gRPC: local replies are Trailers-Only gRPC responses.
    grpc: bool,
    /// Built only when the listener logs: it costs a dozen allocations.
    log: Option<Box<Entry>>,
    /// Response flags noted on the way (DI, URX on a passed-through last response, and the
    /// cause of a local reply).
    flags: Flags,
    /// A local reply closes the connection (`connection: close`): after the HTTP/1 codec's
    /// refusals, as Envoy's.
    close: bool,
    /// A CONNECT: refused, its connection is closed (what follows its head may be tunnel
    /// bytes, not a request).
    connect: bool,
    /// The request's span: listener, peer, method and path; route and cluster once known.
    span: tracing::Span,
    /// What it reports in the standard metrics; None when its listener reports nothing.
    report: Option<report::Report>,
    /// The request's distributed-tracing span, when its listener traces and it is sampled
    /// ([`crate::trace`]); ended with the response body.
    trace: Option<Box<crate::trace::Active>>,
}

impl Exchange {
    fn begin(cx: &ConnContext, parts: &mut http::request::Parts) -> Exchange {
        let stats = &cx.shared.stats;
        stats.downstream_rq_total.fetch_add(1, Relaxed);
        stats.downstream_rq_active.fetch_add(1, Relaxed);
        if cx.internal_downstream {
            downstream::remove_envoy_control_headers(&mut parts.headers);
        } else {
            downstream::remove_envoy_headers(&mut parts.headers);
        }
        // A gateway's outside client does not choose the request's id (Envoy's
        // preserve_external_request_id, which Istio leaves off).
        if !cx.internal_downstream || !parts.headers.contains_key(&REQUEST_ID) {
            parts
                .headers
                .insert(REQUEST_ID.clone(), downstream::new_request_id());
        }
        let report = report::begin(cx, &mut parts.headers);
        let span = tracing::debug_span!(
            "request",
            method = %parts.method,
            path = %parts.uri.path(),
            route = tracing::field::Empty,
            cluster = tracing::field::Empty,
        );
        Exchange {
            grpc: crate::reply::is_grpc(&parts.headers),
            log: cx
                .access_log
                .as_ref()
                .map(|sink| Box::new(Entry::begin(parts, cx, sink))),
            flags: Flags::default(),
            close: false,
            connect: parts.method == http::Method::CONNECT,
            span,
            report,
            trace: None,
        }
    }

    /// Notes what the access log shows of this request, when the listener logs.
    fn note(&mut self, with: impl FnOnce(&mut Entry)) {
        if let Some(l) = self.log.as_deref_mut() {
            with(l);
        }
    }

    fn flag(&mut self, flag: Flag) {
        self.flags.add(flag);
    }

    /// The local reply for `e`: its flags noted, its detail logged at debug and kept for
    /// the access log; the detail shown only to a caller inside the mesh.
    fn error_reply(&mut self, cx: &ConnContext, e: Error) -> Reply {
        tracing::debug!(parent: &self.span, peer = %cx.peer, flags = %e.flags(), "local reply: {}", e.detail());
        cx.shared.stats.local_reply(e.flag().code());
        self.flags.merge(e.flags());
        let mut resp = e.reply(self.grpc, cx.internal_downstream);
        if self.flags.to_string() != e.flag().code() {
            // The header says what the access log says: `URX,UF`, `DI,UF`.
            if let Ok(v) = HeaderValue::from_str(&self.flags.to_string()) {
                resp.headers_mut().insert(crate::reply::FLAGS_HEADER, v);
            }
        }
        // Envoy closes the connection after refusing an upgrade or a CONNECT too: the bytes
        // after the head belong to the tunnel that was not opened.
        let close = self.close || self.connect || e.cause() == crate::error::Cause::UpgradeRefused;
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.note(|l| e.detail().clone_into(&mut l.details));
        Reply::new(resp)
    }
}

/// What answers a request: the response, and what it holds until its body ends (the
/// endpoint's active-request count, the circuit breaker's places).
pub(crate) struct Reply {
    resp: Response<ProxyBody>,
    held: Held,
}

/// Each is released when dropped: with the reply's body, at its end.
#[derive(Default)]
pub(crate) struct Held {
    pick: Option<crate::cluster::Pick>,
    #[expect(dead_code, reason = "held for its Drop")]
    admission: Option<crate::breaker::Admission>,
    #[expect(dead_code, reason = "held for its Drop")]
    retry: Option<crate::breaker::RetryPlace>,
}

impl Reply {
    fn new(resp: Response<ProxyBody>) -> Reply {
        Reply {
            resp,
            held: Held::default(),
        }
    }
}

/// Counts the response, and wraps its body so that the access log line is written (and what
/// the reply holds released) when the body ends.
fn finish(cx: &Arc<ConnContext>, ex: Exchange, reply: Reply) -> Response<ProxyBody> {
    let shared = cx.shared.clone();
    let Reply { resp, held } = reply;
    let status = resp.status().as_u16();
    shared.stats.downstream_rq_xx[class_index(status)].fetch_add(1, Relaxed);
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(header::SERVER, SERVER.clone());
    let Exchange {
        mut log,
        flags,
        report,
        grpc,
        trace,
        ..
    } = ex;
    let outcome = report::Outcome {
        status,
        grpc,
        grpc_status: crate::reply::grpc_status(&parts.headers),
        flags,
    };
    if let Some(l) = log.as_deref_mut() {
        l.response(&parts.headers);
    }
    let cx = Arc::clone(cx);
    let body = Observed::new(body, move |ended| {
        if let Some(report) = report {
            report.record(&cx, held.pick.as_ref(), outcome, &ended);
        }
        drop(held);
        if let Some(t) = trace {
            t.end(status, &flags.to_string());
        }
        shared.stats.downstream_rq_active.fetch_sub(1, Relaxed);
        if let Some(mut log) = log {
            log.status = status;
            log.flags = flags;
            log.bytes_sent = ended.bytes;
            log.write();
        }
    });
    Response::from_parts(parts, body.boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: std::future::Future>(
        _: impl Fn(Request<Incoming>, Arc<ConnContext>) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves the handler's future into the task of each HTTP/2 stream (and within it):
    /// the phases' few KiB of state stay behind a box. (3.9 KiB unboxed; the moves were 8% of
    /// the proxy's profile under HTTP/2 load.)
    #[test]
    fn the_request_handlers_future_stays_small() {
        let size = future_size(handle);
        assert!(size < 1024, "handle's future is {size} bytes");
    }
}
