//! Small endpoints and a load loop for the tests, all on paused tokio time.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig, OutlierConfig};
use tower::{Service, ServiceExt};

/// An endpoint that answers after `latency`, failing when told to; counts its requests.
#[derive(Clone, Debug)]
pub struct Backend {
    pub latency_us: Arc<AtomicU64>,
    pub failing: Arc<AtomicBool>,
    pub hits: Arc<AtomicU64>,
}

impl Backend {
    pub fn new(latency: Duration) -> Self {
        Self {
            latency_us: Arc::new(AtomicU64::new(latency.as_micros() as u64)),
            failing: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub struct Failed;
impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend failed")
    }
}
impl std::error::Error for Failed {}

impl Service<()> for Backend {
    type Response = ();
    type Error = Failed;
    type Future = Pin<Box<dyn Future<Output = Result<(), Failed>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let latency = Duration::from_micros(self.latency_us.load(Ordering::SeqCst));
        let failing = self.failing.load(Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            if failing { Err(Failed) } else { Ok(()) }
        })
    }
}

/// Sends one request every `every` for `total`, each bounded by `timeout`; waits for all.
/// Returns (ok, failed).
pub async fn load<K, S>(
    svc: &Balance<K, S>,
    every: Duration,
    total: Duration,
    timeout: Duration,
) -> (u64, u64)
where
    K: PartialEq + Send + Sync + 'static,
    S: Service<()> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<tollgate_core::BoxError>,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let n = (total.as_micros() / every.as_micros()) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        tick.tick().await;
        let svc = svc.clone();
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            match tokio::time::timeout(timeout, svc.oneshot(())).await {
                Ok(Ok(_)) => ok.fetch_add(1, Ordering::SeqCst),
                _ => failed.fetch_add(1, Ordering::SeqCst),
            };
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst))
}

/// A seeded config that ejects no endpoint (no consecutive-failure or success-rate ejection),
/// for tests that steer the pick by other means.
pub fn without_ejection(seed: u64) -> BalanceConfig {
    BalanceConfig {
        seed: Some(seed),
        outlier: OutlierConfig {
            consecutive_failures: 0,
            success_rate: false,
            ..Default::default()
        },
        ..Default::default()
    }
}
