//! Active health checks.
//!
//! Every `interval` the task checks each endpoint with the user's probe, concurrently, each
//! bounded by `timeout` (a check that does not answer in time fails). After
//! `unhealthy_threshold` failed checks in a row an endpoint leaves rotation; after
//! `healthy_threshold` passed checks in a row it comes back (in slow start, when on).
//! Endpoints start healthy. The task holds only a weak reference to the balancer and stops as
//! soon as the last balancer clone and handle are dropped.

use crate::service::Shared;
use futures_util::future::join_all;
use std::future::Future;
use std::sync::Weak;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

/// Checks one endpoint; `true` means it passed.
///
/// Implemented for every `Fn(&K) -> impl Future<Output = bool>`:
///
/// ```
/// use tollgate_balance::HealthCheck;
/// fn takes<H: HealthCheck<&'static str>>(_: H) {}
/// takes(|addr: &&'static str| {
///     let addr = *addr;
///     async move { !addr.is_empty() }
/// });
/// ```
pub trait HealthCheck<K>: Send + Sync + 'static {
    /// The check's future.
    type Future: Future<Output = bool> + Send;
    /// Starts a check of the endpoint with `key`.
    fn check(&self, key: &K) -> Self::Future;
}

impl<K, F, Fut> HealthCheck<K> for F
where
    F: Fn(&K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    type Future = Fut;
    fn check(&self, key: &K) -> Fut {
        self(key)
    }
}

pub(crate) async fn run<K, S, H>(
    shared: Weak<Shared<K, S>>,
    mut closed: watch::Receiver<()>,
    check: H,
) where
    K: PartialEq + Send + Sync + 'static,
    S: Send + Sync + 'static,
    H: HealthCheck<K>,
{
    let Some(config) = shared.upgrade().map(|s| s.fleet.common.health.clone()) else {
        return;
    };
    let mut next = Instant::now() + config.interval;
    loop {
        tokio::select! {
            () = sleep_until(next) => {}
            _ = closed.changed() => return,
        }
        next += config.interval;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let snap = std::sync::Arc::clone(&*strong.fleet.load());
        drop(strong);
        let checks = snap
            .endpoints
            .iter()
            .map(|e| timeout(config.timeout, check.check(&e.key)));
        let results = tokio::select! {
            r = join_all(checks) => r,
            _ = closed.changed() => return,
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let now = strong.fleet.common.now();
        for (e, r) in snap.endpoints.iter().zip(results) {
            let passed = matches!(r, Ok(true));
            if let Some(healthy) = e.core.check(
                now,
                passed,
                config.unhealthy_threshold,
                config.healthy_threshold,
            ) {
                tracing::trace!(endpoint = e.core.id, healthy, "health changed");
            }
        }
    }
}
