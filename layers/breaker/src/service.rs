//! The breaker service.

use crate::error::Open;
use crate::future::{Guard, Local, ResponseFuture, now_ns};
use crate::handle::BreakerHandle;
use crate::machine::Core;
use crate::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_service::Service;

/// What `poll_ready` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Not polled (or spent by `call`).
    No,
    /// The inner service is ready.
    Inner,
    /// The breaker was open: `call` answers [`Open`] without the inner service.
    FailFast,
}

/// Wraps a service in a circuit breaker. Build it with [`BreakerLayer`](crate::BreakerLayer).
///
/// While the breaker is open, `poll_ready` returns ready at once without polling the inner
/// service, and `call` answers [`Open`]. Otherwise `poll_ready` readies the inner service and
/// `call` takes the admission: servers may poll a service ready long before a request exists,
/// and a half-open probe slot held by an idle connection would wedge the breaker in half-open.
/// Holding nothing between `poll_ready` and `call` also means a clone or a dropped service
/// never carries a reservation.
#[derive(Debug)]
pub struct Breaker<S, C = ErrorsAreFailures> {
    inner: S,
    local: std::sync::Arc<Local<C>>,
    ready: Ready,
}

impl<S, C> Breaker<S, C> {
    pub(crate) fn from_parts(inner: S, core: Arc<Core>, classify: C) -> Self {
        Self {
            inner,
            local: std::sync::Arc::new(Local { core, classify }),
            ready: Ready::No,
        }
    }

    /// A handle on the breaker this service shares with its clones.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.local.core.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for Breaker<S, C> {
    /// A clone shares the breaker, starts unready, and gets its own small cache-aligned handle so
    /// that clones on different threads do not contend on one reference count.
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.local.core.clone(),
            self.local.classify.clone(),
        )
    }
}

impl<S, C, R> Service<R> for Breaker<S, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready == Ready::Inner {
            return Poll::Ready(Ok(()));
        }
        // Not polled yet, or polled while the breaker was open: look again, so that a service
        // polled again after the wait ends readies the inner service instead of failing fast.
        self.ready = Ready::No;
        let core = &*self.local.core;
        if !core.may_admit(|| now_ns(core)) {
            // Fail fast: `call` answers `Open` without waiting for the inner service.
            self.ready = Ready::FailFast;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                self.ready = Ready::Inner;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }

    #[inline]
    fn call(&mut self, req: R) -> Self::Future {
        let ready = std::mem::replace(&mut self.ready, Ready::No);
        assert!(ready != Ready::No, "poll_ready must succeed before call");
        let core = &*self.local.core;
        match core.acquire(|| now_ns(core)) {
            Err(open) => ResponseFuture::rejected(open),
            Ok(permit) if ready == Ready::Inner => {
                let mut guard = Guard::new(self.local.clone(), permit);
                guard.start();
                ResponseFuture::called(self.inner.call(req), guard)
            }
            Ok(permit) => {
                // The wait ended between `poll_ready` and `call`, but the inner service was not
                // readied: turn this one away and let the caller retry at once.
                core.release(permit);
                ResponseFuture::rejected(Open::new(Some(Duration::ZERO)))
            }
        }
    }
}
