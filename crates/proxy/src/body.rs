//! The body type of everything the proxy sends, and the wrapper that observes a response
//! body to its end (bytes counted, access log written, active-request guard released).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Upstream bodies, local replies, all boxed to one type. Not `Sync`: hyper does not need it.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// Errors while streaming a body through; logged, then the stream is reset.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a response body: counts bytes, and calls `on_end` exactly once, when the body ends,
/// fails, or is dropped early (client gone).
pub struct Observed<F: FnOnce(u64, bool)> {
    inner: ProxyBody,
    bytes: u64,
    on_end: Option<F>,
}

impl<F: FnOnce(u64, bool)> Observed<F> {
    pub fn new(inner: ProxyBody, on_end: F) -> Self {
        Observed {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes, complete);
        }
    }
}

impl<F: FnOnce(u64, bool) + Unpin> Body for Observed<F> {
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
                    this.bytes += d.len() as u64;
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

impl<F: FnOnce(u64, bool)> Drop for Observed<F> {
    fn drop(&mut self) {
        // hyper need not poll a body that says it has ended; that is a complete response.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
