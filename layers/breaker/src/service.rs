//! The breaker service.

use crate::error::Open;
use crate::future::{Guard, Local, ResponseFuture, now_ns};
use crate::handle::BreakerHandle;
use crate::machine::Core;
use crate::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_core::counter::{shard_count, shard_index};
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
    locals: std::sync::Arc<Locals<C>>,
    ready: Ready,
}

/// The breaker and classifier, with one [`Local`] per shard
/// ([`shard_index`](tollgate_core::counter::shard_index)) for the response futures: futures on
/// different cores take references on different cache lines, and a clone of the service costs
/// one reference-count increment, not an allocation.
#[derive(Debug)]
struct Locals<C> {
    core: Arc<Core>,
    list: Box<[std::sync::Arc<Local<C>>]>,
}

impl<C> Locals<C> {
    /// This thread's shard.
    #[inline]
    fn local(&self) -> &std::sync::Arc<Local<C>> {
        &self.list[shard_index() & (self.list.len() - 1)]
    }
}

impl<S, C: Clone> Breaker<S, C> {
    pub(crate) fn from_parts(inner: S, core: Arc<Core>, classify: C) -> Self {
        // A power of two, so that masking picks a shard.
        let list = (0..shard_count().next_power_of_two())
            .map(|_| {
                std::sync::Arc::new(Local {
                    core: core.clone(),
                    classify: classify.clone(),
                })
            })
            .collect();
        Self {
            inner,
            locals: std::sync::Arc::new(Locals { core, list }),
            ready: Ready::No,
        }
    }
}

impl<S, C> Breaker<S, C> {
    /// A handle on the breaker this service shares with its clones.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.locals.core.clone())
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

impl<S: Clone, C> Clone for Breaker<S, C> {
    /// A clone shares the breaker and starts unready; it allocates nothing.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            locals: self.locals.clone(),
            ready: Ready::No,
        }
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
        let core = &*self.locals.core;
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
        let core = &*self.locals.core;
        match core.acquire(|| now_ns(core)) {
            Err(open) => ResponseFuture::rejected(open),
            Ok(permit) if ready == Ready::Inner => {
                let mut guard = Guard::new(self.locals.local().clone(), permit);
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
