//! A cluster's layers: breaker (whole cluster), pool (adaptive in-flight limit), balance (P2C
//! over peak-EWMA with ejection, health checks and slow start) and a breaker per endpoint, as
//! config sections and as the tower stack built from them.
//!
//! Any of these sections on a cluster turns on the stack; its balancer is then always the
//! latency-aware P2C one (with the `[clusters.balance]` section's settings, or the defaults),
//! hashing a header, cookie or the path to pick the endpoint when `[clusters.balance] hash`
//! names one.

use super::UpRequest;
use super::health::HttpHealthCheck;
use super::retry::{Retried, RetryPolicy};
use super::upstream::Upstream;
use crate::config::retry::RetrySection;
use crate::config::{ClusterConfig, ConfigError, UpstreamProtocol};
use crate::pool::{Settings, SharedSettings};
use crate::stats::{EndpointStats, clock_ms};
use crate::tls::upstream::ClusterTls;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tollgate_balance::{AvoidTried, Balance, BalanceHandle, HttpKey};
use tollgate_breaker::{Breaker, BreakerHandle, BreakerLayer};
use tollgate_core::classify::ServerErrorsAreFailures;
use tollgate_pool::{Limiter, PoolSizer};
use tower::util::Either;
use tower::{Layer, ServiceExt};

/// The classifier every gateway layer uses: an error or a 5xx answer is a failure.
pub(crate) type Cls = ServerErrorsAreFailures;

/// One endpoint: its breaker (when `endpoint_breaker` is set) over the upstream.
pub(crate) type EndpointSvc = Either<Breaker<Upstream, Cls>, Upstream>;
/// The cluster's balancer over its endpoints; a retry or hedge avoids the endpoints its request
/// already tried (the `Attempt` that `stack::retry` puts in each try's extensions). With
/// `[clusters.balance] hash = { header | cookie | path }`, requests with the same key go to the
/// same endpoint within the load bound (`None`: no key, every request by P2C).
pub(crate) type Balanced = Balance<SocketAddr, EndpointSvc, Cls, AvoidTried, Option<HttpKey>>;
/// The adaptive limit over the balancer, when `pool` is set.
pub(crate) type Pooled = Either<PoolSizer<Balanced, Cls>, Balanced>;
/// The cluster breaker over the rest, when `breaker` is set.
pub(crate) type ClusterSvc = Either<Breaker<Pooled, Cls>, Pooled>;

pub(crate) use crate::config::cluster::{BalanceConfig, BreakerConfig, HealthCheck, PoolConfig};
use crate::config::cluster::{for_endpoint, layer_error, named};

/// A breaker state change, as the dashboard shows it.
#[derive(Debug, Clone, Copy)]
struct Change {
    from: tollgate_breaker::State,
    to: tollgate_breaker::State,
    /// When, on [`clock_ms`]'s scale: a fixed value, so that a kept stack's `/state` stays
    /// equal to itself (the page subtracts it from the document's `clock_ms`).
    at_ms: u64,
}

fn state_name(s: tollgate_breaker::State) -> String {
    format!("{s:?}").to_lowercase()
}

/// What decides whether a built stack can be kept across a reload: every setting it was built
/// from.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    balance: Option<BalanceConfig>,
    health_check: Option<HealthCheck>,
    breaker: Option<BreakerConfig>,
    endpoint_breaker: Option<BreakerConfig>,
    pool: Option<PoolConfig>,
    retry: Option<RetrySection>,
    protocol: UpstreamProtocol,
    /// [`ClusterTls::id`]: the TLS settings and the contents of their files.
    tls: Option<u64>,
}

/// A cluster's built stack and the handles that look into it. Kept across reloads (with its
/// breaker, limit, latency and ejection state) while the cluster keeps its name and settings.
#[derive(Debug)]
pub(crate) struct ClusterLayers {
    key: Key,
    name: String,
    svc: ClusterSvc,
    balance: BalanceHandle<SocketAddr, EndpointSvc>,
    breaker: Option<BreakerHandle>,
    endpoint_breakers: Mutex<Vec<(SocketAddr, BreakerHandle)>>,
    limiter: Option<Limiter>,
    /// The balancer's hash key, when `[clusters.balance] hash` names one.
    hash: Option<HttpKey>,
    /// The retry policy and the stack under its retry layer, when `retry` is set.
    retry: Option<(RetryPolicy, Retried<ClusterSvc>)>,
    /// The cluster breaker's last state change (written by its callback, rare).
    last_change: Arc<Mutex<Option<Change>>>,
    health: Mutex<Option<tokio::task::JoinHandle<()>>>,
    settings: Arc<SharedSettings>,
    tls: Option<Arc<ClusterTls>>,
}

impl ClusterLayers {
    /// Whether `cc` asks for a stack at all.
    pub(crate) fn wanted(cc: &ClusterConfig) -> bool {
        cc.balance.is_some()
            || cc.health_check.is_some()
            || cc.breaker.is_some()
            || cc.endpoint_breaker.is_some()
            || cc.pool.is_some()
            || cc.retry.is_some()
    }

    /// Builds the stack of `cc`, or keeps `old` when it was built from the same settings.
    ///
    /// # Errors
    /// A layer refused its configuration (validation should have caught it first).
    pub(crate) fn build(
        cc: &ClusterConfig,
        settings: Settings,
        tls: Option<Arc<ClusterTls>>,
        old: Option<&Arc<ClusterLayers>>,
    ) -> Result<Arc<Self>, ConfigError> {
        let key = Key {
            balance: cc.balance.clone(),
            health_check: cc.health_check.clone(),
            breaker: cc.breaker.clone(),
            endpoint_breaker: cc.endpoint_breaker.clone(),
            pool: cc.pool.clone(),
            retry: cc.retry.clone(),
            protocol: cc.protocol,
            tls: tls.as_ref().map(|t| t.id()),
        };
        if let Some(old) = old.filter(|o| o.key == key) {
            // The global timeouts may have changed: the kept endpoints read them on each call.
            old.settings.store(settings);
            return Ok(old.clone());
        }
        let at = |f: &str| format!("clusters.{}.{f}", cc.name);
        let layer_err = |f: &str, e: tollgate_core::error::ConfigError| layer_error(&at(f), &e);
        let balance_cfg = key.balance.clone().unwrap_or_default();
        let hash = HttpKey::from_config(&balance_cfg.hash).map_err(|e| layer_err("balance", e))?;
        let balanced: Balanced = Balance::new(std::iter::empty(), balance_cfg)
            .map_err(|e| layer_err("balance", e))?
            .with_classifier(Cls::default())
            .avoid_tried()
            .hash_with(hash.clone());
        let handle = balanced.handle();
        let (pooled, limiter) = match &key.pool {
            Some(p) => {
                let limiter = Limiter::new(p.clone()).map_err(|e| layer_err("pool", e))?;
                let svc = PoolSizer::new(balanced, limiter.clone(), Cls::default());
                (Either::Left(svc), Some(limiter))
            }
            None => (Either::Right(balanced), None),
        };
        let last_change: Arc<Mutex<Option<Change>>> = Arc::default();
        let (svc, breaker) = match &key.breaker {
            Some(b) => {
                let last = last_change.clone();
                let layer = BreakerLayer::new(named(b, &cc.name))
                    .map_err(|e| layer_err("breaker", e))?
                    .with_classifier(Cls::default())
                    .on_state_change(move |c| {
                        let change = Change {
                            from: c.from,
                            to: c.to,
                            at_ms: clock_ms(),
                        };
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(change);
                    });
                let handle = layer.handle();
                (Either::Left(layer.layer(pooled)), Some(handle))
            }
            None => (Either::Right(pooled), None),
        };
        let retry = key
            .retry
            .as_ref()
            .map(RetryPolicy::new)
            .transpose()
            .map_err(|e| layer_err("retry", e))?
            .map(|policy| {
                let retried = policy.wrap(svc.clone());
                (policy, retried)
            });
        Ok(Arc::new(Self {
            name: cc.name.clone(),
            key,
            svc,
            balance: handle,
            breaker,
            endpoint_breakers: Mutex::new(Vec::new()),
            limiter,
            hash,
            retry,
            last_change,
            health: Mutex::new(None),
            settings: Arc::new(SharedSettings::new(settings)),
            tls,
        }))
    }

    /// Makes the balancer's endpoint set equal `addrs`: new ones are added (with their own
    /// breaker when `endpoint_breaker` is set), gone ones removed; kept ones keep their state.
    pub(crate) fn sync_endpoints(&self, endpoints: &[(SocketAddr, Arc<EndpointStats>)]) {
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|(a, _)| *a).collect();
        let mut breakers = self
            .endpoint_breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let have: Vec<SocketAddr> = self.balance.endpoints().iter().map(|e| e.key).collect();
        for gone in have.iter().filter(|a| !addrs.contains(a)) {
            self.balance.remove(gone);
            breakers.retain(|(a, _)| a != gone);
        }
        for (addr, stats) in endpoints.iter().filter(|(a, _)| !have.contains(a)) {
            let addr = *addr;
            let up = Upstream::new(
                addr,
                self.key.protocol,
                self.tls.clone(),
                self.settings.clone(),
                self.limiter.clone(),
                Some(stats.clone()),
            );
            match &self.key.endpoint_breaker {
                Some(b) => {
                    let Ok(layer) = BreakerLayer::new(for_endpoint(b, &self.name, addr)) else {
                        continue;
                    };
                    let layer = layer.with_classifier(Cls::default());
                    let handle = layer.handle();
                    let svc = Either::Left(layer.layer(up));
                    if self
                        .balance
                        .insert_with_signal(addr, svc, 1.0, handle.clone())
                        .is_ok()
                    {
                        breakers.push((addr, handle));
                    }
                }
                None => self.balance.insert(addr, Either::Right(up)),
            }
        }
    }

    /// Starts the active health checks on the current runtime (the control thread's) unless
    /// they run already; returns the new task's abort handle, so the caller can stop it once
    /// this stack leaves the current snapshot (a worker may hold the old snapshot a while).
    pub(crate) fn ensure_health_checks(&self) -> Option<tokio::task::AbortHandle> {
        let h = self.key.health_check.clone()?;
        let mut task = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return None;
        }
        let check = HttpHealthCheck::new(h.path.clone(), self.key.protocol, self.tls.clone());
        let handle = tokio::spawn(self.balance.health_checks(check));
        let abort = handle.abort_handle();
        *task = Some(handle);
        Some(abort)
    }

    /// The retry policy and the stack under its retry layer, when `[clusters.retry]` is set.
    pub(crate) fn retried(&self) -> Option<(&RetryPolicy, &Retried<ClusterSvc>)> {
        self.retry.as_ref().map(|(p, r)| (p, r))
    }

    /// The balancer's hash key: what a request must carry to the stack (its field, or its
    /// path) to be hashed.
    pub(crate) fn hash(&self) -> Option<&HttpKey> {
        self.hash.as_ref()
    }

    /// The stack under the cluster's retry layer (a route's `[routes.retry]` wraps it).
    pub(crate) fn stack(&self) -> &ClusterSvc {
        &self.svc
    }

    /// The cluster's `[clusters.retry]` section and its policy, when set.
    pub(crate) fn retry(&self) -> Option<(&RetrySection, &RetryPolicy)> {
        self.key
            .retry
            .as_ref()
            .zip(self.retry.as_ref().map(|(p, _)| p))
    }

    /// Sends `req` through the stack (retrying when configured and allowed).
    pub(crate) fn send(&self, req: UpRequest) -> ClusterCall {
        send_through(self.retry.as_ref(), &self.svc, req)
    }

    /// The stack's state for `/state`.
    pub(crate) fn state(&self) -> serde_json::Value {
        let breakers = self
            .endpoint_breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let endpoints: Vec<serde_json::Value> = self
            .balance
            .endpoints()
            .into_iter()
            .map(|e| {
                let breaker = breakers
                    .iter()
                    .find(|(a, _)| *a == e.key)
                    .map(|(_, h)| format!("{:?}", h.state()).to_lowercase());
                serde_json::json!({
                    "addr": e.key.to_string(),
                    "state": format!("{:?}", e.state).to_lowercase(),
                    "latency_ms": e.latency.as_secs_f64() * 1e3,
                    "in_flight": e.in_flight,
                    "breaker": breaker,
                })
            })
            .collect();
        serde_json::json!({
            "balance": {
                "endpoints": endpoints,
                "ejected": self.balance.ejected(),
                "panic": self.balance.is_panicking(),
            },
            "breaker": self.breaker.as_ref().map(|h| {
                let s = h.snapshot();
                let last = *self.last_change.lock().unwrap_or_else(|p| p.into_inner());
                serde_json::json!({
                    "state": state_name(s.state),
                    "last_change": last.map(|c| serde_json::json!({
                        "from": state_name(c.from),
                        "to": state_name(c.to),
                        "at_ms": c.at_ms,
                    })),
                    "failure_rate": s.failure_rate,
                    "slow_call_rate": s.slow_call_rate,
                    "calls": s.calls,
                })
            }),
            "pool": self.limiter.as_ref().map(|l| serde_json::json!({
                "limit": l.limit(),
                "in_flight": l.in_flight(),
            })),
            "retry": self.retry.as_ref().map(|(p, _)| p.state()),
        })
    }

    /// Records the stack's gauges and counters, labelled `cluster`, into the current
    /// `metrics` recorder (the admin page's, while `/metrics` renders).
    pub(crate) fn record_metrics(&self) {
        let c = self.name.clone();
        let open = |h: &BreakerHandle| {
            f64::from(u8::from(matches!(
                h.state(),
                tollgate_breaker::State::Open | tollgate_breaker::State::ForcedOpen
            )))
        };
        if let Some(h) = &self.breaker {
            metrics::gauge!("tollgate_cluster_breaker_open", "cluster" => c.clone()).set(open(h));
            // One series per state, 1 for the current one (half-open and disabled too, which
            // the open gauge reads as 0), as resilience4j's state metric does.
            let now = h.state();
            for (state, name) in [
                (tollgate_breaker::State::Closed, "closed"),
                (tollgate_breaker::State::Open, "open"),
                (tollgate_breaker::State::HalfOpen, "half_open"),
                (tollgate_breaker::State::ForcedOpen, "forced_open"),
                (tollgate_breaker::State::Disabled, "disabled"),
            ] {
                metrics::gauge!(
                    "tollgate_cluster_breaker_state",
                    "cluster" => c.clone(),
                    "state" => name
                )
                .set(f64::from(u8::from(now == state)));
            }
        }
        if let Some(l) = &self.limiter {
            metrics::gauge!("tollgate_cluster_pool_limit", "cluster" => c.clone())
                .set(l.limit() as f64);
            metrics::gauge!("tollgate_cluster_pool_in_flight", "cluster" => c.clone())
                .set(l.in_flight() as f64);
        }
        metrics::gauge!("tollgate_cluster_endpoints_ejected", "cluster" => c.clone())
            .set(self.balance.ejected() as f64);
        for e in self.balance.endpoints() {
            metrics::gauge!(
                "tollgate_endpoint_latency_seconds",
                "cluster" => c.clone(),
                "endpoint" => e.key.to_string()
            )
            .set(e.latency.as_secs_f64());
        }
        let breakers = self
            .endpoint_breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (addr, h) in breakers.iter() {
            metrics::gauge!(
                "tollgate_endpoint_breaker_open",
                "cluster" => c.clone(),
                "endpoint" => addr.to_string()
            )
            .set(open(h));
        }
        if let Some((r, _)) = &self.retry {
            r.record_metrics(&c);
        }
    }
}

/// Sends `req` through `retry` (a policy and the stack under its retry layer) when set, else
/// straight through `stack`. The retried way is boxed on its own (its retry state would make
/// every request's future larger; futures are moved a few times per request); the straight
/// way is not boxed at all, so a request with no retries allocates nothing here.
pub(crate) fn send_through(
    retry: Option<&(RetryPolicy, Retried<ClusterSvc>)>,
    stack: &ClusterSvc,
    req: UpRequest,
) -> ClusterCall {
    match retry {
        Some((policy, retried)) => {
            let (policy, retried) = (policy.clone(), retried.clone());
            ClusterCall::Boxed {
                fut: Box::pin(async move { policy.send(retried, req).await }),
            }
        }
        None => ClusterCall::Direct {
            fut: stack.clone().oneshot(req),
        },
    }
}

pin_project_lite::pin_project! {
    /// The answer of a cluster's stack: its own future when the request goes straight through
    /// the layers, a boxed one otherwise (retries, or a cluster without layers).
    #[project = ClusterCallProj]
    pub(crate) enum ClusterCall {
        /// Straight through the layers.
        Direct { #[pin] fut: tower::util::Oneshot<ClusterSvc, UpRequest> },
        /// Anything else.
        Boxed { fut: super::BoxFuture },
    }
}

impl ClusterCall {
    /// A boxed future as a cluster's answer.
    pub(crate) fn boxed(fut: super::BoxFuture) -> Self {
        Self::Boxed { fut }
    }
}

impl std::future::Future for ClusterCall {
    type Output = Result<super::UpResponse, tower::BoxError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            ClusterCallProj::Direct { fut } => fut.poll(cx),
            ClusterCallProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
