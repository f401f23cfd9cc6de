//! The balancer service.

use crate::common::Common;
use crate::config::BalanceConfig;
use crate::error::NoEndpoints;
use crate::fleet::{Fleet, Start};
use crate::future::{InFlight, ResponseFuture};
use crate::handle::BalanceHandle;
use crate::hash::{KeyFn, NoKey, RequestKey};
use crate::health::{self, HealthCheck};
use crate::pick::{self, Rng};
use crate::ring;
use crate::sync::atomic::Ordering;
use crate::tried::{AvoidTried, IgnoreTried, TriedHint};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_core::attempt::TriedEndpoints;
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
///
/// `A` says where a request's retry marker is found ([`IgnoreTried`] by default; see
/// [`avoid_tried`](Self::avoid_tried)); `H` where its hash key is found ([`NoKey`] by default;
/// see [`hash_by`](Self::hash_by)).
pub struct Balance<K, S, C = ErrorsAreFailures, A = IgnoreTried, H = NoKey> {
    shared: Arc<Shared<K, S>>,
    classify: C,
    tried: A,
    hash: H,
    rng: Rng,
    slot: Option<Slot<S>>,
}

impl<K: fmt::Debug, S, C: fmt::Debug, A: fmt::Debug, H: fmt::Debug> fmt::Debug
    for Balance<K, S, C, A, H>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.shared)
            .field("classify", &self.classify)
            .field("tried", &self.tried)
            .field("hash", &self.hash)
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
            tried: IgnoreTried,
            hash: NoKey,
            rng,
            slot: None,
        }
    }
}

impl<K, S, C, A, H> Balance<K, S, C, A, H> {
    /// Uses `classify` to decide which responses and errors count as failures of an endpoint
    /// (by default every error does and no response does).
    pub fn with_classifier<C2>(self, classify: C2) -> Balance<K, S, C2, A, H> {
        let Balance {
            shared,
            rng,
            slot,
            tried,
            hash,
            ..
        } = self;
        Balance {
            shared,
            classify,
            tried,
            hash,
            rng,
            slot,
        }
    }

    /// Reads each request's [`Attempt`](tollgate_core::attempt::Attempt) marker (requests
    /// that implement [`Attempts`](tollgate_core::attempt::Attempts), such as `http::Request`,
    /// which tollgate-retry marks): the endpoint of every attempt is recorded in the request's
    /// tried set, and a retry or hedge whose reserved endpoint is in that set goes to another
    /// admitted endpoint not in it, when one exists and its service is ready at once. With
    /// only tried endpoints admitted, the retry goes where `poll_ready` picked.
    ///
    /// ```
    /// use tollgate_balance::{Balance, BalanceConfig};
    /// use tollgate_core::attempt::Attempt;
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tollgate_core::BoxError> {
    /// let replica = |name: &'static str| {
    ///     service_fn(move |_: http::Request<()>| async move { Ok::<_, std::io::Error>(name) })
    /// };
    /// let balance = Balance::new([("a", replica("a")), ("b", replica("b"))], BalanceConfig::default())?
    ///     .avoid_tried();
    /// let mut first = http::Request::new(());
    /// first.extensions_mut().insert(Attempt::first());
    /// let attempt = first.extensions().get::<Attempt>().unwrap().clone();
    /// let went_to = balance.clone().oneshot(first).await?;
    /// // The retry shares the first attempt's tried set, so it goes to the other replica.
    /// let mut retry = http::Request::new(());
    /// retry.extensions_mut().insert(attempt.next(false));
    /// assert_ne!(balance.oneshot(retry).await?, went_to);
    /// # Ok(())
    /// # }
    /// ```
    pub fn avoid_tried(self) -> Balance<K, S, C, AvoidTried, H> {
        let Balance {
            shared,
            rng,
            slot,
            classify,
            hash,
            ..
        } = self;
        Balance {
            shared,
            classify,
            tried: AvoidTried,
            hash,
            rng,
            slot,
        }
    }

    /// Sends each request with a key to the endpoint its key maps to on a consistent-hash ring
    /// (cache locality), within a bound on that endpoint's load: `key` reads the request's key
    /// (`None`: the request is picked by power of two choices, as without hashing). See
    /// [`HashConfig`](crate::HashConfig) for the bound and the ring, and
    /// [`hash_with`](Self::hash_with) for a key reader with a name, such as
    /// [`HttpKey`](crate::HttpKey).
    ///
    /// Endpoints are placed on the ring by the hash of their key `K`, so every balancer with
    /// the same endpoints maps keys the same way, and adding or removing one of N endpoints
    /// moves about 1/N of the keys. Endpoints not admitted (ejected, unhealthy, unavailable by
    /// their signal) or whose service is not ready at once are passed over, as are those at
    /// their load bound: the key goes on clockwise to the next one.
    ///
    /// Readiness: `poll_ready` still readies a power-of-two-choices pick, since the request is
    /// not known yet; `call` reads the key and, when it maps elsewhere, moves the request to
    /// that endpoint if its service is ready at once, giving the first reservation back.
    ///
    /// ```
    /// use tollgate_balance::{Balance, BalanceConfig};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tollgate_core::BoxError> {
    /// // Requests are (user id, payload); each replica answers with its name.
    /// let replica = |name: &'static str| {
    ///     service_fn(move |_: (u64, &str)| async move { Ok::<_, std::io::Error>(name) })
    /// };
    /// let balance = Balance::new(
    ///     [("a", replica("a")), ("b", replica("b")), ("c", replica("c"))],
    ///     BalanceConfig::default(),
    /// )?
    /// .hash_by(|req: &(u64, &str)| Some(req.0));
    /// let first = balance.clone().oneshot((42, "x")).await?;
    /// for _ in 0..10 {
    ///     // One at a time, loads stay even: user 42 always lands on the same replica.
    ///     assert_eq!(balance.clone().oneshot((42, "y")).await?, first);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash_by<F>(self, key: F) -> Balance<K, S, C, A, Option<KeyFn<F>>>
    where
        K: PartialEq + std::hash::Hash,
    {
        self.hash_with(Some(KeyFn(key)))
    }

    /// [`hash_by`](Self::hash_by) with a key reader of a type that has a name, such as
    /// [`HttpKey`](crate::HttpKey) (feature `http`) or your own [`RequestKey`]. `None` reads
    /// no key and builds no ring (every request is picked by power of two choices), so one
    /// balancer type serves configurations with and without hashing.
    pub fn hash_with<H2>(self, key: Option<H2>) -> Balance<K, S, C, A, Option<H2>>
    where
        K: PartialEq + std::hash::Hash,
    {
        if key.is_some() {
            self.shared.fleet.enable_ring(ring::hash_of::<K>);
        }
        let Balance {
            shared,
            rng,
            slot,
            classify,
            tried,
            ..
        } = self;
        Balance {
            shared,
            classify,
            tried,
            hash: key,
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

impl<K, S, C, A> Balance<K, S, C, A>
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

impl<K, S, C: Clone, A: Clone, H: Clone> Clone for Balance<K, S, C, A, H> {
    /// A clone shares the endpoint set; it starts with no endpoint reserved and its own random
    /// sequence.
    fn clone(&self) -> Self {
        Balance {
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            tried: self.tried.clone(),
            hash: self.hash.clone(),
            rng: Rng::new(self.shared.fleet.next_seed()),
            slot: None,
        }
    }
}

impl<K, S, C, A, H, R> Service<R> for Balance<K, S, C, A, H>
where
    K: PartialEq,
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
    A: TriedHint<R>,
    H: RequestKey<R>,
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
                            // A tollgate rejection below is not the endpoint failing (its
                            // own breaker's refusal is: see `ResponseFuture::poll`).
                            let outcome = if tollgate_core::error::is_rejection(&*e)
                                && !crate::error::refused_by_endpoint(&*e)
                            {
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

    /// Sends `req` to the endpoint `poll_ready` reserved, or, for a request with a hash key
    /// (see [`hash_by`](Self::hash_by)), to the endpoint its key maps to within the load bound,
    /// or, for a retry or hedge that already went there (see
    /// [`avoid_tried`](Self::avoid_tried)), to another endpoint.
    ///
    /// # Panics
    ///
    /// If `poll_ready` did not return `Ready(Ok(()))` first.
    fn call(&mut self, req: R) -> Self::Future {
        let slot = self.slot.take().filter(|s| s.ready);
        let mut slot = slot.expect("poll_ready must succeed before call");
        if let Some(key) = self.hash.key(&req) {
            slot = self.hashed(slot, key);
        }
        if let Some(attempt) = self.tried.attempt(&req) {
            slot = self.avoid(slot, attempt.tried());
        }
        let Slot {
            mut inflight,
            mut service,
            picked_at,
            ..
        } = slot;
        inflight.start(picked_at.unwrap_or_else(|| self.shared.fleet.common.now()));
        ResponseFuture::new(service.call(req), inflight, self.classify.clone())
    }
}

impl<K: PartialEq, S, C, A, H> Balance<K, S, C, A, H> {
    /// The slot a request with hash key `key` goes to: the first endpoint clockwise from the
    /// key on the ring that is admitted, under its load bound and whose service is ready at
    /// once (`slot` itself when its endpoint is that one); `slot` when none is.
    ///
    /// Readiness, as in [`avoid`](Self::avoid): a replacement's service clone is polled with a
    /// no-op waker and used only if ready at once; otherwise it is dropped, giving back its
    /// reservation, and the walk goes on. No allocation: a binary search and a walk over the
    /// snapshot's ring.
    fn hashed<R>(&mut self, slot: Slot<S>, key: u64) -> Slot<S>
    where
        S: Service<R> + Clone,
    {
        let fleet = &self.shared.fleet;
        let snap = fleet.load();
        let Some(ring) = snap.ring.as_ref().filter(|r| !r.is_empty()) else {
            return slot;
        };
        let now = fleet.common.now();
        let own = slot.inflight.core().id;
        let load_factor = fleet.common.load_factor;
        for ep in ring::bounded(&snap.endpoints, ring, key, own, now, load_factor) {
            if ep.core.id == own {
                return slot;
            }
            if !ep.core.reserve() {
                continue;
            }
            let inflight = InFlight::reserved(ep.handle());
            let mut service = ep.service.clone();
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Ok(())) = service.poll_ready(&mut cx) {
                tracing::trace!(from = own, to = ep.core.id, "request sent by its hash key");
                return Slot {
                    inflight,
                    service,
                    ready: true,
                    picked_at: Some(now),
                };
            }
            // Not ready at once: the dropped `inflight` and clone give back their reservations.
        }
        slot
    }

    /// The slot a request with the tried set `tried` goes to: `slot` unless its endpoint was
    /// tried and another admitted, untried endpoint's service is ready at once. Records the
    /// endpoint chosen in `tried`.
    ///
    /// Readiness: the replacement's service clone is polled here, with a no-op waker, and used
    /// only if it is ready at once; otherwise it is dropped (giving back whatever its
    /// `poll_ready` reserved) and the request keeps the endpoint `poll_ready` readied. A first
    /// attempt (nothing tried) only records its endpoint: a few atomics, no allocation.
    fn avoid<R>(&mut self, slot: Slot<S>, tried: &TriedEndpoints) -> Slot<S>
    where
        S: Service<R> + Clone,
    {
        let id = slot.inflight.core().id;
        if !tried.contains(id) {
            tried.record(id);
            return slot;
        }
        let fleet = &self.shared.fleet;
        let now = fleet.common.now();
        let snap = fleet.load();
        let untried = |ep: &&crate::sync::Arc<crate::endpoint::Endpoint<K, S>>| {
            ep.core.id != id && !tried.contains(ep.core.id) && ep.core.admitted(now)
        };
        let n = snap.endpoints.iter().filter(untried).count();
        if n == 0 {
            return slot;
        }
        let nth = |j: usize| {
            snap.endpoints
                .iter()
                .filter(untried)
                .nth(j)
                .expect("j is below the count of untried endpoints")
        };
        let Some(choice) = pick::choose_by(n, |j| &nth(j).core, now, &mut self.rng) else {
            return slot;
        };
        let ep = nth(choice.index);
        if !ep.core.reserve() {
            return slot;
        }
        let inflight = InFlight::reserved(ep.handle());
        let mut service = ep.service.clone();
        let mut cx = Context::from_waker(Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                tried.record(ep.core.id);
                tracing::trace!(
                    from = id,
                    to = ep.core.id,
                    "retry sent to an untried endpoint"
                );
                Slot {
                    inflight,
                    service,
                    ready: true,
                    picked_at: Some(now),
                }
            }
            // Not ready at once (or failing): keep the endpoint `poll_ready` readied; the
            // dropped `inflight` and clone give their reservations back.
            _ => slot,
        }
    }
}
