//! [`PoolSizer`]: the limit taken in `poll_ready`.

use crate::future::ResponseFuture;
use crate::limiter::{Limiter, WaitSlot};
use crate::reserved::Reserved;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_service::Service;

/// A service whose concurrency is limited by an adaptive [`Limiter`].
///
/// `poll_ready` takes a permit (waiting or not, as the limiter's
/// [`AtLimit`](crate::AtLimit) says), then readies the inner service; `call` spends it.
/// A request refused at the limit still gets `Ready(Ok)` from `poll_ready` (an error there
/// would make servers drop the connection); its `call` answers [`Overloaded`] at once without
/// touching the inner service. `Clone` gives a service with no permit.
///
/// [`Overloaded`]: tollgate_core::error::Overloaded
#[derive(Debug)]
pub struct PoolSizer<S, C = ErrorsAreFailures> {
    inner: S,
    reserved: Reserved,
    classify: C,
    wait: Option<Pin<Box<WaitSlot>>>,
}

impl<S, C> PoolSizer<S, C> {
    /// Wraps `inner`, limited by `limiter`, classifying results with `classify`.
    pub fn new(inner: S, limiter: Limiter, classify: C) -> Self {
        Self {
            inner,
            reserved: Reserved::new(limiter),
            classify,
            wait: None,
        }
    }

    /// The limiter (for snapshots).
    pub fn limiter(&self) -> &Limiter {
        self.reserved.limiter()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service; a held permit is given back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for PoolSizer<S, C> {
    /// A clone holds no permit: it must be polled ready itself.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.reserved.limiter().clone(),
            self.classify.clone(),
        )
    }
}

impl<S, C, R> Service<R> for PoolSizer<S, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !ready!(self.reserved.poll_reserve(cx, &mut self.wait)) {
            // Refused: `call` answers `Overloaded` without the inner service.
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: R) -> Self::Future {
        match self.reserved.take() {
            None => ResponseFuture::rejected(self.classify.clone()),
            Some(mut permit) => {
                permit.start();
                ResponseFuture::new(self.inner.call(req), permit, self.classify.clone())
            }
        }
    }
}
