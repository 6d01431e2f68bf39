//! The body type of everything the proxy sends; the wrapper that observes a response body to
//! its end (bytes counted, access log written, active-request guard released); the
//! replayable request body retries need; the route timeout on response bodies.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// Upstream bodies, local replies, all boxed to one type. Not `Sync`: hyper does not need it.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// Errors while streaming a body through; logged, then the stream is reset.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a response body: counts bytes, and calls `on_end` exactly once, when the body ends,
/// fails, or is dropped early (client gone).
pub struct Observed<F: FnOnce(Ended)> {
    inner: ProxyBody,
    ended: Ended,
    on_end: Option<F>,
}

/// What a response body was, once it ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    /// Data bytes sent.
    pub bytes: u64,
    /// It ended as it should (not cut short by an error or a client gone).
    pub complete: bool,
    /// The `grpc-status` of its trailers, when it had one.
    pub grpc_status: Option<u16>,
}

impl<F: FnOnce(Ended)> Observed<F> {
    pub fn new(inner: ProxyBody, on_end: F) -> Self {
        Observed {
            inner,
            ended: Ended::default(),
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            self.ended.complete = complete;
            f(self.ended);
        }
    }
}

impl<F: FnOnce(Ended) + Unpin> Body for Observed<F> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.ended.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.ended.grpc_status = crate::reply::grpc_status(t);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Ended)> Drop for Observed<F> {
    fn drop(&mut self) {
        // hyper need not poll a body that says it has ended; that is a complete response.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

/// A request body that can be sent more than once (for retries): every attempt replays what
/// earlier attempts read from the downstream, then goes on reading it, recording as it goes.
/// Past `limit` bytes recording stops and no further attempt can be made. Only the newest
/// attempt may read: an older one (a request being abandoned) sees its body end in an error.
#[derive(Clone)]
pub struct Replayable {
    shared: Arc<Mutex<Recording>>,
}

struct Recording {
    source: ProxyBody,
    kept: Vec<Kept>,
    kept_bytes: usize,
    limit: usize,
    overflowed: bool,
    done: bool,
    generation: u64,
}

/// A copy of a body frame (data or trailers), kept to send again or elsewhere.
#[derive(Debug, Clone)]
pub enum Kept {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl Kept {
    /// A copy of `frame`; None for frame kinds other than data and trailers.
    pub fn of(frame: &Frame<Bytes>) -> Option<Kept> {
        if let Some(d) = frame.data_ref() {
            Some(Kept::Data(d.clone()))
        } else {
            frame.trailers_ref().map(|t| Kept::Trailers(t.clone()))
        }
    }

    pub fn into_frame(self) -> Frame<Bytes> {
        match self {
            Kept::Data(b) => Frame::data(b),
            Kept::Trailers(t) => Frame::trailers(t),
        }
    }

    fn len(&self) -> usize {
        match self {
            Kept::Data(b) => b.len(),
            Kept::Trailers(_) => 0,
        }
    }
}

impl Replayable {
    pub fn new(source: ProxyBody, limit: usize) -> Self {
        Replayable {
            shared: Arc::new(Mutex::new(Recording {
                source,
                kept: Vec::new(),
                kept_bytes: 0,
                limit,
                overflowed: false,
                done: false,
                generation: 0,
            })),
        }
    }

    /// The body for a new attempt, or None when the request cannot be replayed any more.
    pub fn attempt(&self) -> Option<ProxyBody> {
        let mut rec = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if rec.overflowed {
            return None;
        }
        rec.generation += 1;
        let body = AttemptBody {
            shared: self.shared.clone(),
            generation: rec.generation,
            next: 0,
        };
        Some(body.boxed_unsync())
    }

    /// False once the body outgrew the limit (an attempt that fails now is final).
    pub fn can_replay(&self) -> bool {
        !self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .overflowed
    }
}

struct AttemptBody {
    shared: Arc<Mutex<Recording>>,
    generation: u64,
    /// Index of the next recorded frame to replay.
    next: usize,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut rec = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if rec.generation != this.generation {
            return Poll::Ready(Some(Err("request body taken over by a retry".into())));
        }
        if let Some(kept) = rec.kept.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(kept.clone().into_frame())));
        }
        if rec.done {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut rec.source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                rec.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if !rec.overflowed {
            let Some(kept) = Kept::of(&frame) else {
                return Poll::Ready(Some(Ok(frame)));
            };
            rec.kept_bytes += kept.len();
            if rec.kept_bytes > rec.limit {
                rec.overflowed = true;
                rec.kept = Vec::new();
            } else {
                rec.kept.push(kept);
                this.next = rec.kept.len();
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// A response body that fails when the route's timeout passes before it ends (the stream is
/// then reset: the status line has already gone).
pub struct Deadline {
    inner: ProxyBody,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    pub fn new(inner: ProxyBody, at: tokio::time::Instant) -> Self {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err("route timeout during the response body".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
