//! The layers at work in the gateway: each tollgate layer is a config section, stacked on a
//! route or cluster in this order (outermost first):
//!
//! ```text
//! route kind "batch" -> batch (single JSON requests become one upstream array) -> cluster
//! route kind "proxy" ->
//!   cache (route; GET/HEAD; L1/L2, optional Redis L3, stale-if-error)
//!     -> overall timeout (route `request_timeout_ms`, else `timeouts.request_ms`)
//!       -> admission (named policy: the route's, else the listener's)
//!         -> retry (the route's `[routes.retry]`, else the cluster's; tollgate-retry: budgeted
//!            retries and hedges, replayed bodies) + per-try timeout
//!           -> cluster breaker -> pool (adaptive in-flight limit)
//!             -> balance (P2C over peak-EWMA, outlier ejection, health checks, slow start)
//!               -> endpoint breaker (an open one ejects its endpoint) -> upstream
//! ```
//!
//! Shedding happens as early as it can (a cache hit costs no admission slot; a request shed by
//! admission never reaches a breaker or the pool). The overall timeout covers the wait in
//! admission's queue too and sits inside the cache, so a timed-out fetch is a failure the cache
//! can hide with a stale answer. Retries sit inside the overall timeout and outside the breakers
//! and the pool, so every try is counted and limited like a first one.
//!
//! A route and cluster with none of these sections take the part-1 fast path: round robin and
//! no tower stack at all.

pub(crate) mod admission;
pub(crate) mod batch;
pub(crate) mod cache;
pub(crate) mod cluster;
pub(crate) mod endpoints;
pub(crate) mod health;
pub(crate) mod retry;
pub(crate) mod route;
pub(crate) mod route_retry;
pub(crate) mod srv;
pub(crate) mod upstream;

use super::pool::UpBody;
use http::Response;
use tollgate_core::BoxError;
use tower::Service;

pub(crate) use crate::body::{GwBody, UpRequest};

/// An upstream's answer, its body streamed.
pub(crate) type UpResponse = Response<UpBody>;

/// A boxed response future of the route and cluster services.
pub(crate) type BoxFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<UpResponse, BoxError>> + Send>>;

/// What a cluster's stack is: a cloneable service from [`UpRequest`] to [`UpResponse`] whose
/// errors are boxed (a tollgate rejection, a timeout, or an [`UpstreamError`](super::pool::UpstreamError)).
pub(crate) trait UpstreamService:
    Service<UpRequest, Response = UpResponse, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> UpstreamService for T where
    T: Service<UpRequest, Response = UpResponse, Error = BoxError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}
