//! Plain-data configuration: [`RetryConfig`], with its [`BudgetConfig`], [`BackoffConfig`] and
//! optional [`HedgeConfig`].

use std::time::Duration;
use tollgate_core::attempt::MAX_TRIED;
use tollgate_core::error::ConfigError;

/// The most attempts (first try, retries and hedges together) one request may make.
pub const MAX_ATTEMPTS: u32 = MAX_TRIED as u32;

/// How the retry budget is sized: a share of the requests seen, with a floor per second, over a
/// sliding window. Retries and hedges both draw from it.
///
/// A retry or hedge is allowed while the retries and hedges already spent in the window are
/// fewer than `max(ratio * requests, min_per_second * window)`, requests being those counted
/// in the same window. The floor is a minimum, not an addition: a quiet service can retry up
/// to `min_per_second` times a second whatever its traffic, and once `ratio` of the traffic is
/// more than that, the floor no longer counts. So under a total outage the load on a busy
/// service grows by at most `ratio`, never by the number of attempts (as Envoy's retry budget
/// takes the larger of its `budget_percent` and `min_retry_concurrency`).
///
/// With the defaults (`0.1`, `10` per second, 10 s): up to 100 retries per 10 s below 1000
/// requests per 10 s (100 per second), and a tenth of the requests above.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per request seen in the window, as a fraction (`0.1`: one retry per ten
    /// requests). Finite, in `0.0..=10.0`. Default `0.1`.
    pub ratio: f64,
    /// The floor: retries allowed per second of the window whatever the traffic, so that a
    /// quiet service can still retry. A minimum, not added to `ratio`: the window allows
    /// `max(ratio * requests, min_per_second * window)`, the floor rounded up to a whole retry. Default `10` per second.
    pub min_per_second: u32,
    /// How far back requests and retries count. Split into 10 buckets; at least 10 ms, at most
    /// an hour. Default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.1,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Exponential backoff with full jitter: before retry `n` (1 for the first) the layer waits a
/// uniformly random time in `0..=min(max, base * 2^(n-1))` ("full jitter", see
/// <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>). A pushback from
/// the response (`Retry-After`, `grpc-retry-pushback-ms`) replaces it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// The cap of the first retry's wait. Default 25 ms. Zero retries at once.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub base: Duration,
    /// The largest wait. At least `base`. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
        }
    }
}

/// When to send a hedge: a second attempt while the first is still in flight.
///
/// The delay is learned: a [`percentile`](HedgeConfig::percentile) of the latencies of
/// successful attempts over the last [`window`](HedgeConfig::window), clamped to
/// `min_delay..=max_delay`, raised by up to as much again while most hedges lose (answer
/// after the attempt they hedged: the calls they went to were queued, not slow) and brought
/// back as they win. Until [`min_samples`](HedgeConfig::min_samples) latencies are known,
/// requests are not hedged. With `percentile: None` the delay is always `min_delay`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    /// Which latency percentile sets the delay, in `0.5..=1.0`, or `None` for a fixed delay of
    /// `min_delay`. Default `Some(0.95)`: about one request in twenty is hedged when the
    /// service is healthy, fewer when the budget says so.
    pub percentile: Option<f64>,
    /// The shortest delay, and the delay when `percentile` is `None`. Default 1 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_delay: Duration,
    /// The longest delay. At least `min_delay`. Default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_delay: Duration,
    /// Latencies needed in the window before the learned delay is used. At least 1. Default 20.
    pub min_samples: u32,
    /// How far back latencies count (two halves; the older is dropped as a new one starts).
    /// At least 10 ms. Default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            percentile: Some(0.95),
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(10),
            min_samples: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// Configuration of a [`RetryLayer`](crate::RetryLayer).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts per request, the first included (hedges count as attempts), in
    /// `1..=`[`MAX_ATTEMPTS`]. `1` turns retries (and hedging) off. Default 3.
    pub max_attempts: u32,
    /// The budget retries and hedges draw from, shared by every service the layer builds.
    pub budget: BudgetConfig,
    /// The wait before each retry.
    pub backoff: BackoffConfig,
    /// The longest pushback (`Retry-After`, `grpc-retry-pushback-ms`) the layer waits for; a
    /// longer one ends the retries and returns the answer to the caller. Default 10 s; at most
    /// an hour.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_pushback: Duration,
    /// Hedging, off (`None`) by default.
    pub hedge: Option<HedgeConfig>,
    /// Seed of the backoff jitter. `None` (the default) draws one per layer from the OS; set it
    /// for reproducible tests.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget: BudgetConfig::default(),
            backoff: BackoffConfig::default(),
            max_pushback: Duration::from_secs(10),
            hedge: None,
            seed: None,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const MIN_WINDOW: Duration = Duration::from_millis(10);

impl RetryConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: attempts outside
    /// `1..=`[`MAX_ATTEMPTS`], a budget ratio that is NaN, negative or above 10, a window
    /// shorter than 10 ms or longer than an hour, a backoff or hedge cap below its base, a
    /// backoff cap, hedge delay or `max_pushback` over an hour, a percentile outside
    /// `0.5..=1.0`, zero `min_samples`, or hedging with fewer than 2 attempts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!("{} is outside 1..={MAX_ATTEMPTS}", self.max_attempts),
            ));
        }
        let b = &self.budget;
        if !b.ratio.is_finite() || !(0.0..=10.0).contains(&b.ratio) {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("{} is outside 0.0..=10.0", b.ratio),
            ));
        }
        window("budget.window", b.window)?;
        if self.backoff.max < self.backoff.base {
            return Err(ConfigError::new(
                "backoff.max",
                format!(
                    "{:?} is below backoff.base ({:?})",
                    self.backoff.max, self.backoff.base
                ),
            ));
        }
        if self.backoff.max > HOUR {
            return Err(ConfigError::new("backoff.max", "must be at most an hour"));
        }
        if self.max_pushback > HOUR {
            return Err(ConfigError::new(
                "max_pushback",
                format!("{:?} is more than an hour", self.max_pushback),
            ));
        }
        if let Some(h) = &self.hedge {
            if self.max_attempts < 2 {
                return Err(ConfigError::new(
                    "max_attempts",
                    "must be at least 2 with hedging on",
                ));
            }
            if let Some(p) = h.percentile
                && (p.is_nan() || !(0.5..=1.0).contains(&p))
            {
                return Err(ConfigError::new(
                    "hedge.percentile",
                    format!("{p} is outside 0.5..=1.0"),
                ));
            }
            if h.max_delay < h.min_delay {
                return Err(ConfigError::new(
                    "hedge.max_delay",
                    format!(
                        "{:?} is below hedge.min_delay ({:?})",
                        h.max_delay, h.min_delay
                    ),
                ));
            }
            if h.max_delay > HOUR {
                return Err(ConfigError::new(
                    "hedge.max_delay",
                    "must be at most an hour",
                ));
            }
            if h.min_samples == 0 {
                return Err(ConfigError::new("hedge.min_samples", "must be at least 1"));
            }
            window("hedge.window", h.window)?;
        }
        Ok(())
    }
}

fn window(field: &'static str, w: Duration) -> Result<(), ConfigError> {
    if w < MIN_WINDOW || w > HOUR {
        return Err(ConfigError::new(
            field,
            format!("{w:?} is outside 10ms..=1h"),
        ));
    }
    Ok(())
}
