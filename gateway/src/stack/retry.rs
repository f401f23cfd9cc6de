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
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::counter::ShardedCounter;
use tollgate_core::error::find_cause;
use tower::{Service, ServiceExt};

/// Seconds the budget looks back.
const WINDOW_S: u64 = 10;

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The retry budget: requests and retries per second over the last [`WINDOW_S`] seconds.
#[derive(Debug)]
struct Budget {
    start: Instant,
    percent: f64,
    floor_per_s: u64,
    slots: [Slot; WINDOW_S as usize],
}

impl Budget {
    fn second(&self) -> u64 {
        // Seconds since start, from 1 so that a zeroed slot is never "current".
        self.start.elapsed().as_secs() + 1
    }

    fn slot(&self, now: u64) -> &Slot {
        let slot = &self.slots[(now % WINDOW_S) as usize];
        // Relaxed throughout: the budget is a rate estimate; a count landing in a slot that is
        // being recycled only nudges it.
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    fn deposit(&self) {
        // Relaxed: see `slot`.
        self.slot(self.second())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    fn withdraw(&self) -> bool {
        let now = self.second();
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            // Relaxed: see `slot`.
            let sec = s.second.load(Ordering::Relaxed);
            if sec + WINDOW_S > now && sec <= now {
                requests += s.requests.load(Ordering::Relaxed);
                retries += s.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = self.floor_per_s * WINDOW_S + (requests as f64 * self.percent / 100.0) as u64;
        if retries < allowed {
            // Relaxed: see `slot`.
            self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

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

impl RetryPolicy {
    /// The policy of `section`, with an empty budget.
    pub(crate) fn new(section: &RetrySection) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_try: (section.per_try_timeout_ms > 0)
                    .then(|| Duration::from_millis(section.per_try_timeout_ms)),
                budget: Budget {
                    start: Instant::now(),
                    percent: section.budget_percent,
                    floor_per_s: u64::from(section.budget_min_per_s),
                    slots: Default::default(),
                },
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
        let mut tries = 0;
        loop {
            let mut again = Request::new(GwBody::Right(body.clone()));
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.version_mut() = parts.version;
            *again.headers_mut() = parts.headers.clone();
            let result = self.try_once(svc.clone(), again).await;
            if tries < self.inner.section.attempts && self.wants_retry(&result) {
                if self.inner.budget.withdraw() {
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

    fn budget(percent: f64, floor_per_s: u64) -> Budget {
        Budget {
            start: Instant::now(),
            percent,
            floor_per_s,
            slots: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_of_requests() {
        let b = budget(20.0, 0);
        assert!(!b.withdraw(), "no requests, no floor: no retries");
        for _ in 0..100 {
            b.deposit();
        }
        let allowed = (0..50).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_on_a_quiet_cluster_and_old_counts_expire() {
        let b = budget(20.0, 1);
        let allowed = (0..50).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 10, "one per second over the ten-second window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(), "the window still holds the ten retries");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.withdraw(), "they have aged out");
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
