//! The body of an upstream answer: it gives its HTTP/1.1 connection back to the thread's pool
//! at its end, and fails when the upstream stalls.

use super::direct::DirectBody;
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
/// that stalls halfway cuts the client's answer rather than holding it open): hyper's, or the
/// gateway's own client's ([`DirectBody`]).
#[derive(Debug)]
pub(crate) struct UpBody {
    inner: Inner,
    /// The endpoint that answered, set by the upstream service (for the access log). Carried
    /// here rather than in the response's extensions, whose first insert allocates a map.
    upstream: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
enum Inner {
    Hyper(HyperBody),
    Direct(DirectBody),
}

/// hyper's body, its connection given back at its end.
#[derive(Debug)]
struct HyperBody {
    inner: Incoming,
    back: Option<(Key, http1::SendRequest<ReqBody>, usize)>,
    stall: Stall,
}

/// The idle timeout of a body: armed the first time the body has to wait (a body that
/// arrives at once allocates no timer), reset on every frame.
#[derive(Debug)]
pub(crate) struct Stall {
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stall {
    pub(crate) fn new(idle: Duration) -> Self {
        Self { idle, sleep: None }
    }

    /// The body has to wait: ready once it has waited the idle timeout since its last frame.
    pub(crate) fn pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)))
            .as_mut()
            .poll(cx)
    }

    /// A frame came.
    pub(crate) fn progressed(&mut self) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep.as_mut().reset(Instant::now() + self.idle);
        }
    }
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
            inner: Inner::Hyper(HyperBody {
                inner,
                back,
                stall: Stall::new(idle),
            }),
            upstream: None,
        }
    }

    /// The body of an answer on the direct client.
    pub(super) fn direct(body: DirectBody) -> Self {
        Self {
            inner: Inner::Direct(body),
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
}

impl HyperBody {
    fn give_back(&mut self) {
        if let Some((key, sender, max_idle)) = self.back.take() {
            checkin_h1(key, sender, max_idle);
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                ready!(self.stall.pending(cx));
                self.back = None;
                return Poll::Ready(Some(Err(Box::new(BodyStalled))));
            }
        };
        self.stall.progressed();
        match &frame {
            Some(Err(_)) => self.back = None,
            // hyper's server stops polling once `is_end_stream` is true, so the end may come
            // with the last data frame rather than as `None`.
            Some(Ok(_)) if !self.inner.is_end_stream() => {}
            _ => self.give_back(),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }
}

impl Drop for HyperBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Hyper(b) => b.poll_frame(cx),
            Inner::Direct(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(b) => b.inner.is_end_stream(),
            Inner::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.inner.size_hint(),
            Inner::Direct(b) => b.size_hint(),
        }
    }
}
