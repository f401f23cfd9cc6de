//! The breaker's configuration: plain data, resilience4j-like defaults, validated when a layer is
//! built.

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// The largest count window (which takes 8 bytes per call it holds, 16 with slow-call
/// detection). A time window's buckets have no such bound.
pub const MAX_WINDOW_CALLS: u32 = (1 << 21) - 1;
/// The most probes a half-open breaker can admit (10-bit counters).
pub const MAX_HALF_OPEN_CALLS: u32 = 1000;

/// Which calls the failure and slow-call rates are computed over.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)
)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlidingWindow {
    /// The last `size` calls, exactly (in the order their results were recorded).
    Count {
        /// How many calls the window holds, `1..=`[`MAX_WINDOW_CALLS`]. Default `100`.
        size: u32,
    },
    /// The calls that finished in the last `length`, split into `buckets` equal buckets that
    /// age out one at a time. Memory does not grow with the request rate. Each result reads the
    /// clock once, which on the machines measured cost more than the rest of the call.
    Time {
        /// How far back the window looks. Must be at least one nanosecond per bucket.
        #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
        length: Duration,
        /// How many buckets the window is split into, `1..=3600`.
        buckets: u32,
    },
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count { size: 100 }
    }
}

/// Exponential growth of the open wait when probes keep failing.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Each consecutive open lasts `multiplier` times the previous one. Finite, `>= 1.0`.
    /// Default `2.0`.
    pub multiplier: f64,
    /// The longest an open state lasts, jitter included. At least
    /// [`BreakerConfig::wait_in_open`]. Default 10 minutes.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_wait: Duration,
    /// Each wait is multiplied by a random factor in `1 - jitter ..= 1 + jitter` (then capped),
    /// so many breakers opened together do not probe together. `0.0..=1.0`. Default `0.1`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            multiplier: 2.0,
            max_wait: Duration::from_secs(600),
            jitter: 0.1,
        }
    }
}

/// Configuration of one circuit breaker.
///
/// The defaults follow resilience4j's `CircuitBreakerConfig`, except that slow-call detection is
/// off until [`slow_call_duration`](Self::slow_call_duration) is set: resilience4j's default (a
/// 100 % slow-call rate over 60 s) trips only when every call in the window took a minute, which
/// a timeout layer normally prevents, and measuring every call costs two clock reads.
///
/// ```
/// use std::time::Duration;
/// use tollgate_breaker::{BreakerConfig, SlidingWindow};
///
/// let config = BreakerConfig {
///     sliding_window: SlidingWindow::Time { length: Duration::from_secs(10), buckets: 10 },
///     minimum_calls: 20,
///     slow_call_duration: Some(Duration::from_millis(500)),
///     slow_call_rate_threshold: 0.8,
///     ..BreakerConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// A name for logs and state-change events. Default `"breaker"`.
    pub name: String,
    /// The window rates are computed over. Default: the last 100 calls.
    pub sliding_window: SlidingWindow,
    /// Calls the window must hold before a rate can trip the breaker, at least `1`. A count
    /// window never waits for more calls than it holds. Default `100`.
    pub minimum_calls: u32,
    /// The failure rate (`0.0..=1.0`) at or above which the breaker opens. Default `0.5`.
    pub failure_rate_threshold: f64,
    /// The slow-call rate (`0.0..=1.0`) at or above which the breaker opens, when slow-call
    /// detection is on. Default `1.0`.
    pub slow_call_rate_threshold: f64,
    /// A call that takes at least this long is slow. `None` (the default) turns slow-call
    /// detection off, and with it the clock reads that time each call.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_call_duration: Option<Duration>,
    /// Also open after this many failures in a row, whatever the window says (at least `1`).
    /// Default `None` (off).
    pub consecutive_failures: Option<u32>,
    /// How long the breaker stays open before it lets probes through. Default 60 s; more than
    /// zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub wait_in_open: Duration,
    /// Grow the open wait each time the probes fail. Default `None` (always `wait_in_open`).
    pub backoff: Option<Backoff>,
    /// Probes admitted in half-open, at most this many at once across every clone of the
    /// service; their results decide between closing and opening again.
    /// `1..=`[`MAX_HALF_OPEN_CALLS`]. Default `10`.
    pub permitted_calls_in_half_open: u32,
    /// Seed of the jitter's random numbers, for reproducible tests. Default `None` (random).
    pub seed: Option<u64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: String::from("breaker"),
            sliding_window: SlidingWindow::default(),
            minimum_calls: 100,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            consecutive_failures: None,
            wait_in_open: Duration::from_secs(60),
            backoff: None,
            permitted_calls_in_half_open: 10,
            seed: None,
        }
    }
}

fn rate(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_nan() {
        return Err(ConfigError::new(field, "is NaN"));
    }
    if !(0.0..=1.0).contains(&value) {
        return Err(ConfigError::new(
            field,
            format!("{value} is outside 0.0..=1.0"),
        ));
    }
    Ok(())
}

/// A threshold rate: a rate above zero (at zero every call would meet it, and the breaker would
/// open on a window of successes and never close).
fn threshold(field: &'static str, value: f64) -> Result<(), ConfigError> {
    rate(field, value)?;
    if value == 0.0 {
        return Err(ConfigError::new(
            field,
            "must be more than 0.0 (at 0.0 a window of successes would open the breaker)",
        ));
    }
    Ok(())
}

impl BreakerConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: a zero window or bucket count, a
    /// threshold rate of zero, outside `0.0..=1.0` or NaN, a zero probe count, minimum calls or
    /// wait, a backoff multiplier below 1, a cap below `wait_in_open`, a jitter outside
    /// `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.sliding_window {
            SlidingWindow::Count { size } => {
                if size == 0 || size > MAX_WINDOW_CALLS {
                    return Err(ConfigError::new(
                        "sliding_window.size",
                        format!("{size} is outside 1..={MAX_WINDOW_CALLS}"),
                    ));
                }
            }
            SlidingWindow::Time { length, buckets } => {
                if buckets == 0 || buckets > 3600 {
                    return Err(ConfigError::new(
                        "sliding_window.buckets",
                        format!("{buckets} is outside 1..=3600"),
                    ));
                }
                if length.as_nanos() < u128::from(buckets) {
                    return Err(ConfigError::new(
                        "sliding_window.length",
                        "must be at least one nanosecond per bucket",
                    ));
                }
                if length > Duration::from_secs(365 * 24 * 3600) {
                    return Err(ConfigError::new(
                        "sliding_window.length",
                        "must be at most a year",
                    ));
                }
            }
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        threshold("failure_rate_threshold", self.failure_rate_threshold)?;
        threshold("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_duration == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be more than zero (use None to turn slow-call detection off)",
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1 (use None to turn it off)",
            ));
        }
        if self.wait_in_open.is_zero() {
            return Err(ConfigError::new("wait_in_open", "must be more than zero"));
        }
        if self.wait_in_open > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new("wait_in_open", "must be at most a year"));
        }
        if let Some(b) = &self.backoff {
            if b.multiplier.is_nan() || !b.multiplier.is_finite() || b.multiplier < 1.0 {
                return Err(ConfigError::new(
                    "backoff.multiplier",
                    format!("{} must be a finite number >= 1.0", b.multiplier),
                ));
            }
            if b.max_wait < self.wait_in_open {
                return Err(ConfigError::new(
                    "backoff.max_wait",
                    "must be at least wait_in_open",
                ));
            }
            if b.max_wait > Duration::from_secs(365 * 24 * 3600) {
                return Err(ConfigError::new(
                    "backoff.max_wait",
                    "must be at most a year",
                ));
            }
            rate("backoff.jitter", b.jitter)?;
        }
        let n = self.permitted_calls_in_half_open;
        if n == 0 || n > MAX_HALF_OPEN_CALLS {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                format!("{n} is outside 1..={MAX_HALF_OPEN_CALLS}"),
            ));
        }
        Ok(())
    }
}

/// Bounds on the breakers a [`KeyedBreaker`](crate::KeyedBreaker) keeps, one per key.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// The most keys (breakers) kept at once; when a new key would exceed it, one key is
    /// evicted: one not used for a while and whose breaker is closed (a CLOCK, second chance
    /// for keys in use), an open breaker last. At least `1`. Default `1024`.
    pub max_keys: usize,
    /// A key unused for this long is dropped (its breaker forgotten) at the next sweep, which
    /// runs when a new key arrives, at most once per half of this. More than zero. Default 10
    /// minutes.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            max_keys: 1024,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl KeyLimits {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_keys` when it is zero, or `idle_timeout` when it is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new("idle_timeout", "must be more than zero"));
        }
        Ok(())
    }
}
