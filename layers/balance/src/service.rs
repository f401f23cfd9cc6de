//! The balancer service.

use crate::common::Common;
use crate::config::BalanceConfig;
use crate::error::NoEndpoints;
use crate::fleet::{Fleet, Start};
use crate::future::{InFlight, ResponseFuture};
use crate::handle::BalanceHandle;
use crate::health::{self, HealthCheck};
use crate::pick::{self, Rng};
use crate::sync::atomic::Ordering;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_core::error::ConfigError;
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower::discover::Discover;
use tower_service::Service;

/// What the clones of one balancer and its handles share.
pub(crate) struct Shared<K, S> {
    pub(crate) fleet: Fleet<K, S>,
    /// Dropped with the last balancer and handle, which stops the background tasks.
    pub(crate) closed: watch::Sender<()>,
}

impl<K: fmt::Debug, S> fmt::Debug for Shared<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fleet.fmt(f)
    }
}

/// The endpoint a balancer clone has chosen for its next request.
struct Slot<S> {
    inflight: InFlight,
    service: S,
    ready: bool,
    /// When the endpoint was picked, if its service was ready at once: then `call` uses it as
    /// the start time rather than read the clock again.
    picked_at: Option<u64>,
}

/// A latency-aware balancer over a changing set of endpoints keyed by `K`, each served by a
/// clone of its `S`. See the [crate docs](crate) for the algorithm and the readiness model.
///
/// Cheap to clone; every clone shares the endpoint set and its statistics, with no worker
/// task and no buffer in between.
pub struct Balance<K, S, C = ErrorsAreFailures> {
    shared: Arc<Shared<K, S>>,
    classify: C,
    rng: Rng,
    slot: Option<Slot<S>>,
}

impl<K: fmt::Debug, S, C: fmt::Debug> fmt::Debug for Balance<K, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.shared)
            .field("classify", &self.classify)
            .field(
                "reserved",
                &self.slot.as_ref().map(|s| s.inflight.core().id),
            )
            .finish()
    }
}

fn check_weight(weight: f64) -> Result<(), ConfigError> {
    if weight.is_finite() && weight > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            "weight",
            format!("must be finite and positive, got {weight}"),
        ))
    }
}

impl<K: PartialEq, S> Balance<K, S> {
    /// A balancer over `endpoints`, each with weight 1; they start at full weight (no slow
    /// start). The set may be empty and filled later through [`handle`](Self::handle).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field of `config`.
    pub fn new(
        endpoints: impl IntoIterator<Item = (K, S)>,
        config: BalanceConfig,
    ) -> Result<Self, ConfigError> {
        Self::weighted(endpoints.into_iter().map(|(k, s)| (k, s, 1.0)), config)
    }

    /// A balancer over `(key, service, weight)` endpoints. An endpoint with weight 2 is
    /// treated as if it had half the load of an equal endpoint with weight 1.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field of `config`, or `weight` when a weight is
    /// not finite and positive.
    pub fn weighted(
        endpoints: impl IntoIterator<Item = (K, S, f64)>,
        config: BalanceConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let this = Self::from_validated(&config);
        for (key, service, weight) in endpoints {
            check_weight(weight)?;
            let now = this.shared.fleet.common.now();
            this.shared
                .fleet
                .insert(key, service, weight, now, Start::Full, None);
        }
        Ok(this)
    }

    /// Builds an empty balancer from a config already validated.
    pub(crate) fn from_validated(config: &BalanceConfig) -> Self {
        let common = crate::sync::Arc::new(Common::new(config, Instant::now()));
        let (closed, _) = watch::channel(());
        let shared = Arc::new(Shared {
            fleet: Fleet::new(common, config.seed),
            closed,
        });
        let rng = Rng::new(shared.fleet.next_seed());
        Balance {
            shared,
            classify: ErrorsAreFailures,
            rng,
            slot: None,
        }
    }
}

impl<K, S, C> Balance<K, S, C> {
    /// Uses `classify` to decide which responses and errors count as failures of an endpoint
    /// (by default every error does and no response does).
    pub fn with_classifier<C2>(self, classify: C2) -> Balance<K, S, C2> {
        let Balance {
            shared, rng, slot, ..
        } = self;
        Balance {
            shared,
            classify,
            rng,
            slot,
        }
    }

    pub(crate) fn shared(&self) -> &Shared<K, S> {
        &self.shared
    }

    /// A handle to change the endpoint set and look at each endpoint's state.
    pub fn handle(&self) -> BalanceHandle<K, S> {
        BalanceHandle::new(self.shared.clone())
    }

    /// The classifier.
    pub fn get_ref(&self) -> &C {
        &self.classify
    }

    /// The classifier, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.classify
    }

    /// The classifier, giving up the balancer (there is no single inner service to return:
    /// each endpoint's service lives in the shared set).
    pub fn into_inner(self) -> C {
        self.classify
    }
}

impl<K, S, C> Balance<K, S, C>
where
    K: PartialEq + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// Spawns the active health checks on the current tokio runtime; the task stops when the
    /// last balancer clone and handle are dropped. Same as spawning
    /// [`BalanceHandle::health_checks`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_health_checks<H: HealthCheck<K>>(&self, check: H) -> tokio::task::JoinHandle<()> {
        tokio::spawn(health::run(
            Arc::downgrade(&self.shared),
            self.shared.closed.subscribe(),
            check,
        ))
    }

    /// Spawns a task that applies `discover`'s changes to the endpoint set until the stream
    /// ends or fails, or the last balancer clone and handle are dropped. Same as spawning
    /// [`BalanceHandle::discover`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_discover<D>(&self, discover: D) -> tokio::task::JoinHandle<Result<(), BoxError>>
    where
        D: Discover<Key = K, Service = S> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        tokio::spawn(self.handle().discover(discover))
    }
}

impl<K, S, C: Clone> Clone for Balance<K, S, C> {
    /// A clone shares the endpoint set; it starts with no endpoint reserved and its own random
    /// sequence.
    fn clone(&self) -> Self {
        Balance {
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            rng: Rng::new(self.shared.fleet.next_seed()),
            slot: None,
        }
    }
}

impl<K, S, C, R> Service<R> for Balance<K, S, C>
where
    K: PartialEq,
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Picks an endpoint (power of two choices), reserves a slot on it and polls a clone of
    /// its service ready. While that clone is not ready the choice stands, unless the
    /// endpoint is removed, in which case another is picked.
    ///
    /// # Errors
    ///
    /// [`NoEndpoints`] at once when the set is empty; the endpoint service's own error if its
    /// `poll_ready` fails (counted as a failure of that endpoint).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if let Some(slot) = &mut self.slot {
                if slot.ready {
                    return Poll::Ready(Ok(()));
                }
                // Relaxed: a hint; `reserve` did the ordered check when the slot was taken.
                if slot.inflight.core().removed.load(Ordering::Relaxed) {
                    self.slot = None;
                    continue;
                }
                return match slot.service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        slot.ready = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => {
                        let e: BoxError = e.into();
                        if let Some(mut slot) = self.slot.take() {
                            // A tollgate rejection below is not the endpoint failing.
                            let outcome = if tollgate_core::error::is_rejection(&*e) {
                                tollgate_core::Outcome::Ignored
                            } else {
                                tollgate_core::Outcome::Failure
                            };
                            slot.inflight.start(self.shared.fleet.common.now());
                            slot.inflight.complete(outcome);
                        }
                        Poll::Ready(Err(e))
                    }
                    Poll::Pending => {
                        slot.picked_at = None;
                        Poll::Pending
                    }
                };
            }
            let fleet = &self.shared.fleet;
            let now = fleet.common.now();
            fleet.maybe_sweep(now);
            let snap = fleet.load();
            let Some(choice) = pick::choose(&snap.endpoints, now, &mut self.rng) else {
                return Poll::Ready(Err(Box::new(NoEndpoints::new())));
            };
            let ep = &snap.endpoints[choice.index];
            if ep.core.reserve() {
                self.slot = Some(Slot {
                    inflight: InFlight::reserved(ep.handle()),
                    service: ep.service.clone(),
                    ready: false,
                    picked_at: Some(now),
                });
            }
            // Otherwise it was removed after we loaded the set: load again.
        }
    }

    /// Sends `req` to the endpoint `poll_ready` reserved.
    ///
    /// # Panics
    ///
    /// If `poll_ready` did not return `Ready(Ok(()))` first.
    fn call(&mut self, req: R) -> Self::Future {
        let slot = self.slot.take().filter(|s| s.ready);
        let Slot {
            mut inflight,
            mut service,
            picked_at,
            ..
        } = slot.expect("poll_ready must succeed before call");
        inflight.start(picked_at.unwrap_or_else(|| self.shared.fleet.common.now()));
        ResponseFuture::new(service.call(req), inflight, self.classify.clone())
    }
}
