//! Tollgate rejections as gRPC statuses (feature `grpc`), for tonic servers and clients.
//!
//! tonic turns a service error it does not recognise into `UNKNOWN`, or, under a server-wide
//! layer, into a reset stream. [`RejectionLayer::grpc`] answers each known
//! [`Rejection`] with a trailers-only gRPC response instead:
//!
//! | rejection | status | `grpc-retry-pushback-ms` |
//! |---|---|---|
//! | overloaded / shed, circuit open, no endpoints, closed | `UNAVAILABLE` | the hint, rounded up to whole ms (at least 1); 1000 without a hint |
//! | rate limited | `RESOURCE_EXHAUSTED` | the same |
//! | deadline | `DEADLINE_EXCEEDED` | none |
//!
//! Other errors are answered by [`StatusFromError`] (tonic's own `Status::from_error`, which
//! keeps a `Status` found in the chain and otherwise answers `UNKNOWN`), so the error type is
//! `Infallible`, as `tonic::transport::Server::add_service` requires. The wrapper keeps tonic's
//! `NamedService` when the service it wraps has one; for a stack of several layers over a
//! generated server, [`named`] gives the whole stack the server's name.
//!
//! On the client side the same layer, outermost over a stack of channels, makes a local
//! rejection (breaker open, no endpoints, pool full) reach the generated client as that status
//! rather than as `UNKNOWN`; [`GrpcFailures`] lets breakers and balancers count failed calls,
//! which tonic answers with HTTP 200.
//!
//! ```
//! # #[cfg(feature = "breaker")] {
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
//!     .layer(RejectionLayer::grpc()) // outermost: rejections become statuses
//!     .breaker(breaker)
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, tollgate::core::BoxError>(http::Response::new(tonic::body::Body::empty()))
//!     });
//! let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(res.headers()["grpc-status"], "14"); // UNAVAILABLE
//! assert_eq!(res.headers()["grpc-retry-pushback-ms"], "1000");
//! # }
//! # }
//! ```

use crate::http::{Fallback, Mapping, Rejection, RejectionLayer, Rejections};
use http::Response;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use tollgate_core::{BoxError, Classify, Outcome};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower::{Layer, Service};

/// The metadata key of the server's retry hint, in milliseconds (gRFC A6).
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The gRPC status for a rejection, with `grpc-retry-pushback-ms` (see the
/// [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use tollgate::grpc::status;
/// use tollgate::http::Rejection;
///
/// let s = status(&Rejection::RateLimited { retry_after: Duration::from_micros(1500) });
/// assert_eq!(s.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "2");
/// ```
pub fn status(rejection: &Rejection) -> Status {
    status_with_message(rejection, rejection.message())
}

/// [`status`] with `message` as the status message.
pub fn status_with_message(rejection: &Rejection, message: impl Into<String>) -> Status {
    let mut status = Status::new(Code::from_i32(rejection.grpc_code()), message);
    if let Some(ms) = rejection.pushback_ms() {
        status
            .metadata_mut()
            .insert(PUSHBACK_HEADER, MetadataValue::from(ms));
    }
    status
}

/// The gRPC status for a known rejection in `err`'s chain (its message the text of the error
/// that decided it, such as "circuit breaker is open"), `None` for any other error.
pub fn status_of(err: &(dyn std::error::Error + 'static)) -> Option<Status> {
    Rejection::find(err).map(|(r, cause)| status_with_message(&r, cause.to_string()))
}

/// The gRPC mapping: a trailers-only response carrying [`status_with_message`], the message
/// being the cause's text.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatus;

impl<B: Default> Mapping<B> for GrpcStatus {
    fn respond(
        &self,
        rejection: &Rejection,
        cause: &(dyn std::error::Error + 'static),
    ) -> Response<B> {
        status_with_message(rejection, cause.to_string()).into_http()
    }
}

/// The default gRPC fallback: tonic's `Status::from_error` (a `Status` in the chain is kept,
/// anything else is `UNKNOWN`), as a trailers-only response.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusFromError;

impl<B: Default> Fallback<B> for StatusFromError {
    type Error = Infallible;

    fn fallback(&self, err: BoxError) -> Result<Response<B>, Infallible> {
        Ok(Status::from_error(err).into_http())
    }
}

impl RejectionLayer<GrpcStatus, StatusFromError> {
    /// gRPC answers (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED` with
    /// `grpc-retry-pushback-ms`); other errors through tonic's `Status::from_error`. The error
    /// type is `Infallible`.
    pub fn grpc() -> Self {
        RejectionLayer::new(GrpcStatus, StatusFromError)
    }
}

impl<S: NamedService, M, F> NamedService for Rejections<S, M, F> {
    const NAME: &'static str = S::NAME;
}

/// A service carrying the gRPC service name of `N` (a generated server), so a stack of layers
/// over that server can be given to `Server::add_service`. From [`named`].
pub struct Named<S, N> {
    inner: S,
    name: PhantomData<fn() -> N>,
}

/// Applies `layer` (a `ServiceBuilder` or any layer) to the generated server `svc`, keeping
/// its `NamedService` name.
///
/// ```
/// # #[cfg(feature = "admission")] {
/// use tollgate::ServiceBuilderExt;
/// use tollgate::admission::{AdmissionConfig, AdmissionLayer, ReadyMode};
/// use tollgate::http::RejectionLayer;
/// use tonic::server::NamedService;
/// use tower::ServiceBuilder;
/// # #[derive(Clone)]
/// # struct GreeterServer;
/// # impl NamedService for GreeterServer { const NAME: &'static str = "helloworld.Greeter"; }
///
/// let config = AdmissionConfig { ready_mode: ReadyMode::Always, ..AdmissionConfig::default() };
/// let admission = AdmissionLayer::new(config).unwrap();
/// let greeter = tollgate::grpc::named(
///     ServiceBuilder::new()
///         .layer(RejectionLayer::grpc()) // statuses, and `Infallible` for tonic
///         .admission(admission),
///     GreeterServer, // a generated server
/// );
/// // `Server::builder().add_service(greeter)` routes it by the generated server's name.
/// fn name_of<T: NamedService>(_: &T) -> &'static str { T::NAME }
/// assert_eq!(name_of(&greeter), "helloworld.Greeter");
/// # }
/// ```
pub fn named<L: Layer<N>, N: NamedService>(layer: L, svc: N) -> Named<L::Service, N> {
    Named {
        inner: layer.layer(svc),
        name: PhantomData,
    }
}

impl<S, N> Named<S, N> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, giving up the name.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, N> Clone for Named<S, N> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            name: PhantomData,
        }
    }
}

impl<S: fmt::Debug, N: NamedService> fmt::Debug for Named<S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named")
            .field("name", &N::NAME)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, N: NamedService> NamedService for Named<S, N> {
    const NAME: &'static str = N::NAME;
}

impl<S: Service<R>, N, R> Service<R> for Named<S, N> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

/// Classifies gRPC calls for breakers, pools and balancers: an error, a non-200 HTTP status, or
/// a `grpc-status` header (a trailers-only answer, which is how tonic answers a failed unary
/// call) of `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE` or `DATA_LOSS` is a
/// failure; anything else is a success.
///
/// A status sent in trailers after a body (streaming calls) is not seen: the classifier runs
/// when the response head arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcFailures;

impl<B, E> Classify<Response<B>, E> for GrpcFailures {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        let Ok(res) = result else {
            return Outcome::Failure;
        };
        if res.status() != http::StatusCode::OK {
            return Outcome::Failure;
        }
        let code = res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32);
        match code {
            Some(
                Code::Unknown
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss,
            ) => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn codes_and_pushback() {
        let s = status(&Rejection::Overloaded { retry_after: None });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(PUSHBACK_HEADER).unwrap(), "1000");
        let s = status(&Rejection::Unavailable {
            retry_after: Some(Duration::from_nanos(1)),
        });
        assert_eq!(s.metadata().get(PUSHBACK_HEADER).unwrap(), "1");
        let s = status(&Rejection::DeadlineExceeded);
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(s.metadata().get(PUSHBACK_HEADER).is_none());
    }

    #[test]
    fn failures_are_classified_from_the_head() {
        let with = |code: Code| Status::new(code, "x").into_http::<()>();
        let c = |r: &Response<()>| GrpcFailures.classify(Ok::<_, &()>(r));
        assert_eq!(c(&with(Code::Unavailable)), Outcome::Failure);
        assert_eq!(c(&with(Code::Internal)), Outcome::Failure);
        assert_eq!(c(&with(Code::NotFound)), Outcome::Success);
        assert_eq!(c(&Response::new(())), Outcome::Success);
        assert_eq!(
            GrpcFailures.classify(Err::<&Response<()>, _>(&())),
            Outcome::Failure
        );
    }
}
