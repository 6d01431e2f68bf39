//! Phase 2, the route decision: the listener's route table picks a route; CORS, the route's
//! rate limit, and its action decide whether the proxy answers itself (preflight, direct
//! response, redirect) or forwards to a destination. Phase 3, fault injection, is the
//! route's too.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::downstream::Checked;
use super::{ConnContext, Exchange, Reply};
use crate::body::ProxyBody;
use crate::error::{Cause, Error};
use crate::reply::{self, Flag};
use crate::route::cors::{Cors, PREFLIGHT_STATUS, Verdict};
use crate::route::policy::{Policy, chance};
use crate::route::{Action, Matched, RequestView};
use crate::route::{Destination, Forward};
use crate::snapshot::Snapshot;

/// What the route table decided.
pub(super) enum Decision<'s> {
    /// The proxy answers: a CORS preflight, a direct response, a redirect.
    Answer(Response<ProxyBody>),
    /// Forward to a destination.
    Forward(Routed<'s>),
}

/// A request on its way to a destination: the route, and what the response will need of it.
pub(super) struct Routed<'s> {
    pub matched: Matched<'s>,
    pub forward: &'s Forward,
    /// The weighted destination drawn for this request.
    pub destination: &'s Destination,
    /// An allowed CORS origin, echoed in the response.
    cors: Option<(&'s Cors, HeaderValue)>,
}

impl<'s> Routed<'s> {
    pub fn policy(&self) -> &'s Policy {
        self.forward.policy()
    }

    /// A local reply made after routing carries the route's response header operations and
    /// CORS headers, as Envoy's router finalizes its own replies (UF, UH, UT, UO, ...).
    pub fn finalize(&self, mut reply: Reply) -> Reply {
        let headers = reply.resp.headers_mut();
        self.decorate(headers);
        self.matched.response_headers().apply(headers);
        reply
    }

    /// An upstream response's headers: CORS, then the destination's operations, then the
    /// route's (which win a conflict), in Envoy's order.
    pub fn finalize_upstream(&self, headers: &mut HeaderMap) {
        self.decorate(headers);
        self.destination.response_headers.apply(headers);
        self.matched.response_headers().apply(headers);
    }

    fn decorate(&self, headers: &mut HeaderMap) {
        if let Some((cors, origin)) = &self.cors {
            cors.decorate(origin.clone(), headers);
        }
    }
}

/// What routing reads of a checked request.
pub(super) fn view<'r>(
    cx: &ConnContext,
    snapshot: &'r Snapshot,
    request: &'r Checked,
) -> RequestView<'r> {
    RequestView {
        method: &request.parts.method,
        scheme: request.scheme,
        authority: request
            .routing_authority
            .as_deref()
            .unwrap_or(&request.authority),
        path_and_query: &request.path_and_query,
        headers: &request.parts.headers,
        port: cx.local.port(),
        // Istio's sourceLabels name the workload sending the request: on a sidecar's outbound
        // side and on a gateway, that is this proxy's own workload.
        source_labels: &snapshot.node.labels,
    }
}

pub(super) fn route<'s>(
    cx: &ConnContext,
    ex: &mut Exchange,
    snapshot: &'s Arc<Snapshot>,
    request: &Checked,
) -> Result<Decision<'s>, Error> {
    let Some(table) = snapshot.routes.get(&cx.route_config) else {
        let detail = format!("route configuration {:?} is not loaded", cx.route_config);
        return Err(Error::new(Cause::NoRoute, detail));
    };
    let view = view(cx, snapshot, request);
    let Some(matched) = table.route(&view) else {
        let detail = format!(
            "no route for {}{}",
            request.authority, request.path_and_query
        );
        return Err(Error::new(Cause::NoRoute, detail));
    };
    ex.span.record("route", matched.route_name());
    ex.note(|l| matched.route_name().clone_into(&mut l.route));

    // CORS first (a preflight from an allowed origin is answered here, taking no token), then
    // the route's rate limit.
    let mut cors_origin = None;
    if let Some(cors) = matched.cors() {
        match cors.verdict(&request.parts.method, &request.parts.headers) {
            Verdict::PassThrough => {}
            Verdict::Decorate(origin) => cors_origin = Some((cors, origin)),
            Verdict::Answer(headers) => {
                let mut resp = reply::fixed(PREFLIGHT_STATUS, Bytes::new());
                resp.headers_mut().extend(headers);
                return Ok(Decision::Answer(resp));
            }
        }
    }
    if let Some(bucket) = matched.rate_limit()
        && !bucket.try_acquire()
    {
        let detail = format!("route {:?}: local rate limit", matched.route_name());
        return Err(Error::new(Cause::RateLimited, detail));
    }

    let forward = match matched.action() {
        Action::Forward(f) => f,
        Action::Direct(d) => {
            let resp = reply::fixed(d.status, d.body.clone());
            return Ok(Decision::Answer(answered(&matched, cors_origin, resp)));
        }
        Action::Redirect(_) => {
            let resp = match matched.redirect(&view) {
                Some((status, location)) => redirect(status, &location),
                None => reply::fixed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(b"bad redirect\n"),
                ),
            };
            return Ok(Decision::Answer(answered(&matched, cors_origin, resp)));
        }
    };
    let destination = forward.pick(fastrand::u32(..));
    ex.span.record("cluster", &*destination.cluster);
    ex.note(|l| l.cluster = destination.cluster.to_string());
    Ok(Decision::Forward(Routed {
        matched,
        forward,
        destination,
        cors: cors_origin,
    }))
}

/// A response the route itself makes, with its CORS headers and response header operations.
fn answered(
    matched: &Matched<'_>,
    cors: Option<(&Cors, HeaderValue)>,
    mut resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if let Some((cors, origin)) = cors {
        cors.decorate(origin, resp.headers_mut());
    }
    matched.response_headers().apply(resp.headers_mut());
    resp
}

fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut r = reply::fixed(status, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The route's fault injection, as Envoy's fault filter (which runs before the router, so an
/// abort carries none of the route's response header operations): a delay is slept here
/// (flag DI), an abort is the request's answer (flag FI).
pub(super) async fn inject_faults(ex: &mut Exchange, policy: &Policy) -> Result<(), Error> {
    let Some(fault) = &policy.fault else {
        return Ok(());
    };
    if let Some((delay, percent)) = fault.delay
        && chance(percent, fastrand::f64())
    {
        tokio::time::sleep(delay).await;
        ex.flag(Flag::DelayInjected);
    }
    if let Some((abort, percent)) = fault.abort
        && chance(percent, fastrand::f64())
    {
        return Err(Error::new(Cause::Fault(abort), "fault filter abort"));
    }
    Ok(())
}
