//! The breaker service.

use crate::error::Open;
use crate::future::{Guard, Local, ResponseFuture, now_ns};
use crate::handle::BreakerHandle;
use crate::machine::Core;
use crate::sync::Arc;
use std::task::{Context, Poll};
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_service::Service;

/// Wraps a service in a circuit breaker. Build it with [`BreakerLayer`](crate::BreakerLayer).
///
/// `poll_ready` decides admission: while the breaker is open it returns ready at once without
/// polling the inner service, and `call` answers [`Open`]. A readied instance holds its
/// admission (in half-open, a probe slot) until `call` or drop.
#[derive(Debug)]
pub struct Breaker<S, C = ErrorsAreFailures> {
    inner: S,
    local: std::sync::Arc<Local<C>>,
    reserved: Option<Result<Guard<C>, Open>>,
}

impl<S, C> Breaker<S, C> {
    pub(crate) fn from_parts(inner: S, core: Arc<Core>, classify: C) -> Self {
        Self {
            inner,
            local: std::sync::Arc::new(Local { core, classify }),
            reserved: None,
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

    /// Unwraps the inner service (a reservation is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for Breaker<S, C> {
    /// A clone shares the breaker, starts with no reservation, and gets its own small handle
    /// so that clones on different threads do not contend on one reference count.
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
        if self.reserved.is_none() {
            let core = &*self.local.core;
            self.reserved = Some(
                core.acquire(|| now_ns(core))
                    .map(|permit| Guard::new(self.local.clone(), permit)),
            );
        }
        if let Some(Err(_)) = self.reserved {
            // Fail fast: `call` answers `Open` without touching the inner service.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.reserved = None;
                Poll::Ready(Err(e.into()))
            }
        }
    }

    #[inline]
    fn call(&mut self, req: R) -> Self::Future {
        match self
            .reserved
            .take()
            .expect("poll_ready must succeed before call")
        {
            Err(open) => ResponseFuture::rejected(open),
            Ok(mut guard) => {
                guard.start();
                ResponseFuture::called(self.inner.call(req), guard)
            }
        }
    }
}
