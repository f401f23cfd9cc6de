//! The body of an upstream answer: it gives its HTTP/1.1 connection back to the thread's pool
//! at its end, and fails when the upstream stalls.

use super::{Key, ReqBody, checkin_h1};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;

/// An upstream response body that returns its HTTP/1.1 connection to the thread's pool once
/// read to the end, and fails when the upstream sends nothing for the idle timeout (so a body
/// that stalls halfway cuts the client's answer rather than holding it open).
#[derive(Debug)]
pub(crate) struct UpBody {
    inner: Incoming,
    back: Option<(Key, http1::SendRequest<ReqBody>, usize)>,
    idle: Duration,
    /// Armed the first time the body has to wait (a body that arrives at once allocates no
    /// timer), reset on every frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The endpoint that answered, set by the upstream service (for the access log). Carried
    /// here rather than in the response's extensions, whose first insert allocates a map.
    upstream: Option<std::net::SocketAddr>,
}

/// An upstream that stopped sending its response body for the idle timeout.
#[derive(Debug)]
pub(crate) struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream response body stalled")
    }
}

impl std::error::Error for BodyStalled {}

impl UpBody {
    /// `inner`, given `back` to the pool at its end when pooled; it fails after `idle`
    /// without a frame.
    pub(super) fn new(
        inner: Incoming,
        back: Option<(Key, http1::SendRequest<ReqBody>, usize)>,
        idle: Duration,
    ) -> Self {
        Self {
            inner,
            back,
            idle,
            stall: None,
            upstream: None,
        }
    }

    /// Marks the answer as coming from `addr`.
    pub(crate) fn set_upstream(&mut self, addr: std::net::SocketAddr) {
        self.upstream = Some(addr);
    }

    /// The endpoint that answered, if the upstream service said.
    pub(crate) fn upstream(&self) -> Option<std::net::SocketAddr> {
        self.upstream
    }

    fn give_back(&mut self) {
        if let Some((key, sender, max_idle)) = self.back.take() {
            checkin_h1(key, sender, max_idle);
        }
    }
}

impl Drop for UpBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let idle = this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(stall.as_mut().poll(cx));
                this.back = None;
                return Poll::Ready(Some(Err(Box::new(BodyStalled))));
            }
        };
        if let Some(stall) = this.stall.as_mut() {
            stall.as_mut().reset(Instant::now() + this.idle);
        }
        match &frame {
            Some(Err(_)) => this.back = None,
            // hyper's server stops polling once `is_end_stream` is true, so the end may come
            // with the last data frame rather than as `None`.
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            _ => this.give_back(),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
