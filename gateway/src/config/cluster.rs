//! The cluster sections: `[clusters.breaker]`, `[clusters.endpoint_breaker]`,
//! `[clusters.pool]` and `[clusters.balance]` (with `outlier` and `health`), their defaults,
//! their validation (naming the field), and the layer configurations built from them.

use super::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tollgate_balance::{BalanceConfig, HealthConfig, OutlierConfig};
use tollgate_breaker::{Backoff, BreakerConfig, SlidingWindow};
use tollgate_pool::algorithm::{
    AimdConfig, AlgorithmConfig, Gradient2Config, KneeConfig, VegasConfig,
};
use tollgate_pool::{AtLimit, PoolConfig};

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
    /// Knee (the default): Little's law against a baseline measured on requests that could
    /// not have queued; needs no tuning for the workload (see tollgate-pool).
    #[default]
    Knee,
    /// TCP Vegas: grows while latency stays at its baseline.
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
    /// How the limit learns: `knee`, `vegas`, `aimd` or `gradient2`. Default `knee`.
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
            algorithm: PoolAlgorithm::Knee,
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
                PoolAlgorithm::Knee => AlgorithmConfig::Knee(KneeConfig::default()),
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
