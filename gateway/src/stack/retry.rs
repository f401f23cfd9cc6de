//! `[clusters.retry]`: budgeted retries of idempotent requests without a body, each try with
//! its own timeout, all inside the route's overall timeout.
//!
//! A retry is allowed while the retries of the last ten seconds stay under `budget_percent` of
//! the requests of those ten seconds plus `budget_min_per_s` per second, so a failing cluster
//! gets at most that much extra load (the retry storm a fixed "3 tries" causes cannot happen).
//! Only `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE` and `TRACE` requests whose body is empty are
//! retried: a streamed body cannot be sent twice.

use super::{GwBody, UpRequest, UpResponse};
use crate::config::retry::{RetryOn, RetrySection};
use crate::error::TryTimedOut;
use crate::pool::UpstreamError;
use crate::trace::{self, Traced};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::counter::ShardedCounter;
use tollgate_core::error::find_cause;
use tollgate_retry::{Budget, BudgetConfig};
use tower::{Service, ServiceExt};

/// How far back the budget looks: the retries of the last ten seconds against the requests of
/// those ten seconds.
const WINDOW: Duration = Duration::from_secs(10);

/// A cluster's retry policy and budget, shared by every request to it.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    section: RetrySection,
    per_try: Option<Duration>,
    budget: Budget,
    retries: ShardedCounter,
    exhausted: ShardedCounter,
}

/// Whether `method` may be sent twice.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// tollgate-retry's budget (a ratio of the requests plus a floor per second, over
/// [`WINDOW`], deposits sharded per core): the same budget a library user stacks with
/// `RetryLayer`.
fn budget(percent: f64, floor_per_s: u32) -> Budget {
    Budget::new(&BudgetConfig {
        ratio: percent / 100.0,
        min_per_second: floor_per_s,
        window: WINDOW,
    })
}

impl RetryPolicy {
    /// The policy of `section`, with an empty budget.
    pub(crate) fn new(section: &RetrySection) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_try: (section.per_try_timeout_ms > 0)
                    .then(|| Duration::from_millis(section.per_try_timeout_ms)),
                budget: budget(section.budget_percent, section.budget_min_per_s),
                section: section.clone(),
                retries: ShardedCounter::default(),
                exhausted: ShardedCounter::default(),
            }),
        }
    }

    /// Whether `req` may be retried: an idempotent method and a body the gateway holds.
    pub(crate) fn retryable(req: &UpRequest) -> bool {
        idempotent(req.method()) && matches!(req.body(), http_body_util::Either::Right(_))
    }

    fn wants_retry(&self, result: &Result<UpResponse, BoxError>) -> bool {
        let on = &self.inner.section.retry_on;
        match result {
            Ok(r) => {
                (r.status().is_server_error() && on.contains(&RetryOn::ServerError))
                    || (r.status() == http::StatusCode::SERVICE_UNAVAILABLE
                        && on.contains(&RetryOn::Unavailable))
            }
            Err(e) => {
                if find_cause::<TryTimedOut>(&**e).is_some() {
                    return on.contains(&RetryOn::Timeout);
                }
                match find_cause::<UpstreamError>(&**e) {
                    Some(
                        UpstreamError::Connect(_)
                        | UpstreamError::ConnectTimeout
                        | UpstreamError::Tls(_),
                    ) => on.contains(&RetryOn::Connect),
                    Some(UpstreamError::Http(_)) => on.contains(&RetryOn::Reset),
                    None => false,
                }
            }
        }
    }

    async fn try_once<S>(&self, svc: S, req: UpRequest) -> Result<UpResponse, BoxError>
    where
        S: Service<UpRequest, Response = UpResponse, Error = BoxError>,
    {
        match self.inner.per_try {
            Some(t) => match tokio::time::timeout(t, svc.oneshot(req)).await {
                Ok(r) => r,
                Err(_) => Err(Box::new(TryTimedOut)),
            },
            None => svc.oneshot(req).await,
        }
    }

    /// Sends `req` through `svc`, retrying while the policy, the attempts and the budget allow.
    ///
    /// # Errors
    /// The last try's error.
    pub(crate) async fn send<S>(&self, svc: S, req: UpRequest) -> Result<UpResponse, BoxError>
    where
        S: Service<UpRequest, Response = UpResponse, Error = BoxError> + Clone,
    {
        self.inner.budget.deposit();
        if !Self::retryable(&req) {
            return self.try_once(svc, req).await;
        }
        let (parts, body) = req.into_parts();
        let body: Full<Bytes> = match body {
            http_body_util::Either::Right(b) => b,
            http_body_util::Either::Left(_) => Full::default(),
        };
        let traced = parts.extensions.get::<Traced>();
        let mut tries = 0;
        loop {
            let mut again = Request::new(GwBody::Right(body.clone()));
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.version_mut() = parts.version;
            *again.headers_mut() = parts.headers.clone();
            // Each try is a span of the request's trace, the parent of its upstream call.
            let attempt = traced.map(|t| (t, trace::new_span_id(), Instant::now()));
            if let Some((t, id, _)) = &attempt {
                again.extensions_mut().insert(t.under(*id));
            }
            let result = self.try_once(svc.clone(), again).await;
            if let Some((t, id, start)) = attempt {
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
                    vec![KeyValue::new("tollgate.attempt", (tries + 1) as i64)],
                    error,
                );
            }
            if tries < self.inner.section.attempts && self.wants_retry(&result) {
                if self.inner.budget.try_withdraw() {
                    tries += 1;
                    self.inner.retries.incr();
                    continue;
                }
                self.inner.exhausted.incr();
            }
            return result;
        }
    }

    /// Retries sent so far.
    pub(crate) fn retries(&self) -> u64 {
        self.inner.retries.sum().max(0) as u64
    }

    /// State for `/state`.
    pub(crate) fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "retries": self.retries(),
            "budget_exhausted": self.inner.exhausted.sum().max(0),
        })
    }

    /// Records the retry counters, labelled `cluster`, into the current `metrics` recorder.
    pub(crate) fn record_metrics(&self, cluster: &str) {
        metrics::counter!("tollgate_cluster_retries_total", "cluster" => cluster.to_owned())
            .absolute(self.retries());
        metrics::counter!(
            "tollgate_cluster_retry_budget_exhausted_total",
            "cluster" => cluster.to_owned()
        )
        .absolute(self.inner.exhausted.sum().max(0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_of_requests() {
        let b = budget(20.0, 0);
        assert!(!b.try_withdraw(), "no requests, no floor: no retries");
        for _ in 0..100 {
            b.deposit();
        }
        let allowed = (0..50).filter(|_| b.try_withdraw()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_on_a_quiet_cluster_and_old_counts_expire() {
        let b = budget(20.0, 1);
        let allowed = (0..50).filter(|_| b.try_withdraw()).count();
        assert_eq!(allowed, 10, "one per second over the ten-second window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(), "the window still holds the ten retries");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.try_withdraw(), "they have aged out");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = RetrySection {
            budget_percent: 150.0,
            ..RetrySection::default()
        };
        assert_eq!(
            bad.validate("clusters[0].retry").unwrap_err().field,
            "clusters[0].retry.budget_percent"
        );
        assert!(RetrySection::default().validate("x").is_ok());
    }

    #[test]
    fn only_idempotent_requests_with_a_held_body_are_retryable() {
        let get = Request::get("/")
            .body(GwBody::Right(Full::default()))
            .unwrap();
        assert!(RetryPolicy::retryable(&get));
        let post = Request::post("/")
            .body(GwBody::Right(Full::default()))
            .unwrap();
        assert!(!RetryPolicy::retryable(&post));
    }
}
