//! Holding the permit until an HTTP response body ends (feature `http-body`).
//!
//! Tower's and tower-resilience's limits release at the response headers, so a streaming
//! body escapes the limit: a thousand slow downloads hold a thousand backend streams while the
//! limit believes nothing is in flight. [`BodyPoolSizer`] records the outcome and RTT at the
//! headers (the backend's latency signal) but keeps the permit inside a [`PermitBody`] until
//! the body ends, fails or is dropped.

use crate::limiter::{Limiter, WaitSlot};
use crate::permit::Permit;
use crate::reserved::Reserved;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_core::error::Overloaded;
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_layer::Layer;
use tower_service::Service;

/// A response body holding a pool permit until it ends. From [`BodyPoolSizer`].
#[pin_project::pin_project]
#[derive(Debug)]
pub struct PermitBody<B> {
    #[pin]
    inner: B,
    permit: Option<Permit>,
}

impl<B> PermitBody<B> {
    /// Wraps `inner`; the permit is given back when the body ends or is dropped.
    pub fn new(inner: B, permit: Permit) -> Self {
        Self {
            inner,
            permit: Some(permit),
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for PermitBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            // The body ended (or failed): the request no longer occupies the backend.
            None | Some(Err(_)) => drop(this.permit.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Like [`PoolSizer`](crate::PoolSizer) for `http::Response`s, but the permit stays with the
/// response body ([`PermitBody`]) until the body ends.
#[derive(Debug)]
pub struct BodyPoolSizer<S, C = ErrorsAreFailures> {
    inner: S,
    reserved: Reserved,
    classify: C,
    wait: Option<Pin<Box<WaitSlot>>>,
}

impl<S, C> BodyPoolSizer<S, C> {
    /// Wraps `inner`, limited by `limiter`, classifying results with `classify`.
    pub fn new(inner: S, limiter: Limiter, classify: C) -> Self {
        Self {
            inner,
            reserved: Reserved::new(limiter),
            classify,
            wait: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for BodyPoolSizer<S, C> {
    /// A clone holds no permit.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.reserved.limiter().clone(),
            self.classify.clone(),
        )
    }
}

impl<S, C, R, B> Service<R> for BodyPoolSizer<S, C>
where
    S: Service<R, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    C: Classify<http::Response<B>, S::Error> + Clone,
{
    type Response = http::Response<PermitBody<B>>;
    type Error = BoxError;
    type Future = BodyFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !ready!(self.reserved.poll_reserve(cx, &mut self.wait)) {
            // Refused: `call` answers `Overloaded` without the inner service.
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let Some(mut permit) = self.reserved.take() else {
            return BodyFuture {
                inner: None,
                permit: None,
                classify: self.classify.clone(),
            };
        };
        permit.start();
        BodyFuture {
            inner: Some(self.inner.call(req)),
            permit: Some(permit),
            classify: self.classify.clone(),
        }
    }
}

/// The response future of a [`BodyPoolSizer`].
#[pin_project::pin_project]
#[derive(Debug)]
pub struct BodyFuture<F, C> {
    #[pin]
    inner: Option<F>,
    permit: Option<Permit>,
    classify: C,
}

impl<F, C, B, E> Future for BodyFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify<http::Response<B>, E>,
{
    type Output = Result<http::Response<PermitBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Box::new(Overloaded::new(None))));
        };
        let res = ready!(inner.poll(cx));
        this.inner.set(None);
        let mut permit = this.permit.take().expect("polled after completion");
        let outcome = this.classify.classify(res.as_ref());
        match res {
            Ok(response) => {
                // Learn from the headers now; hold the permit until the body ends.
                permit.record_and_hold(outcome);
                Poll::Ready(Ok(response.map(|b| PermitBody::new(b, permit))))
            }
            Err(e) => {
                let e: BoxError = e.into();
                // A tollgate rejection below is not the backend failing (see `PoolSizer`).
                let outcome = if tollgate_core::error::is_rejection(&*e) {
                    tollgate_core::Outcome::Ignored
                } else {
                    outcome
                };
                permit.finish(outcome);
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Wraps services in a [`BodyPoolSizer`]; from
/// [`PoolSizerLayer::hold_until_body_ends`](crate::PoolSizerLayer::hold_until_body_ends).
#[derive(Debug, Clone)]
pub struct BodyPoolSizerLayer<C = ErrorsAreFailures> {
    pub(crate) limiter: Limiter,
    pub(crate) classify: C,
}

impl<S, C: Clone> Layer<S> for BodyPoolSizerLayer<C> {
    type Service = BodyPoolSizer<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyPoolSizer::new(inner, self.limiter.clone(), self.classify.clone())
    }
}
