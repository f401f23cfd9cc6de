//! `[clusters.retry]`: tollgate-retry's `Retry` layer over the cluster's stack, with the
//! gateway's policy ([`GwPolicy`]), each try under its own timeout and traced as its own span.
//!
//! - **Budget**: every request deposits, every retry and hedge withdraws; over ten seconds
//!   the extra tries stay under the larger of `budget_percent` of the requests and
//!   `budget_min_per_s` per second (the floor is for quiet clusters, not added on top), so a
//!   failing cluster gets at most that much extra load.
//! - **What is retried** ([`GwPolicy`]): the `retry_on` failures of idempotent requests
//!   (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`, or any with an `Idempotency-Key`);
//!   a request that is not idempotent only when its connection could not be made (nothing was
//!   sent), unless `non_idempotent` says otherwise; a gRPC answer whose `grpc-status` header
//!   is in `grpc_codes` whatever the method. `Retry-After` and `grpc-retry-pushback-ms`
//!   replace the backoff (a negative pushback ends the retries, and so does one that would end
//!   after the route's deadline: the client gets the upstream's answer and its `Retry-After`
//!   rather than the gateway's 504). A tollgate rejection further in (breaker open, pool full)
//!   is not retried.
//! - **Bodies**: a body of known length up to `replay_limit_bytes` is read whole first
//!   ([`RetryPolicy::replayable`]) and every try replays it; a larger body, or one of unknown
//!   length (chunked), is streamed to the first try and never retried.
//! - **Endpoints**: every try carries tollgate-core's `Attempt` in its extensions, and the
//!   cluster's balancer (`Balance::avoid_tried`) sends a retry or hedge to an endpoint the
//!   request has not tried while an admitted one is ready: a retry does not go back to the
//!   endpoint that just refused the connection.
//! - **Hedging** (`hedge`): a second try when the first is slower than the learned
//!   percentile, from the same budget; the first answer wins and the other try is dropped,
//!   which closes its upstream connection. Only requests that may run twice are hedged (the
//!   idempotent ones above, any with `non_idempotent`, and gRPC calls, for which the route's
//!   `hedge` is the opt-in): a `POST` may already be at work upstream when the hedge would go.

use super::{GwBody, UpRequest, UpResponse, UpstreamService};
use crate::config::retry::{RetryOn, RetrySection};
use crate::error::{ClientBodyFailed, TryTimedOut};
use crate::pool::UpstreamError;
use crate::trace::{self, Traced};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::attempt::{Attempt, Attempts};
use tollgate_core::counter::ShardedCounter;
use tollgate_core::error::find_cause;
use tollgate_retry::http::{Exhausted, idempotent, pushback_action};
use tollgate_retry::{Action, Policy, RetriesExhausted, Retry, RetryLayer};
use tower::{Layer, Service, ServiceExt};

/// One try's future (a boxed one: the route's path boxes its futures already).
type TryFuture = Pin<Box<dyn Future<Output = Result<UpResponse, BoxError>> + Send>>;

/// A cluster's retry layer and counters, shared by every request to it.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layer: RetryLayer<GwPolicy>,
    /// Draws on another policy's budget (see [`RetryPolicy::sharing_budget`]).
    shared_budget: bool,
    per_try: Option<Duration>,
    replay_limit: usize,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    retries: ShardedCounter,
    hedges: ShardedCounter,
    exhausted: ShardedCounter,
}

/// What the gateway retries; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct GwPolicy {
    on: Arc<[RetryOn]>,
    grpc_codes: Arc<[u32]>,
    non_idempotent: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl GwPolicy {
    fn new(section: &RetrySection) -> Self {
        Self {
            on: section.retry_on.iter().copied().collect(),
            grpc_codes: section.grpc_codes.iter().copied().collect(),
            non_idempotent: section.non_idempotent,
        }
    }

    fn on(&self, what: RetryOn) -> bool {
        self.on.contains(&what)
    }

    /// What to do with an answer to a request that is (or is not) `idempotent`.
    pub(crate) fn classify_response<R>(&self, idempotent: bool, res: &http::Response<R>) -> Action {
        if res.extensions().get::<Exhausted>().is_some() {
            return Action::Return;
        }
        let headers = res.headers();
        let retry = match header(headers, "grpc-status") {
            // A Trailers-Only answer: nothing was processed, gRPC calls it safe to retry.
            Some(code) => code
                .parse::<u32>()
                .is_ok_and(|c| self.grpc_codes.contains(&c)),
            None => {
                let status = res.status();
                let wanted = (status.is_server_error() && self.on(RetryOn::ServerError))
                    || (status == http::StatusCode::SERVICE_UNAVAILABLE
                        && self.on(RetryOn::Unavailable));
                wanted && (self.non_idempotent || idempotent)
            }
        };
        pushback_action(headers, retry)
    }

    /// What to do with a failed try of a request that is (or is not) `idempotent`.
    pub(crate) fn classify_error(&self, idempotent: bool, err: &BoxError) -> Action {
        let err: &(dyn std::error::Error + 'static) = &**err;
        let (what, sent) = if find_cause::<TryTimedOut>(err).is_some() {
            (RetryOn::Timeout, true)
        } else {
            match find_cause::<UpstreamError>(err) {
                Some(
                    UpstreamError::Connect(_)
                    | UpstreamError::ConnectTimeout
                    | UpstreamError::Tls(_),
                ) => (RetryOn::Connect, false),
                Some(UpstreamError::Http(_) | UpstreamError::Exchange(_)) => (RetryOn::Reset, true),
                // The client's body failed: sending it again cannot help.
                Some(UpstreamError::Body(_)) => return Action::Return,
                // A rejection further in (breaker, pool) or no endpoint: not an upstream failure.
                None => return Action::Return,
            }
        };
        if self.on(what) && (!sent || self.non_idempotent || idempotent) {
            Action::Retry
        } else {
            Action::Return
        }
    }
}

tokio::task_local! {
    /// The deadline of the route call in progress (its overall timeout), for the retry
    /// policy: a pushback that ends after it is not waited for. A task-local, so a request
    /// carries no extension for it (an allocation per request on the fast path).
    pub(crate) static ROUTE_DEADLINE: tokio::time::Instant;
}

/// A request body the retry layer can replay: what says whether its request may be sent
/// twice, and a copy of it for another try. An `http` request's ([`GwBody`]) and the fast
/// path's own ([`RawBody`](crate::fast::stacked::RawBody)).
pub(crate) trait Replay: Sized {
    /// Whether `req` may be sent again after it reached the upstream.
    fn idempotent(req: &Request<Self>) -> bool;
    /// Whether `req` is a gRPC call (whose route's hedging is its opt-in to being hedged).
    fn grpc(req: &Request<Self>) -> bool {
        let _ = req;
        false
    }
    /// A copy for another try, or `None` when the body cannot be sent twice.
    fn replay(&self) -> Option<Self>;
}

impl Replay for GwBody {
    fn idempotent(req: &Request<Self>) -> bool {
        idempotent(req)
    }

    fn grpc(req: &Request<Self>) -> bool {
        tollgate_retry::http::is_grpc(req.headers())
    }

    /// A copy when the body is held whole (see [`RetryPolicy::replayable`]).
    fn replay(&self) -> Option<Self> {
        match self {
            GwBody::Right(body) => Some(GwBody::Right(body.clone())),
            GwBody::Left(_) => None,
        }
    }
}

impl<B: Replay, R> Policy<Request<B>, http::Response<R>> for GwPolicy {
    fn classify(&self, req: &Request<B>, result: Result<&http::Response<R>, &BoxError>) -> Action {
        let action = match result {
            Ok(res) => self.classify_response(B::idempotent(req), res),
            Err(e) => self.classify_error(B::idempotent(req), e),
        };
        // A pushback that ends after the route's deadline: waiting would only turn the
        // upstream's answer (a 503 and its `Retry-After`) into the gateway's 504.
        if let Action::RetryAfter(pause) = action
            && ROUTE_DEADLINE
                .try_with(|deadline| tokio::time::Instant::now() + pause >= *deadline)
                .unwrap_or(false)
        {
            return Action::Return;
        }
        action
    }

    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(req.body().replay()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    /// A hedge sends the request again while the first try may already have reached the
    /// upstream: only a request that may run twice (idempotent, an `Idempotency-Key`, or
    /// `non_idempotent`), or a gRPC call (the route's `hedge` is its opt-in, as a hedging
    /// policy is in gRPC's service config).
    fn may_hedge(&self, req: &Request<B>) -> bool {
        self.non_idempotent || B::idempotent(req) || B::grpc(req)
    }

    fn on_attempt(&self, req: &mut Request<B>, attempt: &Attempt) {
        req.set_attempt(attempt.clone());
    }

    fn marks_attempts(&self) -> bool {
        true
    }

    fn on_give_up(&self, res: &mut http::Response<R>) {
        res.extensions_mut().insert(Exhausted);
    }

    /// Marks the answer, so [`Counted`] counts a request the budget left short though its
    /// answer is an `Ok` one (a `503` with retries still wanted).
    fn on_budget_exhausted(&self, res: &mut http::Response<R>) {
        res.extensions_mut().insert(BudgetRefused);
    }
}

/// In the extensions of an answer whose retries the budget refused (see
/// [`GwPolicy::on_budget_exhausted`]).
#[derive(Debug, Clone, Copy)]
struct BudgetRefused;

impl RetryPolicy {
    /// The policy of `section` (already validated), with an empty budget.
    ///
    /// # Errors
    /// tollgate-retry refused the section's configuration.
    pub(crate) fn new(section: &RetrySection) -> Result<Self, tollgate_core::error::ConfigError> {
        Self::build(section, None)
    }

    /// The policy of `section` (already validated), drawing on `shared`'s budget instead of
    /// one of its own (a route's override over a cluster with the same budget settings).
    ///
    /// # Errors
    /// tollgate-retry refused the section's configuration.
    pub(crate) fn sharing_budget(
        section: &RetrySection,
        shared: &RetryPolicy,
    ) -> Result<Self, tollgate_core::error::ConfigError> {
        Self::build(section, Some(shared))
    }

    fn build(
        section: &RetrySection,
        shared: Option<&RetryPolicy>,
    ) -> Result<Self, tollgate_core::error::ConfigError> {
        let config = section.retry_config();
        let layer = match shared {
            Some(s) => RetryLayer::with_budget(config, s.inner.layer.budget().clone())?,
            None => RetryLayer::new(config)?,
        }
        .with_policy(GwPolicy::new(section));
        Ok(Self {
            inner: Arc::new(Inner {
                layer,
                shared_budget: shared.is_some(),
                per_try: (section.per_try_timeout_ms > 0)
                    .then(|| Duration::from_millis(section.per_try_timeout_ms)),
                replay_limit: section.replay_limit_bytes,
                counters: Arc::default(),
            }),
        })
    }

    /// `req` with its body held whole when its length is known and at most the replay limit,
    /// so that every try can send it; otherwise `req` unchanged (sent once).
    ///
    /// # Errors
    /// The client's body failed while it was read ([`ClientBodyFailed`]; a body longer than
    /// the gateway's limit has a `LengthLimitError` in it).
    pub(crate) async fn replayable(&self, req: UpRequest) -> Result<UpRequest, BoxError> {
        let known = req.body().size_hint().exact();
        if !matches!(req.body(), GwBody::Left(_))
            || known.is_none_or(|len| len > self.inner.replay_limit as u64)
        {
            return Ok(req);
        }
        let (parts, body) = req.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| BoxError::from(ClientBodyFailed(e)))?;
        // Trailers on a request of known length are rare; they are not kept.
        let bytes: Bytes = collected.to_bytes();
        Ok(Request::from_parts(parts, GwBody::Right(Full::new(bytes))))
    }

    /// The retry service over `svc`, built once per stack; each request goes through a clone
    /// (two `Arc` clones) with [`send`](Self::send).
    pub(crate) fn wrap<S>(&self, svc: S) -> Retried<S> {
        self.inner.layer.layer(Try {
            svc,
            per_try: self.inner.per_try,
            counters: self.inner.counters.clone(),
        })
    }

    /// Sends `req` through `retried` (a clone of the [`wrap`](Self::wrap)ped stack) with
    /// retries and hedges as the section and the budget allow.
    ///
    /// # Errors
    /// The last try's error (inside a `RetriesExhausted` when tries were left undone).
    pub(crate) async fn send<S: UpstreamService>(
        &self,
        retried: Retried<S>,
        req: UpRequest,
    ) -> Result<UpResponse, BoxError> {
        let req = self.replayable(req).await?;
        self.counted(retried.oneshot(req)).await
    }

    /// `fut` (a request through [`Retried`]), counting its end as [`send`](Self::send) does.
    pub(crate) fn counted<F>(&self, fut: F) -> Counted<F> {
        Counted {
            fut,
            policy: self.clone(),
        }
    }

    /// Counts a request the budget left without the retries it asked for: a failure, or an
    /// answer that would have been retried (a `503`).
    fn count_exhausted<R>(&self, result: &Result<http::Response<R>, BoxError>) {
        let refused = match result {
            Err(e) => {
                find_cause::<RetriesExhausted>(&**e).is_some_and(RetriesExhausted::budget_exhausted)
            }
            Ok(res) => res.extensions().get::<BudgetRefused>().is_some(),
        };
        if refused {
            self.inner.counters.exhausted.incr();
        }
    }

    /// The longest request body a retry sends again (`replay_limit_bytes`).
    pub(crate) fn replay_limit(&self) -> usize {
        self.inner.replay_limit
    }

    /// Retries sent so far (hedges not counted).
    pub(crate) fn retries(&self) -> u64 {
        self.inner.counters.retries.sum().max(0) as u64
    }

    /// Hedges sent so far.
    pub(crate) fn hedges(&self) -> u64 {
        self.inner.counters.hedges.sum().max(0) as u64
    }

    fn exhausted(&self) -> u64 {
        self.inner.counters.exhausted.sum().max(0) as u64
    }

    /// State for `/state`.
    /// Whether this policy draws on another policy's budget.
    pub(crate) fn shares_a_budget(&self) -> bool {
        self.inner.shared_budget
    }

    /// Whether this policy draws on `other`'s very budget.
    pub(crate) fn shares_budget_with(&self, other: &RetryPolicy) -> bool {
        self.inner
            .layer
            .budget()
            .is_shared_with(other.inner.layer.budget())
    }

    pub(crate) fn state(&self) -> serde_json::Value {
        let b = self.inner.layer.budget().snapshot();
        serde_json::json!({
            "retries": self.retries(),
            "hedges": self.hedges(),
            "budget_exhausted": self.exhausted(),
            "budget": { "requests": b.requests, "spent": b.spent, "allowance": b.allowance },
        })
    }

    /// Records the retry counters, labelled `cluster`, into the current `metrics` recorder.
    pub(crate) fn record_metrics(&self, cluster: &str) {
        metrics::counter!("tollgate_cluster_retries_total", "cluster" => cluster.to_owned())
            .absolute(self.retries());
        metrics::counter!("tollgate_cluster_hedges_total", "cluster" => cluster.to_owned())
            .absolute(self.hedges());
        metrics::counter!(
            "tollgate_cluster_retry_budget_exhausted_total",
            "cluster" => cluster.to_owned()
        )
        .absolute(self.exhausted());
    }

    /// Records the counters of a route's own retries (`[routes.retry]`) over `cluster`,
    /// labelled `route` and `cluster`, into the current `metrics` recorder.
    pub(crate) fn record_route_metrics(&self, route: &str, cluster: &str) {
        let labels = [("route", route.to_owned()), ("cluster", cluster.to_owned())];
        metrics::counter!("tollgate_route_retries_total", &labels).absolute(self.retries());
        metrics::counter!("tollgate_route_hedges_total", &labels).absolute(self.hedges());
        metrics::counter!("tollgate_route_retry_budget_exhausted_total", &labels)
            .absolute(self.exhausted());
    }
}

pin_project_lite::pin_project! {
    /// A request's way through [`Retried`], counted when the budget cut its retries short
    /// ([`RetryPolicy::counted`]).
    pub(crate) struct Counted<F> {
        #[pin]
        fut: F,
        policy: RetryPolicy,
    }
}

impl<F, R> Future for Counted<F>
where
    F: Future<Output = Result<http::Response<R>, BoxError>>,
{
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.fut.poll(cx));
        this.policy.count_exhausted(&result);
        Poll::Ready(result)
    }
}

/// A stack `S` under the retry layer.
pub(crate) type Retried<S> = Retry<Try<S>, GwPolicy>;

/// One try: the cluster's stack under the per-try timeout, counted, and traced as a
/// `retry.attempt` span (the parent of its upstream call) when the request is traced.
#[derive(Debug, Clone)]
pub(crate) struct Try<S> {
    svc: S,
    per_try: Option<Duration>,
    counters: Arc<Counters>,
}

impl<S> Try<S> {
    /// Counts a try by its mark (a hedge, or a retry after the first); its number.
    fn count(&self, attempt: Option<&Attempt>) -> u32 {
        match attempt {
            Some(a) if a.is_hedge() => {
                self.counters.hedges.incr();
                a.number()
            }
            Some(a) => {
                if a.number() > 0 {
                    self.counters.retries.incr();
                }
                a.number()
            }
            None => 0,
        }
    }

    /// The stack the tries go to.
    pub(crate) fn inner_mut(&mut self) -> &mut S {
        &mut self.svc
    }

    /// One try of `req` on the stack, counted and under the per-try timeout, without a span
    /// (for requests that are not traced: the fast path's own).
    pub(crate) fn untraced<Req>(&mut self, req: Req) -> TryCall<S::Future>
    where
        Req: Attempts,
        S: Service<Req, Error = BoxError>,
    {
        self.count(req.attempt());
        let fut = self.svc.call(req);
        match self.per_try {
            Some(t) => TryCall::Timed {
                fut: tokio::time::timeout(t, fut),
            },
            None => TryCall::Direct { fut },
        }
    }
}

pin_project_lite::pin_project! {
    /// An untraced try's future ([`Try::untraced`]): the stack's own, under the per-try
    /// timeout when there is one (a [`TryTimedOut`] when it runs out).
    #[project = TryCallProj]
    pub(crate) enum TryCall<F> {
        /// No per-try timeout.
        Direct { #[pin] fut: F },
        /// Under `per_try_timeout_ms`.
        Timed { #[pin] fut: tokio::time::Timeout<F> },
    }
}

impl<F, T> Future for TryCall<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TryCallProj::Direct { fut } => fut.poll(cx),
            TryCallProj::Timed { fut } => fut
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(BoxError::from(TryTimedOut)))),
        }
    }
}

impl<S: UpstreamService> Service<UpRequest> for Try<S> {
    type Response = UpResponse;
    type Error = BoxError;
    type Future = TryFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.svc.poll_ready(cx)
    }

    fn call(&mut self, mut req: UpRequest) -> TryFuture {
        let number = self.count(req.attempt());
        let traced = req.extensions().get::<Traced>().cloned();
        let span = traced.map(|t| (t, trace::new_span_id(), Instant::now()));
        if let Some((t, id, _)) = &span {
            req.extensions_mut().insert(t.under(*id));
        }
        let fut = self.svc.call(req);
        let per_try = self.per_try;
        Box::pin(async move {
            let result = match per_try {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(BoxError::from(TryTimedOut)),
                },
                None => fut.await,
            };
            if let Some((t, id, start)) = span {
                let error = match &result {
                    Ok(r) if !r.status().is_server_error() => None,
                    Ok(_) => Some(Cow::Borrowed("server error")),
                    Err(e) => Some(Cow::Owned(e.to_string())),
                };
                t.child(
                    Some(id),
                    "retry.attempt",
                    SpanKind::Internal,
                    start,
                    vec![KeyValue::new("tollgate.attempt", i64::from(number) + 1)],
                    error,
                );
            }
            result
        })
    }
}

#[cfg(test)]
mod tests;
