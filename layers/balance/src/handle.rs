//! The handle: change the endpoint set, run discovery and health checks, look at each
//! endpoint.

use crate::fleet::Start;
use crate::health::{self, HealthCheck};
use crate::pick;
use crate::service::Shared;
use crate::signal::EndpointSignal;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::BoxError;
use tollgate_core::error::ConfigError;
use tower::discover::{Change, Discover};

/// Where an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointState {
    /// In rotation at full weight.
    Healthy,
    /// In rotation, its weight still ramping up (new or recovered).
    SlowStart,
    /// Out of rotation for failing more than its peers, until the ejection ends.
    Ejected,
    /// Out of rotation for failing its health checks.
    Unhealthy,
    /// Out of rotation because its external signal (a circuit breaker) says so.
    Unavailable,
    /// Removed from the set; requests already on it finish, no new ones go to it.
    Draining,
}

/// What one endpoint looks like at one moment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats<K> {
    /// The endpoint's key.
    pub key: K,
    /// Where it stands.
    pub state: EndpointState,
    /// The cost a pick compares (lower wins): latency × (in flight + 1) ÷ effective weight,
    /// raised by the failure penalty.
    pub cost: f64,
    /// The peak-EWMA latency estimate.
    pub latency: Duration,
    /// The decayed failure rate, in `[0, 1]`.
    pub failure_rate: f64,
    /// Requests reserved or running on it.
    pub in_flight: usize,
    /// Its configured weight.
    pub weight: f64,
    /// Its weight after slow start.
    pub effective_weight: f64,
    /// Requests sent to it since it joined (finished, cancelled or in flight).
    pub requests: u64,
    /// Its share of the requests sent to the endpoints listed, in `[0, 1]`.
    pub share: f64,
    /// Requests that succeeded.
    pub successes: u64,
    /// Requests that failed.
    pub failures: u64,
    /// How many times in a row it has been ejected (goes down while it stays clear).
    pub ejections: u32,
}

/// Changes the endpoint set of a [`Balance`](crate::Balance) and reports on it.
///
/// Clones share the balancer. Holding a handle keeps the background tasks running, like
/// holding a balancer clone.
pub struct BalanceHandle<K, S> {
    shared: Arc<Shared<K, S>>,
}

impl<K, S> Clone for BalanceHandle<K, S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: fmt::Debug, S> fmt::Debug for BalanceHandle<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceHandle")
            .field("endpoints", &self.shared)
            .finish()
    }
}

impl<K, S> BalanceHandle<K, S> {
    pub(crate) fn new(shared: Arc<Shared<K, S>>) -> Self {
        Self { shared }
    }
}

impl<K: PartialEq, S> BalanceHandle<K, S> {
    /// Adds an endpoint with weight 1, or replaces the service of the endpoint with that key
    /// (the old one drains). Added to a non-empty set, it starts in slow start when that is on.
    pub fn insert(&self, key: K, service: S) {
        self.insert_with(key, service, 1.0, None);
    }

    /// [`insert`](Self::insert) with a weight.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `weight` when it is not finite and positive.
    pub fn insert_weighted(&self, key: K, service: S, weight: f64) -> Result<(), ConfigError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(ConfigError::new(
                "weight",
                format!("must be finite and positive, got {weight}"),
            ));
        }
        self.insert_with(key, service, weight, None);
        Ok(())
    }

    /// [`insert_weighted`](Self::insert_weighted) with an external health signal (a circuit
    /// breaker's handle is one): while it says the endpoint is not
    /// available, picks leave the endpoint out.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `weight` when it is not finite and positive.
    pub fn insert_with_signal(
        &self,
        key: K,
        service: S,
        weight: f64,
        signal: impl EndpointSignal,
    ) -> Result<(), ConfigError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(ConfigError::new(
                "weight",
                format!("must be finite and positive, got {weight}"),
            ));
        }
        self.insert_with(key, service, weight, Some(Arc::new(signal)));
        Ok(())
    }

    fn insert_with(
        &self,
        key: K,
        service: S,
        weight: f64,
        signal: Option<Arc<dyn EndpointSignal>>,
    ) {
        let fleet = &self.shared.fleet;
        // The first endpoints of a set have nothing to ramp up against.
        let start = if fleet.load().endpoints.is_empty() {
            Start::Full
        } else {
            Start::Ramp
        };
        fleet.insert(key, service, weight, fleet.common.now(), start, signal);
    }

    /// Removes the endpoint with `key`: requests on it finish, no new ones go to it. Returns
    /// whether it was in the set.
    pub fn remove(&self, key: &K) -> bool {
        self.shared.fleet.remove(key)
    }

    /// Changes an endpoint's weight; returns whether it was in the set.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `weight` when it is not finite and positive.
    pub fn set_weight(&self, key: &K, weight: f64) -> Result<bool, ConfigError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(ConfigError::new(
                "weight",
                format!("must be finite and positive, got {weight}"),
            ));
        }
        Ok(self.shared.fleet.set_weight(key, weight))
    }

    /// The number of endpoints in the set (draining ones not included).
    pub fn len(&self) -> usize {
        self.shared.fleet.load().endpoints.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether too few endpoints are admitted, so picks spread over all of them.
    pub fn is_panicking(&self) -> bool {
        let fleet = &self.shared.fleet;
        let now = fleet.common.now();
        let snap = fleet.load();
        let admitted = snap
            .endpoints
            .iter()
            .filter(|e| e.core.admitted(now))
            .count();
        !snap.endpoints.is_empty()
            && pick::panicking(admitted, snap.endpoints.len(), fleet.common.panic_threshold)
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> usize {
        let fleet = &self.shared.fleet;
        fleet.common.ejected_now(fleet.common.now())
    }
}

impl<K: PartialEq + Clone, S> BalanceHandle<K, S> {
    /// Every endpoint of the set, then the draining ones.
    pub fn endpoints(&self) -> Vec<EndpointStats<K>> {
        let fleet = &self.shared.fleet;
        let now = fleet.common.now();
        let snap = fleet.load();
        let draining = fleet.draining();
        let all = snap
            .endpoints
            .iter()
            .map(|e| (e, false))
            .chain(draining.iter().map(|e| (e, true)));
        let mut out: Vec<EndpointStats<K>> = all
            .map(|(e, gone)| {
                let c = &e.core;
                let state = if gone {
                    EndpointState::Draining
                } else if c.ejected(now) {
                    EndpointState::Ejected
                } else if !c.signalled() {
                    EndpointState::Unavailable
                } else if !c.admitted(now) {
                    EndpointState::Unhealthy
                } else if c.in_slow_start(now) {
                    EndpointState::SlowStart
                } else {
                    EndpointState::Healthy
                };
                // Relaxed: statistics only.
                let load = |a: &crate::sync::atomic::AtomicU64| {
                    a.load(crate::sync::atomic::Ordering::Relaxed)
                };
                EndpointStats {
                    key: e.key.clone(),
                    state,
                    cost: c.cost(now),
                    latency: Duration::from_nanos(c.latency(now) as u64),
                    failure_rate: c.failure_rate(now),
                    in_flight: c.in_flight(),
                    weight: c.weight(),
                    effective_weight: c.weight() * c.ramp(now),
                    requests: c.requests(),
                    share: 0.0,
                    successes: load(&c.successes),
                    failures: load(&c.failures),
                    ejections: c.ejections.load(crate::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect();
        let total: u64 = out.iter().map(|s| s.requests).sum();
        if total > 0 {
            for s in &mut out {
                s.share = s.requests as f64 / total as f64;
            }
        }
        out
    }
}

impl<K, S> BalanceHandle<K, S>
where
    K: PartialEq + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// Runs active health checks with `check` until the last balancer clone and handle are
    /// dropped; spawn the future (or use [`Balance::spawn_health_checks`](crate::Balance::spawn_health_checks)).
    /// The future holds no strong reference between rounds.
    pub fn health_checks<H: HealthCheck<K>>(
        &self,
        check: H,
    ) -> impl Future<Output = ()> + Send + 'static {
        health::run(
            Arc::downgrade(&self.shared),
            self.shared.closed.subscribe(),
            check,
        )
    }

    /// Applies `discover`'s changes to the set until the stream ends (`Ok`), fails (its error)
    /// or the last balancer clone and handle are dropped (`Ok`). Inserted endpoints get
    /// weight 1 and slow start (when on and the set was not empty).
    pub fn discover<D>(
        &self,
        discover: D,
    ) -> impl Future<Output = Result<(), BoxError>> + Send + 'static
    where
        D: Discover<Key = K, Service = S> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        let weak = Arc::downgrade(&self.shared);
        let mut closed = self.shared.closed.subscribe();
        async move {
            let mut discover = std::pin::pin!(discover);
            loop {
                let change = tokio::select! {
                    change = poll_fn(|cx| discover.as_mut().poll_discover(cx)) => change,
                    _ = closed.changed() => return Ok(()),
                };
                let Some(shared) = weak.upgrade() else {
                    return Ok(());
                };
                let handle = BalanceHandle::new(shared);
                match change {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Change::Insert(key, service))) => handle.insert(key, service),
                    Some(Ok(Change::Remove(key))) => {
                        handle.remove(&key);
                    }
                }
            }
        }
    }
}
