//! A recording batch backend shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use futures_util::future::BoxFuture;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower::Service;

/// An id that fails on its own (per-item error).
pub const BAD: u64 = 1_000_013;
/// An id that makes the whole batch fail.
pub const FAIL_BATCH: u64 = 1_000_017;
/// An id that makes the batch future panic.
pub const PANIC: u64 = 1_000_666;
/// An id that makes `call` itself panic.
pub const PANIC_IN_CALL: u64 = 1_000_777;
/// An id the backend answers without (a short result vector).
pub const SHORT: u64 = 1_000_999;
/// Bound for every wait in a test, in virtual time.
pub const BOUND: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad(pub u64);

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad item {}", self.0)
    }
}

impl std::error::Error for Bad {}

/// One batch call as the backend saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub ids: Vec<u64>,
}

/// Answers `id * 10` for every id after `exec`, recording each call.
#[derive(Clone)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub exec: Duration,
}

impl Recorder {
    pub fn new(exec: Duration) -> Self {
        Self {
            calls: Arc::default(),
            exec,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// When the batch holding `id` was sent.
    pub fn sent_at(&self) -> std::collections::HashMap<u64, Instant> {
        let mut map = std::collections::HashMap::new();
        for c in self.calls() {
            for id in c.ids {
                map.insert(id, c.at);
            }
        }
        map
    }
}

impl Service<Vec<u64>> for Recorder {
    type Response = Vec<Result<u64, Bad>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ids: Vec<u64>) -> Self::Future {
        assert!(
            !ids.contains(&PANIC_IN_CALL),
            "recorder: asked to panic in call"
        );
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            ids: ids.clone(),
        });
        let exec = self.exec;
        Box::pin(async move {
            tokio::time::sleep(exec).await;
            assert!(!ids.contains(&PANIC), "recorder: asked to panic");
            if ids.contains(&FAIL_BATCH) {
                return Err(Box::new(Bad(FAIL_BATCH)) as BoxError);
            }
            Ok(ids
                .iter()
                .take_while(|&&id| id != SHORT)
                .map(|&id| if id == BAD { Err(Bad(id)) } else { Ok(id * 10) })
                .collect())
        })
    }
}

/// Runs `fut` under the test bound.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(BOUND, fut)
        .await
        .expect("still pending after a virtual hour")
}
