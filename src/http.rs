//! Tollgate rejections as HTTP responses (feature `http`), so a stack can serve axum or hyper.
//!
//! A rejecting layer fails a request with a small error (`Open`, `Overloaded`, `Rejected`...)
//! inside a `BoxError`. axum needs services whose error is [`Infallible`], and a client deserves a
//! status code and a `Retry-After` rather than a reset connection. [`RejectionLayer`] sits
//! outermost and turns each known rejection into a response:
//!
//! | rejection (found anywhere in the error's `source()` chain) | answer |
//! |---|---|
//! | overloaded or shed: core `Overloaded` (pool, admission's queue full / shed / queue timeout / throttled), batch's `QueueFull`, tower's `load_shed` `Overloaded` | `503` + `Retry-After` |
//! | unavailable: breaker's `Open`, balance's `NoEndpoints`, core `Closed` | `503` + `Retry-After` |
//! | core `RateLimited` (admission's rate limit) | `429` + `Retry-After` |
//! | core `DeadlineExceeded` (admission's deadline), tower's `timeout` `Elapsed` | `504` |
//!
//! `Retry-After` is in whole seconds, rounded **up** and never `0` (a `0` tells clients to retry
//! at once, which is what an overloaded server wants least); when the layer gave no hint it is
//! `1`. Admission's `Rejected` is mapped through its `source()`, the matching core error. The
//! chain is walked from the outside in and the first known error decides, so a rejection wrapped
//! by an outer layer (a batch failure caused by an inner `Overloaded`) is still found.
//!
//! Every **other** error cannot pass through unchanged when the error type must be
//! `Infallible`, so a [`Fallback`] decides:
//!
//! - [`InternalServerError`] (the default): `500` with a short fixed body; the error is logged
//!   with `tracing` at `debug` level (its text may hold details a client should not see).
//! - [`fallback`](RejectionLayer::fallback): your function from the error to a response.
//! - [`pass_through`](RejectionLayer::pass_through): the error is returned unchanged as a
//!   `BoxError` (for hyper or tower users who handle errors themselves; not usable by axum).
//!
//! A rejection coming out of `poll_ready` (a pool waiting at its limit, tower's load shedder) is
//! kept and answered by the next `call`, without calling the inner service.
//!
//! ```
//! # #[cfg(feature = "breaker")] {
//! use std::convert::Infallible;
//! use tollgate::ServiceBuilderExt;
//! use tollgate::breaker::{BreakerConfig, BreakerLayer};
//! use tollgate::http::RejectionLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = BreakerLayer::new(BreakerConfig::default()).unwrap();
//! breaker.handle().force_open();
//! let mut svc = ServiceBuilder::new()
//!     .layer(RejectionLayer::http()) // outermost: rejections become responses
//!     .breaker(breaker)
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, Infallible>(http::Response::new(String::from("hello")))
//!     });
//! let res = svc.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.headers()["retry-after"], "1");
//! # }
//! # }
//! ```

mod grpc_answer;

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use pin_project::pin_project;
use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tollgate_core::BoxError;
use tower::{Layer, Service};

/// What a known rejection means for the caller, found by [`Rejection::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No capacity for the request right now (overloaded, shed, queue full): HTTP 503, gRPC
    /// `UNAVAILABLE`.
    Overloaded {
        /// The layer's hint for when to retry, if it gave one.
        retry_after: Option<Duration>,
    },
    /// The service behind is unavailable (circuit open, no endpoints, closed): HTTP 503, gRPC
    /// `UNAVAILABLE`.
    Unavailable {
        /// The layer's hint for when to retry, if it gave one (the breaker's next probe).
        retry_after: Option<Duration>,
    },
    /// The caller spent its rate limit: HTTP 429, gRPC `RESOURCE_EXHAUSTED`.
    RateLimited {
        /// How long until a request would be allowed.
        retry_after: Duration,
    },
    /// The request's deadline passed or could not be met: HTTP 504, gRPC `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
}

/// Checks one link of an error chain against every known rejection.
fn classify_one(e: &(dyn Error + 'static)) -> Option<Rejection> {
    use tollgate_core::error::{Closed, DeadlineExceeded, Overloaded, RateLimited};
    if let Some(o) = e.downcast_ref::<Overloaded>() {
        return Some(Rejection::Overloaded {
            retry_after: o.retry_after(),
        });
    }
    if let Some(r) = e.downcast_ref::<RateLimited>() {
        return Some(Rejection::RateLimited {
            retry_after: r.retry_after(),
        });
    }
    if e.is::<DeadlineExceeded>() || e.is::<tower::timeout::error::Elapsed>() {
        return Some(Rejection::DeadlineExceeded);
    }
    if e.is::<Closed>() {
        return Some(Rejection::Unavailable { retry_after: None });
    }
    if e.is::<tower::load_shed::error::Overloaded>() {
        return Some(Rejection::Overloaded { retry_after: None });
    }
    #[cfg(feature = "breaker")]
    if let Some(open) = e.downcast_ref::<tollgate_breaker::Open>() {
        return Some(Rejection::Unavailable {
            retry_after: open.retry_after(),
        });
    }
    #[cfg(feature = "batch")]
    if e.is::<tollgate_batch::QueueFull>() {
        return Some(Rejection::Overloaded { retry_after: None });
    }
    #[cfg(feature = "balance")]
    if e.is::<tollgate_balance::NoEndpoints>() {
        return Some(Rejection::Unavailable { retry_after: None });
    }
    // Admission's `Rejected` is found through its `source()`, the matching core error.
    None
}

impl Rejection {
    /// The first known rejection in `err`'s `source()` chain, starting with `err` itself;
    /// `None` when the error is something else.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::core::error::RateLimited;
    /// use tollgate::http::Rejection;
    ///
    /// let err: tollgate::core::BoxError = Box::new(RateLimited::new(Duration::from_millis(1500)));
    /// let r = Rejection::of(&*err).unwrap();
    /// assert_eq!(r.status(), 429);
    /// assert_eq!(r.retry_after_secs(), Some(2));
    /// ```
    pub fn of(err: &(dyn Error + 'static)) -> Option<Rejection> {
        Self::find(err).map(|(rejection, _)| rejection)
    }

    /// Like [`of`](Self::of), also giving the error in the chain that decided it (the
    /// breaker's `Open`, a core `Overloaded`...), whose text the responses carry.
    pub fn find<'a>(
        err: &'a (dyn Error + 'static),
    ) -> Option<(Rejection, &'a (dyn Error + 'static))> {
        let mut link = Some(err);
        while let Some(e) = link {
            if let Some(found) = classify_one(e) {
                return Some((found, e));
            }
            link = e.source();
        }
        None
    }

    /// The HTTP status: 503, 429 or 504.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Overloaded { .. } | Rejection::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The retry hint the layer gave, if any (never for a deadline).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::Overloaded { retry_after } | Rejection::Unavailable { retry_after } => {
                *retry_after
            }
            Rejection::RateLimited { retry_after } => Some(*retry_after),
            Rejection::DeadlineExceeded => None,
        }
    }

    /// The `Retry-After` value in whole seconds: the hint rounded up, at least 1, and 1 when
    /// there is no hint. `None` for a deadline (retrying the same request will not help it).
    pub fn retry_after_secs(&self) -> Option<u64> {
        if matches!(self, Rejection::DeadlineExceeded) {
            return None;
        }
        let d = self.retry_after().unwrap_or(Duration::ZERO);
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        Some(secs.max(1))
    }

    /// A short lower-case description of the kind of rejection (the responses built from an
    /// error carry that error's own text instead, such as "circuit breaker is open").
    pub fn message(&self) -> &'static str {
        match self {
            Rejection::Overloaded { .. } => "service overloaded",
            Rejection::Unavailable { .. } => "service unavailable",
            Rejection::RateLimited { .. } => "rate limit exceeded",
            Rejection::DeadlineExceeded => "deadline exceeded",
        }
    }

    /// The HTTP response: [`status`](Self::status), `Retry-After` when
    /// [`retry_after_secs`](Self::retry_after_secs) is `Some`, and the
    /// [`message`](Self::message) as a `text/plain` body.
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        self.to_response_with(self.message())
    }

    /// [`to_response`](Self::to_response) with `message` as the body.
    pub fn to_response_with<B: From<String>>(&self, message: &str) -> Response<B> {
        let mut res = Response::new(B::from(format!("{message}\n")));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// The HTTP response for a known rejection in `err`'s chain (its body the text of the error
/// that decided it), `None` for any other error.
///
/// For code that handles errors itself, such as axum's `HandleErrorLayer`.
pub fn response<B: From<String>>(err: &(dyn Error + 'static)) -> Option<Response<B>> {
    Rejection::find(err).map(|(r, cause)| r.to_response_with(&cause.to_string()))
}

/// How a [`Rejections`] service answers a known rejection.
pub trait Mapping<B> {
    /// The response for `rejection`, decided by `cause` (an error of the chain).
    fn respond(&self, rejection: &Rejection, cause: &(dyn Error + 'static)) -> Response<B>;
}

/// The HTTP mapping: 503, 429 and 504 with `Retry-After`, the cause's text as the body
/// ([`Rejection::to_response_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatus;

impl<B: From<String>> Mapping<B> for HttpStatus {
    fn respond(&self, rejection: &Rejection, cause: &(dyn Error + 'static)) -> Response<B> {
        rejection.to_response_with(&cause.to_string())
    }
}

/// What a [`Rejections`] service does with an error that is not a known rejection.
pub trait Fallback<B> {
    /// The service's error type: [`Infallible`] when every error becomes a response.
    type Error;

    /// Answers `err`, or passes it on.
    ///
    /// # Errors
    ///
    /// Whatever the fallback passes on ([`PassThrough`] returns `err` itself).
    fn fallback(&self, err: BoxError) -> Result<Response<B>, Self::Error>;
}

/// The default fallback: `500 Internal Server Error` with a fixed body, the error logged with
/// `tracing::debug!`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InternalServerError;

impl<B: From<String>> Fallback<B> for InternalServerError {
    type Error = Infallible;

    fn fallback(&self, err: BoxError) -> Result<Response<B>, Infallible> {
        tracing::debug!(error = %err, "inner service failed; answering 500");
        let mut res = Response::new(B::from(String::from("internal server error\n")));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(res)
    }
}

/// A fallback that returns other errors unchanged (as `BoxError`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl<B> Fallback<B> for PassThrough {
    type Error = BoxError;

    fn fallback(&self, err: BoxError) -> Result<Response<B>, BoxError> {
        Err(err)
    }
}

/// A fallback from a function `Fn(BoxError) -> Response<B>`; from
/// [`RejectionLayer::fallback`].
pub struct FallbackFn<F>(Arc<F>);

impl<F> Clone for FallbackFn<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for FallbackFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FallbackFn")
    }
}

impl<B, F: Fn(BoxError) -> Response<B>> Fallback<B> for FallbackFn<F> {
    type Error = Infallible;

    fn fallback(&self, err: BoxError) -> Result<Response<B>, Infallible> {
        Ok((self.0)(err))
    }
}

/// Wraps services in [`Rejections`]: known rejections become responses (see the
/// [module docs](self)), other errors go to the fallback.
///
/// Put it **outermost**, so it sees the rejections of every layer below it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectionLayer<M = HttpStatus, F = InternalServerError> {
    mapping: M,
    fallback: F,
}

impl RejectionLayer {
    /// HTTP answers (503/429/504 with `Retry-After`); other errors become `500`. The
    /// service's error is `Infallible`, as axum requires.
    pub fn http() -> Self {
        Self {
            mapping: HttpStatus,
            fallback: InternalServerError,
        }
    }
}

impl<M, F> RejectionLayer<M, F> {
    /// A layer answering rejections with `mapping` and other errors with `fallback`.
    pub fn new(mapping: M, fallback: F) -> Self {
        Self { mapping, fallback }
    }

    /// Answers other errors with `f` (the error type stays `Infallible`).
    pub fn fallback<B, G>(self, f: G) -> RejectionLayer<M, FallbackFn<G>>
    where
        G: Fn(BoxError) -> Response<B>,
    {
        RejectionLayer {
            mapping: self.mapping,
            fallback: FallbackFn(Arc::new(f)),
        }
    }

    /// Returns other errors unchanged, as `BoxError`.
    pub fn pass_through(self) -> RejectionLayer<M, PassThrough> {
        RejectionLayer {
            mapping: self.mapping,
            fallback: PassThrough,
        }
    }
}

impl<S, M: Clone, F: Clone> Layer<S> for RejectionLayer<M, F> {
    type Service = Rejections<S, M, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Rejections {
            inner,
            mapping: self.mapping.clone(),
            fallback: self.fallback.clone(),
            ready_error: None,
        }
    }
}

/// Answers known rejections with responses and other errors with a [`Fallback`]; from
/// [`RejectionLayer`].
#[derive(Debug)]
pub struct Rejections<S, M = HttpStatus, F = InternalServerError> {
    inner: S,
    mapping: M,
    fallback: F,
    /// An error from the inner `poll_ready`, answered by the next `call`.
    ready_error: Option<BoxError>,
}

impl<S: Clone, M: Clone, F: Clone> Clone for Rejections<S, M, F> {
    /// A clone starts without the pending `poll_ready` error.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            mapping: self.mapping.clone(),
            fallback: self.fallback.clone(),
            ready_error: None,
        }
    }
}

impl<S, M, F> Rejections<S, M, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, giving up the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn answer<B, M, F>(mapping: &M, fallback: &F, err: BoxError) -> Result<Response<B>, F::Error>
where
    M: Mapping<B>,
    F: Fallback<B>,
{
    match Rejection::find(&*err) {
        Some((rejection, cause)) => {
            tracing::trace!(%rejection, %cause, "answering a tollgate rejection");
            Ok(mapping.respond(&rejection, cause))
        }
        None => fallback.fallback(err),
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl<S, R, B, M, F> Service<R> for Rejections<S, M, F>
where
    S: Service<R, Response = Response<B>>,
    S::Error: Into<BoxError>,
    M: Mapping<B> + Clone,
    F: Fallback<B> + Clone,
{
    type Response = Response<B>;
    type Error = F::Error;
    type Future = ResponseFuture<S::Future, M, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(err) => {
                // Answered by `call`, which must follow a successful `poll_ready`.
                self.ready_error = Some(err.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        let state = match self.ready_error.take() {
            Some(err) => State::Failed { err: Some(err) },
            None => State::Called {
                fut: self.inner.call(req),
            },
        };
        ResponseFuture {
            state,
            mapping: self.mapping.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

#[pin_project(project = StateProj)]
#[derive(Debug)]
enum State<Fut> {
    Called {
        #[pin]
        fut: Fut,
    },
    Failed {
        err: Option<BoxError>,
    },
}

/// The future of [`Rejections`]: the inner response, or the answer to its error.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<Fut, M, F> {
    #[pin]
    state: State<Fut>,
    mapping: M,
    fallback: F,
}

impl<Fut, B, E, M, F> Future for ResponseFuture<Fut, M, F>
where
    Fut: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    M: Mapping<B>,
    F: Fallback<B>,
{
    type Output = Result<Response<B>, F::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match this.state.project() {
            StateProj::Called { fut } => match ready!(fut.poll(cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(err) => err.into(),
            },
            StateProj::Failed { err } => err.take().expect("polled after completion"),
        };
        Poll::Ready(answer(this.mapping, this.fallback, err))
    }
}

#[cfg(test)]
mod tests;
