//! Request mirroring (Istio's `mirror`/`mirrors`): a copy of the request goes to another
//! cluster, fire-and-forget, with the authority suffixed `-shadow`. The copy's body is fed
//! from the original as it streams through a small bounded channel; a mirror that falls
//! behind is abandoned rather than allowed to slow the original request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Uri};
use http::{HeaderMap, Method, Request, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::body::{BodyError, Kept, ProxyBody};
use crate::cluster::HashInput;
use crate::route::policy::chance;
use crate::snapshot::Snapshot;

/// Frames a mirror may lag behind the original before it is abandoned.
const MIRROR_BUFFER_FRAMES: usize = 64;
/// A mirror gets the route's timeout, or this (Envoy's default route timeout), so that a
/// mirror cluster that never answers cannot pile up requests.
const MIRROR_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// What a mirrored request needs from the original.
pub struct Original<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub downstream_h2: bool,
    pub source_ip: std::net::IpAddr,
    /// The original has no body.
    pub empty: bool,
    /// The route's timeout, if it has one.
    pub timeout: Option<std::time::Duration>,
}

/// Starts the mirrors that this request's dice select; returns the body to send upstream
/// (the original body, teed to the mirrors when it has one).
pub fn start(
    snapshot: &Arc<Snapshot>,
    mirrors: &[(Arc<str>, f64)],
    original: &Original<'_>,
    body: ProxyBody,
) -> ProxyBody {
    let mut copies = Vec::new();
    for (cluster, percent) in mirrors {
        if !chance(*percent, fastrand::f64()) {
            continue;
        }
        let copy_body = if original.empty {
            crate::reply::empty()
        } else {
            let (tx, rx) = mpsc::channel(MIRROR_BUFFER_FRAMES);
            copies.push(tx);
            Copy { rx }.boxed_unsync()
        };
        send(snapshot.clone(), cluster.clone(), original, copy_body);
    }
    if copies.is_empty() {
        body
    } else {
        Tee {
            inner: body,
            copies,
        }
        .boxed_unsync()
    }
}

/// `reviews:9080` -> `reviews-shadow:9080`; `reviews` -> `reviews-shadow` (Envoy's rule).
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

/// Sends one copy on its own task; its response is read to the end and dropped.
fn send(snapshot: Arc<Snapshot>, cluster: Arc<str>, original: &Original<'_>, body: ProxyBody) {
    let mut headers = original.headers.clone();
    let authority = original
        .uri
        .authority()
        .map(|a| shadow_authority(a.as_str()))
        .unwrap_or_default();
    let uri = Authority::try_from(authority.as_str()).ok().and_then(|a| {
        let mut parts = original.uri.clone().into_parts();
        parts.authority = Some(a);
        Uri::from_parts(parts).ok()
    });
    let Some(uri) = uri else {
        tracing::debug!(%cluster, "mirror: no valid shadow authority for {authority:?}");
        return;
    };
    if let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(shadow_authority)
        .and_then(|h| HeaderValue::from_str(&h).ok())
    {
        headers.insert(header::HOST, host);
    }
    // The copy is an attempt of its own, counted as Envoy counts a shadow request's.
    headers.insert(
        http::HeaderName::from_static("x-envoy-attempt-count"),
        HeaderValue::from_static("1"),
    );
    let method = original.method.clone();
    let downstream_h2 = original.downstream_h2;
    let source_ip = original.source_ip;
    let timeout = original.timeout.unwrap_or(MIRROR_DEFAULT_TIMEOUT);
    tokio::spawn(async move {
        let Some(state) = snapshot.clusters.get(&cluster) else {
            tracing::debug!(%cluster, "mirror: cluster not defined");
            return;
        };
        let Some(pick) = state.cluster.pick(&HashInput {
            headers: &headers,
            source_ip,
            query: uri.query(),
        }) else {
            tracing::debug!(%cluster, "mirror: no endpoint");
            return;
        };
        let Some((client, h2)) = state.upstream.client(&pick.endpoint, downstream_h2) else {
            return;
        };
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if h2 {
            headers.remove(header::HOST);
        }
        *req.headers_mut() = headers;
        // The wait for the circuit breaker is inside the timeout: a saturated mirror cluster
        // must not keep copies (and their bodies) waiting for ever.
        let exchange = async {
            let Ok(_admission) = state.breaker.admit(h2).await else {
                state
                    .stats
                    .upstream_rq_pending_overflow
                    .fetch_add(1, Relaxed);
                return;
            };
            state.stats.upstream_rq_total.fetch_add(1, Relaxed);
            match client.request(req).await {
                Ok(resp) => {
                    let class = crate::stats::class_index(resp.status().as_u16());
                    state.stats.upstream_rq_xx[class].fetch_add(1, Relaxed);
                    drain(resp.into_body()).await;
                }
                Err(e) => tracing::debug!(%cluster, "mirror: {e}"),
            }
        };
        if tokio::time::timeout(timeout, exchange).await.is_err() {
            state.stats.upstream_rq_timeout.fetch_add(1, Relaxed);
        }
        drop(pick);
    });
}

/// Reads a mirror's response body to its end, dropping each frame as it comes: nobody reads
/// the answer, and a large one must not be held in memory.
async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}

/// A piece of the original body on its way to a mirror.
enum Piece {
    Frame(Kept),
    End,
}

/// The original body, copying each frame to the mirrors that keep up.
struct Tee {
    inner: ProxyBody,
    copies: Vec<mpsc::Sender<Piece>>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let piece = || Kept::of(frame).map(Piece::Frame);
                // A mirror whose buffer is full is dropped: its body then fails.
                this.copies
                    .retain(|tx| piece().is_none_or(|p| tx.try_send(p).is_ok()));
            }
            Poll::Ready(None) => {
                for tx in this.copies.drain(..) {
                    let _ = tx.try_send(Piece::End);
                }
            }
            // The original failed: the mirrors' bodies fail too (their senders drop).
            Poll::Ready(Some(Err(_))) => this.copies.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A mirror's body, fed by a [`Tee`].
struct Copy {
    rx: mpsc::Receiver<Piece>,
}

impl Body for Copy {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Frame(kept))) => Poll::Ready(Some(Ok(kept.into_frame()))),
            Poll::Ready(Some(Piece::End)) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "mirror abandoned: it fell behind the original, or the original body failed".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_authority_keeps_the_port() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("httpbin"), "httpbin-shadow");
        assert_eq!(
            shadow_authority("httpbin.default.svc.cluster.local:8000"),
            "httpbin.default.svc.cluster.local-shadow:8000"
        );
        assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");
    }

    #[tokio::test]
    async fn a_tee_copies_the_body_and_ends_the_copy() {
        let (tx, rx) = mpsc::channel(4);
        let original = http_body_util::Full::new(Bytes::from("payload"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let tee = Tee {
            inner: original,
            copies: vec![tx],
        };
        let sent = tee.collect().await.unwrap().to_bytes();
        let copied = Copy { rx }.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "payload");
        assert_eq!(copied, "payload");
    }

    #[tokio::test]
    async fn a_mirror_that_falls_behind_is_abandoned_not_waited_for() {
        let (tx, rx) = mpsc::channel(1);
        let frames = (0..10).map(|i| Bytes::from(format!("{i}"))).collect();
        let tee = Tee {
            inner: Frames(frames).boxed_unsync(),
            copies: vec![tx],
        };
        // The original streams to the end although nobody reads the copy.
        let sent = tee.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "0123456789");
        let copy = Copy { rx }.collect().await;
        assert!(
            copy.is_err(),
            "the copy fails instead of being truncated silently"
        );
    }

    #[tokio::test]
    async fn a_mirror_response_is_dropped_frame_by_frame() {
        // Frames whose bytes count themselves while alive.
        struct Tracked(Arc<std::sync::atomic::AtomicUsize>);
        impl AsRef<[u8]> for Tracked {
            fn as_ref(&self) -> &[u8] {
                b"0123456789"
            }
        }
        impl Drop for Tracked {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        struct Counted {
            left: usize,
            alive: Arc<std::sync::atomic::AtomicUsize>,
            most_alive: usize,
        }
        impl Body for Counted {
            type Data = Bytes;
            type Error = BodyError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
                let alive = self.alive.load(Relaxed);
                self.most_alive = self.most_alive.max(alive);
                if self.left == 0 {
                    return Poll::Ready(None);
                }
                self.left -= 1;
                self.alive.fetch_add(1, Relaxed);
                let bytes = Bytes::from_owner(Tracked(self.alive.clone()));
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
        }
        let mut body = Counted {
            left: 1000,
            alive: Arc::default(),
            most_alive: 0,
        };
        drain(&mut body).await;
        assert_eq!(body.left, 0, "read to the end");
        assert!(
            body.most_alive <= 1,
            "{} frames were held at once",
            body.most_alive
        );
    }

    /// A body of several data frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }
}
