//! [`Retry`]: the service.

use crate::future::ResponseFuture;
use crate::policy::Policy;
use crate::shared::Shared;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tollgate_core::BoxError;
use tower_service::Service;

/// Retries (and hedges) requests to `S` as its [`Policy`] and budget allow. Built by
/// [`RetryLayer`](crate::RetryLayer); clones share the budget and the latency estimate.
pub struct Retry<S, P> {
    inner: S,
    shared: Arc<Shared<P>>,
}

impl<S, P> Retry<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the layer.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The budget shared by every service of the layer (for snapshots).
    pub fn budget(&self) -> &crate::Budget {
        &self.shared.core.budget
    }
}

impl<S: Clone, P> Clone for Retry<S, P> {
    /// The clone of the inner service, which starts unready as tower requires.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("core", &self.shared.core)
            .finish_non_exhaustive()
    }
}

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, P, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.core.budget.deposit();
        // The readied instance makes the first attempt and keeps serving this request's
        // retries and hedges; this service goes on with a fresh (unready) clone.
        let fresh = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture::new(readied, req, self.shared.clone())
    }
}
