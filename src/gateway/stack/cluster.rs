//! A cluster's layers: breaker (whole cluster), pool (adaptive in-flight limit), balance (P2C
//! over peak-EWMA with ejection, health checks and slow start) and a breaker per endpoint, as
//! config sections and as the tower stack built from them.
//!
//! Any of these sections on a cluster turns on the stack; its balancer is then always the
//! latency-aware P2C one (with the `[clusters.balance]` section's settings, or the defaults).

use super::health::HttpHealthCheck;
use super::retry::{RetryPolicy, RetrySection};
use super::upstream::Upstream;
use super::{UpRequest, UpResponse};
use crate::gateway::config::{ClusterConfig, ConfigError, UpstreamProtocol};
use crate::gateway::pool::Settings;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig, BalanceHandle, HealthConfig, OutlierConfig};
use tollgate_breaker::{
    Backoff, Breaker, BreakerConfig, BreakerHandle, BreakerLayer, SlidingWindow,
};
use tollgate_core::BoxError;
use tollgate_core::classify::ServerErrorsAreFailures;
use tollgate_pool::algorithm::{AimdConfig, AlgorithmConfig, Gradient2Config, VegasConfig};
use tollgate_pool::{AtLimit, Limiter, PoolConfig, PoolSizer};
use tower::util::Either;
use tower::{Layer, ServiceExt};

/// The classifier every gateway layer uses: an error or a 5xx answer is a failure.
pub type Cls = ServerErrorsAreFailures;

/// One endpoint: its breaker (when `endpoint_breaker` is set) over the upstream.
pub type EndpointSvc = Either<Breaker<Upstream, Cls>, Upstream>;
/// The cluster's balancer over its endpoints.
pub type Balanced = Balance<SocketAddr, EndpointSvc, Cls>;
/// The adaptive limit over the balancer, when `pool` is set.
pub type Pooled = Either<PoolSizer<Balanced, Cls>, Balanced>;
/// The cluster breaker over the rest, when `breaker` is set.
pub type ClusterSvc = Either<Breaker<Pooled, Cls>, Pooled>;

pub use super::retry::RetryOn;

/// `[clusters.breaker]` and `[clusters.endpoint_breaker]`: a circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Failure rate that opens the breaker, percent of the calls in the window. Default 50.
    pub failure_rate: f64,
    /// Calls the window must hold before a rate can open it. Default 20.
    pub minimum_calls: u32,
    /// Count window: the last this many calls. Default 100. Ignored when `window_ms` is set.
    pub window: u32,
    /// Time window instead: the calls of the last this many ms (10 buckets). Default 0 (off).
    pub window_ms: u64,
    /// A call slower than this is slow, ms. Default 0 (slow calls are not tracked).
    pub slow_call_ms: u64,
    /// Slow-call rate that opens the breaker, percent. Default 100.
    pub slow_call_rate: f64,
    /// This many failures in a row open the breaker whatever the rate. Default 0 (off).
    pub consecutive_failures: u32,
    /// How long the breaker stays open before probing, ms. Default 5000.
    pub wait_in_open_ms: u64,
    /// When above `wait_in_open_ms`, each failed probe round doubles the wait up to this, ms.
    /// Default 0 (no backoff).
    pub max_wait_in_open_ms: u64,
    /// Probe calls let through while half-open. Default 3.
    pub half_open_calls: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            failure_rate: 50.0,
            minimum_calls: 20,
            window: 100,
            window_ms: 0,
            slow_call_ms: 0,
            slow_call_rate: 100.0,
            consecutive_failures: 0,
            wait_in_open_ms: 5_000,
            max_wait_in_open_ms: 0,
            half_open_calls: 3,
        }
    }
}

impl BreakerSection {
    /// The breaker's configuration, named `name`.
    pub fn to_config(&self, name: &str) -> BreakerConfig {
        BreakerConfig {
            name: name.to_owned(),
            sliding_window: if self.window_ms > 0 {
                SlidingWindow::Time {
                    length: Duration::from_millis(self.window_ms),
                    buckets: 10,
                }
            } else {
                SlidingWindow::Count { size: self.window }
            },
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate / 100.0,
            slow_call_rate_threshold: self.slow_call_rate / 100.0,
            slow_call_duration: (self.slow_call_ms > 0)
                .then(|| Duration::from_millis(self.slow_call_ms)),
            consecutive_failures: (self.consecutive_failures > 0)
                .then_some(self.consecutive_failures),
            wait_in_open: Duration::from_millis(self.wait_in_open_ms),
            backoff: (self.max_wait_in_open_ms > self.wait_in_open_ms).then(|| Backoff {
                max_wait: Duration::from_millis(self.max_wait_in_open_ms),
                ..Backoff::default()
            }),
            permitted_calls_in_half_open: self.half_open_calls,
            seed: None,
        }
    }

    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        for (f, v) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return e(f, "must be a percentage above 0 and at most 100");
            }
        }
        if self.window_ms == 0 && self.window == 0 {
            return e("window", "must be at least 1 call");
        }
        if self.window_ms > 0 && !(100..=3_600_000).contains(&self.window_ms) {
            return e(
                "window_ms",
                "must be between 100 and 3600000 ms (or 0 for a count window)",
            );
        }
        if !(1..=3_600_000).contains(&self.wait_in_open_ms) {
            return e("wait_in_open_ms", "must be between 1 and 3600000 ms");
        }
        if self.max_wait_in_open_ms > 86_400_000 {
            return e("max_wait_in_open_ms", "must be at most 86400000 ms");
        }
        self.to_config("x").validate().map_err(|err| {
            let field = match err.field() {
                "sliding_window" | "sliding_window.size" => "window",
                "minimum_calls" => "minimum_calls",
                "permitted_calls_in_half_open" => "half_open_calls",
                "consecutive_failures" => "consecutive_failures",
                _ => "(section)",
            };
            ConfigError::new(format!("{at}.{field}"), err.problem())
        })
    }
}

/// The limit algorithm of `[clusters.pool]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolAlgorithm {
    /// TCP Vegas: grows while latency stays at its baseline (the default).
    #[default]
    Vegas,
    /// Additive increase, multiplicative decrease on failures and timeouts.
    Aimd,
    /// Netflix's Gradient2: long- versus short-term latency.
    Gradient2,
}

/// `[clusters.pool]`: an adaptive limit on requests in flight to the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// How the limit learns. Default `vegas`.
    pub algorithm: PoolAlgorithm,
    /// Lowest limit, requests. Default 4.
    pub min_limit: usize,
    /// Highest limit, requests. Default 1000.
    pub max_limit: usize,
    /// Limit at start, requests. Default 32.
    pub initial_limit: usize,
    /// A request over the limit waits this long for a slot before 503, ms. Default 0 (503 at
    /// once).
    pub max_wait_ms: u64,
}

impl Default for PoolSection {
    fn default() -> Self {
        Self {
            algorithm: PoolAlgorithm::Vegas,
            min_limit: 4,
            max_limit: 1000,
            initial_limit: 32,
            max_wait_ms: 0,
        }
    }
}

impl PoolSection {
    /// The limiter's configuration.
    pub fn to_config(&self) -> PoolConfig {
        PoolConfig {
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            initial_limit: self.initial_limit,
            at_limit: if self.max_wait_ms == 0 {
                AtLimit::Reject
            } else {
                AtLimit::Wait {
                    max_wait: Duration::from_millis(self.max_wait_ms),
                }
            },
            algorithm: match self.algorithm {
                PoolAlgorithm::Vegas => AlgorithmConfig::Vegas(VegasConfig::default()),
                PoolAlgorithm::Aimd => AlgorithmConfig::Aimd(AimdConfig::default()),
                PoolAlgorithm::Gradient2 => AlgorithmConfig::Gradient2(Gradient2Config::default()),
            },
            ..PoolConfig::default()
        }
    }

    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        if self.min_limit == 0 {
            return e("min_limit", "must be at least 1");
        }
        if self.max_limit > 1_000_000 {
            return e("max_limit", "must be at most 1000000");
        }
        if self.max_limit < self.min_limit {
            return e("max_limit", "must be at least min_limit");
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return e("initial_limit", "must be between min_limit and max_limit");
        }
        if self.max_wait_ms > 3_600_000 {
            return e("max_wait_ms", "must be at most 3600000 ms");
        }
        self.to_config()
            .validate()
            .map_err(|err| ConfigError::new(format!("{at}.{}", err.field()), err.problem()))
    }
}

/// `[clusters.balance.outlier]`: passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// Failures in a row that eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// First ejection time, ms; it grows with each ejection of the same endpoint. Default 30000.
    pub base_ejection_ms: u64,
    /// Longest ejection, ms. Default 300000.
    pub max_ejection_ms: u64,
    /// Most endpoints ejected at once, percent of the cluster. Default 50.
    pub max_ejection_percent: f64,
}

impl Default for OutlierSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50.0,
        }
    }
}

/// `[clusters.balance.health]`: active HTTP health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Path requested with `GET`; a 2xx answer passes. Default `/healthz`.
    pub path: String,
    /// Time between checks of an endpoint, ms. Default 1000.
    pub interval_ms: u64,
    /// A check without an answer within this fails, ms. Default 500.
    pub timeout_ms: u64,
    /// Failed checks in a row that take an endpoint out of rotation. Default 3.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back. Default 2.
    pub healthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
            interval_ms: 1_000,
            timeout_ms: 500,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// `[clusters.balance]`: latency-aware power-of-two-choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSection {
    /// Half-life of the peak-EWMA latency estimate, ms. Default 10000.
    pub decay_ms: u64,
    /// Latency assumed for an endpoint not measured yet, ms. Default 30. Set it near the
    /// cluster's real latency: far above it, a new endpoint waits long for its first request
    /// under light load; far below, it gets a burst.
    pub default_rtt_ms: u64,
    /// New and readmitted endpoints ramp up their share over this long, ms. Default 0 (off).
    pub slow_start_ms: u64,
    /// Below this share of endpoints in rotation the balancer ignores ejections and health
    /// (panic mode), percent. Default 50.
    pub panic_threshold: f64,
    /// Passive outlier ejection.
    pub outlier: OutlierSection,
    /// Active health checks. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSection>,
    /// Seed of the pick's randomness, for repeatable tests. Default none (random).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for BalanceSection {
    fn default() -> Self {
        Self {
            decay_ms: 10_000,
            default_rtt_ms: 30,
            slow_start_ms: 0,
            panic_threshold: 50.0,
            outlier: OutlierSection::default(),
            health: None,
            seed: None,
        }
    }
}

impl BalanceSection {
    /// The balancer's configuration.
    pub fn to_config(&self) -> BalanceConfig {
        let o = &self.outlier;
        let h = self.health.clone().unwrap_or_default();
        BalanceConfig {
            decay: Duration::from_millis(self.decay_ms),
            default_rtt: Duration::from_millis(self.default_rtt_ms),
            slow_start: Duration::from_millis(self.slow_start_ms),
            panic_threshold: self.panic_threshold / 100.0,
            outlier: OutlierConfig {
                consecutive_failures: o.consecutive_failures,
                base_ejection_time: Duration::from_millis(o.base_ejection_ms),
                max_ejection_time: Duration::from_millis(o.max_ejection_ms),
                max_ejection_share: o.max_ejection_percent / 100.0,
                ..OutlierConfig::default()
            },
            health: HealthConfig {
                interval: Duration::from_millis(h.interval_ms),
                timeout: Duration::from_millis(h.timeout_ms),
                unhealthy_threshold: h.unhealthy_threshold,
                healthy_threshold: h.healthy_threshold,
            },
            seed: self.seed,
            ..BalanceConfig::default()
        }
    }

    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        if !(1..=3_600_000).contains(&self.decay_ms) {
            return e("decay_ms", "must be between 1 and 3600000 ms");
        }
        if !(1..=600_000).contains(&self.default_rtt_ms) {
            return e("default_rtt_ms", "must be between 1 and 600000 ms");
        }
        if self.slow_start_ms > 3_600_000 {
            return e("slow_start_ms", "must be at most 3600000 ms");
        }
        if !(0.0..=100.0).contains(&self.panic_threshold) {
            return e("panic_threshold", "must be a percentage from 0 to 100");
        }
        let o = &self.outlier;
        if !(0.0..=100.0).contains(&o.max_ejection_percent) {
            return e(
                "outlier.max_ejection_percent",
                "must be a percentage from 0 to 100",
            );
        }
        if o.base_ejection_ms == 0 || o.base_ejection_ms > 86_400_000 {
            return e(
                "outlier.base_ejection_ms",
                "must be between 1 and 86400000 ms",
            );
        }
        if o.max_ejection_ms < o.base_ejection_ms || o.max_ejection_ms > 86_400_000 {
            return e(
                "outlier.max_ejection_ms",
                "must be at least base_ejection_ms and at most 86400000 ms",
            );
        }
        if let Some(h) = &self.health {
            if !h.path.starts_with('/') || h.path.parse::<http::Uri>().is_err() {
                return e("health.path", "must be a path starting with /");
            }
            if !(10..=3_600_000).contains(&h.interval_ms) {
                return e("health.interval_ms", "must be between 10 and 3600000 ms");
            }
            if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                return e(
                    "health.timeout_ms",
                    "must be at least 1 ms and at most interval_ms",
                );
            }
            if h.unhealthy_threshold == 0 {
                return e("health.unhealthy_threshold", "must be at least 1");
            }
            if h.healthy_threshold == 0 {
                return e("health.healthy_threshold", "must be at least 1");
            }
        }
        self.to_config()
            .validate()
            .map_err(|err| ConfigError::new(at, format!("{}: {}", err.field(), err.problem())))
    }
}

/// What decides whether a built stack can be kept across a reload: every setting it was built
/// from.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    balance: Option<BalanceSection>,
    breaker: Option<BreakerSection>,
    endpoint_breaker: Option<BreakerSection>,
    pool: Option<PoolSection>,
    retry: Option<RetrySection>,
    protocol: UpstreamProtocol,
}

/// A cluster's built stack and the handles that look into it. Kept across reloads (with its
/// breaker, limit, latency and ejection state) while the cluster keeps its name and settings.
#[derive(Debug)]
pub struct ClusterLayers {
    key: Key,
    name: String,
    svc: ClusterSvc,
    balance: BalanceHandle<SocketAddr, EndpointSvc>,
    breaker: Option<BreakerHandle>,
    endpoint_breakers: Mutex<Vec<(SocketAddr, BreakerHandle)>>,
    limiter: Option<Limiter>,
    retry: Option<RetryPolicy>,
    health: Mutex<Option<tokio::task::JoinHandle<()>>>,
    settings: Arc<SharedSettings>,
}

/// Connection settings the endpoints read on each call, so a reload that only changes the
/// global timeouts keeps the stack (and its breaker, limit and latency state).
#[derive(Debug)]
pub struct SharedSettings {
    connect_ms: std::sync::atomic::AtomicU64,
    idle_ms: std::sync::atomic::AtomicU64,
}

impl From<Settings> for SharedSettings {
    fn from(s: Settings) -> Self {
        Self::new(s)
    }
}

impl SharedSettings {
    fn new(s: Settings) -> Self {
        let ms = |d: Duration| std::sync::atomic::AtomicU64::new(d.as_millis() as u64);
        Self {
            connect_ms: ms(s.connect_timeout),
            idle_ms: ms(s.idle_timeout),
        }
    }

    fn store(&self, s: Settings) {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: independent values; a request may start with the old one a moment longer.
        self.connect_ms
            .store(s.connect_timeout.as_millis() as u64, Relaxed);
        self.idle_ms
            .store(s.idle_timeout.as_millis() as u64, Relaxed);
    }

    /// The current settings (idle connections capped by `max_idle`).
    pub fn load(&self) -> Settings {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: see `store`.
        Settings {
            connect_timeout: Duration::from_millis(self.connect_ms.load(Relaxed)),
            idle_timeout: Duration::from_millis(self.idle_ms.load(Relaxed)),
            max_idle: crate::gateway::pool::MAX_IDLE_PER_ENDPOINT,
        }
    }
}

impl ClusterLayers {
    /// Whether `cc` asks for a stack at all.
    pub fn wanted(cc: &ClusterConfig) -> bool {
        cc.balance.is_some()
            || cc.breaker.is_some()
            || cc.endpoint_breaker.is_some()
            || cc.pool.is_some()
            || cc.retry.is_some()
    }

    /// Builds the stack of `cc`, or keeps `old` when it was built from the same settings.
    ///
    /// # Errors
    /// A layer refused its configuration (validation should have caught it first).
    pub fn build(
        cc: &ClusterConfig,
        settings: Settings,
        old: Option<&Arc<ClusterLayers>>,
    ) -> Result<Arc<Self>, ConfigError> {
        let key = Key {
            balance: cc.balance.clone(),
            breaker: cc.breaker.clone(),
            endpoint_breaker: cc.endpoint_breaker.clone(),
            pool: cc.pool.clone(),
            retry: cc.retry.clone(),
            protocol: cc.protocol,
        };
        if let Some(old) = old.filter(|o| o.key == key) {
            // The global timeouts may have changed: the kept endpoints read them on each call.
            old.settings.store(settings);
            return Ok(old.clone());
        }
        let at = |f: &str| format!("clusters.{}.{f}", cc.name);
        let layer_err =
            |f: &str, e: tollgate_core::error::ConfigError| ConfigError::new(at(f), e.to_string());
        let balance_cfg = key.balance.clone().unwrap_or_default().to_config();
        let balanced: Balanced = Balance::new(std::iter::empty(), balance_cfg)
            .map_err(|e| layer_err("balance", e))?
            .with_classifier(Cls::default());
        let handle = balanced.handle();
        let (pooled, limiter) = match &key.pool {
            Some(p) => {
                let limiter = Limiter::new(p.to_config()).map_err(|e| layer_err("pool", e))?;
                let svc = PoolSizer::new(balanced, limiter.clone(), Cls::default());
                (Either::Left(svc), Some(limiter))
            }
            None => (Either::Right(balanced), None),
        };
        let (svc, breaker) = match &key.breaker {
            Some(b) => {
                let layer = BreakerLayer::new(b.to_config(&cc.name))
                    .map_err(|e| layer_err("breaker", e))?
                    .with_classifier(Cls::default());
                let handle = layer.handle();
                (Either::Left(layer.layer(pooled)), Some(handle))
            }
            None => (Either::Right(pooled), None),
        };
        let retry = key.retry.as_ref().map(RetryPolicy::new);
        Ok(Arc::new(Self {
            name: cc.name.clone(),
            key,
            svc,
            balance: handle,
            breaker,
            endpoint_breakers: Mutex::new(Vec::new()),
            limiter,
            retry,
            health: Mutex::new(None),
            settings: Arc::new(SharedSettings::new(settings)),
        }))
    }

    /// Makes the balancer's endpoint set equal `addrs`: new ones are added (with their own
    /// breaker when `endpoint_breaker` is set), gone ones removed; kept ones keep their state.
    pub fn sync_endpoints(&self, addrs: &[SocketAddr]) {
        let mut breakers = self
            .endpoint_breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let have: Vec<SocketAddr> = self.balance.endpoints().iter().map(|e| e.key).collect();
        for gone in have.iter().filter(|a| !addrs.contains(a)) {
            self.balance.remove(gone);
            breakers.retain(|(a, _)| a != gone);
        }
        for &addr in addrs.iter().filter(|a| !have.contains(a)) {
            let up = Upstream::new(
                addr,
                self.key.protocol,
                self.settings.clone(),
                self.limiter.clone(),
            );
            match &self.key.endpoint_breaker {
                Some(b) => {
                    let name = format!("{}/{addr}", self.name);
                    let Ok(layer) = BreakerLayer::new(b.to_config(&name)) else {
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
    pub fn ensure_health_checks(&self) -> Option<tokio::task::AbortHandle> {
        let h = self.key.balance.as_ref().and_then(|b| b.health.clone())?;
        let mut task = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return None;
        }
        let check = HttpHealthCheck::new(h.path.clone(), self.key.protocol);
        let handle = tokio::spawn(self.balance.health_checks(check));
        let abort = handle.abort_handle();
        *task = Some(handle);
        Some(abort)
    }

    /// A fresh clone of the stack for one request.
    pub fn service(&self) -> ClusterSvc {
        self.svc.clone()
    }

    /// The retry policy, when `retry` is set.
    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Sends `req` through the stack (retrying when configured and allowed).
    pub async fn send(&self, req: UpRequest) -> Result<UpResponse, BoxError> {
        match &self.retry {
            Some(policy) => policy.send(self.svc.clone(), req).await,
            None => self.svc.clone().oneshot(req).await,
        }
    }

    /// The stack's state for `/state`.
    pub fn state(&self) -> serde_json::Value {
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
                serde_json::json!({
                    "state": format!("{:?}", s.state).to_lowercase(),
                    "failure_rate": s.failure_rate,
                    "slow_call_rate": s.slow_call_rate,
                    "calls": s.calls,
                })
            }),
            "pool": self.limiter.as_ref().map(|l| serde_json::json!({
                "limit": l.limit(),
                "in_flight": l.in_flight(),
            })),
            "retry": self.retry.as_ref().map(RetryPolicy::state),
        })
    }

    /// Records the stack's gauges and counters, labelled `cluster`, into the current
    /// `metrics` recorder (the admin page's, while `/metrics` renders).
    pub fn record_metrics(&self) {
        let c = self.name.clone();
        let open = |h: &BreakerHandle| {
            f64::from(u8::from(matches!(
                h.state(),
                tollgate_breaker::State::Open | tollgate_breaker::State::ForcedOpen
            )))
        };
        if let Some(h) = &self.breaker {
            metrics::gauge!("tollgate_cluster_breaker_open", "cluster" => c.clone()).set(open(h));
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
        if let Some(r) = &self.retry {
            r.record_metrics(&c);
        }
    }
}
