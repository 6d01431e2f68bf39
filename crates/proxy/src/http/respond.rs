//! Phase 6, the response: an upstream's response with the route's header operations, the
//! route's deadline over its body, and a WebSocket's two halves joined after a 101. And
//! CONNECT, whose response is the tunnel.

use std::sync::atomic::Ordering::Relaxed;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::attempts::Answer;
use super::decide::Routed;
use super::outbound::{Outbound, Target};
use super::{ConnContext, Exchange, Held, Reply};
use crate::body::Deadline;
use crate::error::{Cause, Error};
use crate::snapshot::ClusterState;
use crate::stats::class_index;

static UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");

pub(super) fn upstream(
    cx: &ConnContext,
    ex: &mut Exchange,
    cluster: &ClusterState,
    routed: &Routed<'_>,
    answer: Answer,
    upgrade: Option<(hyper::upgrade::OnUpgrade, HeaderValue)>,
    deadline: Option<tokio::time::Instant>,
) -> Reply {
    let Answer {
        mut resp,
        held,
        sent,
    } = answer;
    let class = class_index(resp.status().as_u16());
    cluster.stats.upstream_rq_xx[class].fetch_add(1, Relaxed);
    let upstream_ms = sent.elapsed().as_millis();
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_protocol = resp.headers().get(header::UPGRADE).cloned();
    super::outbound::remove_hop_by_hop(resp.headers_mut());
    if let (true, Some((downstream, _)), Some(protocol)) = (switching, upgrade, upstream_protocol) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, protocol);
        let upstream = hyper::upgrade::on(&mut resp);
        cx.spawn_tunnel(join_upgraded(downstream, upstream));
    }
    if !switching {
        // Not on a 101, as Envoy: the exchange goes on.
        resp.headers_mut()
            .insert(UPSTREAM_TIME.clone(), HeaderValue::from(upstream_ms as u64));
    }
    if let Some(cookie) = held.pick.as_ref().and_then(|p| p.set_cookie.clone()) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    routed.finalize_upstream(resp.headers_mut());
    ex.note(|l| l.upstream_ms = Some(upstream_ms));
    if let Some(at) = deadline {
        resp = resp.map(|b| Deadline::new(b, at).boxed_unsync());
    }
    Reply { resp, held }
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
pub(super) async fn tunnel(
    cx: &ConnContext,
    cluster: &Target<'_>,
    routed: &Routed<'_>,
    out: &mut Outbound,
) -> Result<Reply, Error> {
    let Some(pick) = out.pick(cluster) else {
        let detail = format!(
            "cluster {:?} has no healthy endpoint",
            routed.destination.cluster
        );
        return Err(Error::new(Cause::NoHealthyUpstream, detail));
    };
    let Some(on_upgrade) = out.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        let detail = "CONNECT without a tunnel to hand over";
        return Err(Error::new(Cause::BadRequest, detail));
    };
    let upstream = crate::tunnel::connect(cluster, &pick)
        .await
        .map_err(|detail| Error::new(Cause::ConnectFailure, detail))?;
    let idle = cluster.cluster.tcp_idle_timeout();
    cx.spawn_tunnel(async move {
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
    Ok(Reply {
        resp,
        held: Held::default(),
    })
}
