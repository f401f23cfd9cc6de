//! Configuration: plain data with defaults, checked by [`AdmissionConfig::validate`] when the
//! layer is built.

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// The most priority classes a layer may have.
pub const MAX_CLASSES: usize = 64;

/// One priority class. Classes are listed highest priority first in [`AdmissionConfig::classes`].
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// The name used in rejections and snapshots. No default; must be non-empty and unique.
    pub name: String,
    /// How many requests of this class may wait for capacity at once; a request arriving at a
    /// full queue is rejected at once. Default 128 requests. May be 0 (never queue).
    #[cfg_attr(feature = "serde", serde(default = "serde_defaults::queue_capacity"))]
    pub queue_capacity: usize,
    /// Slots of capacity kept for this class while it has requests waiting: other classes cannot
    /// take a free slot this class is owed, and freed slots go to it first. While it has nobody
    /// waiting, other classes borrow its idle share. Default 0 slots.
    #[cfg_attr(feature = "serde", serde(default))]
    pub reserved: usize,
    /// Slots kept free for this class and those above it: a request of a lower class is
    /// admitted only while more slots are free than the headrooms above it add up to, so this
    /// class's requests start at once instead of waiting for a slot to free. Unlike
    /// `reserved`, it is not lent: it costs that much capacity while unused. Default 0 slots.
    #[cfg_attr(feature = "serde", serde(default))]
    pub headroom: usize,
}

impl ClassConfig {
    /// A class with the given name and the default queue capacity and reservation.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queue_capacity: 128,
            reserved: 0,
            headroom: 0,
        }
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets [`headroom`](Self::headroom).
    pub fn with_headroom(mut self, n: usize) -> Self {
        self.headroom = n;
        self
    }

    /// Sets [`reserved`](Self::reserved).
    pub fn with_reserved(mut self, n: usize) -> Self {
        self.reserved = n;
        self
    }
}

/// The queue discipline's CoDel-style bound, after Meta's "adaptive LIFO + CoDel".
///
/// A class's queue is *standing* once it has not been empty for `interval` (and stays so while
/// it keeps dropping waiters). While it stands, the class serves its newest waiter first (LIFO)
/// and drops waiters older than `target`, as long as enough fresher waiters remain to keep
/// every slot busy (or the queue is full). A queue that does not stand serves its oldest
/// waiter first. A waiter always gives up after `interval`.
///
/// With an adaptive capacity
/// ([`AdmissionLayer::with_capacity`](crate::AdmissionLayer::with_capacity)), a standing queue
/// that receives requests at least 1.15x as fast as it hands out slots (over about 500 ms)
/// drops waiters older than three slot gaps, or 70% of `target` if that is sooner, fresher
/// waiters or not; less where the measured latency varies little (its standard deviation under
/// half its mean: the bound shrinks in proportion), since requests that finish evenly keep the
/// backend's workers busy from its own queue. The bound starts while three of the queue's gaps
/// are within twice `target`, and holds while three gaps of all admissions (the queue's plus
/// those taken without waiting) are, so it does not lapse each time it empties the queue: the
/// capacity's limit already keeps a small queue at the backend, and under overload a longer
/// wait in front of it only makes the requests that are served late.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodelConfig {
    /// The queue wait past which waiters are dropped while their queue stands. Default 5 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub target: Duration,
    /// How long a queue must stay non-empty to count as standing, and the most time any
    /// request waits. Default 100 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// Whether a standing queue serves newest first. Default `true`.
    pub adaptive_lifo: bool,
}

impl Default for CodelConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            adaptive_lifo: true,
        }
    }
}

/// A per-key GCRA quota (see [`Ticket::key`](crate::Ticket::key)), checked before a request
/// queues. Requests without a key are not rate limited.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests each key may make per `period`, and the burst it may spend at once. No default;
    /// must be at least 1.
    pub burst: u32,
    /// The time in which a key's whole burst refills. No default; must be non-zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub period: Duration,
    /// The most keys tracked at once; beyond it the key closest to a fresh bucket is forgotten,
    /// so memory stays bounded. Default 100 000 keys.
    #[cfg_attr(feature = "serde", serde(default = "serde_defaults::max_keys"))]
    pub max_keys: usize,
    /// Keep the quota in Redis, shared by every instance using the same server and key prefix;
    /// the local limiter answers while Redis cannot. Default `None` (local only).
    #[cfg_attr(feature = "serde", serde(default))]
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub redis: Option<RedisConfig>,
}

impl RateLimitConfig {
    /// `burst` requests per `period` for each key, at most 100 000 keys tracked.
    pub fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            max_keys: 100_000,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

/// Where the shared quota lives: tollgate-core's one shape for Redis settings. The rate
/// limit's keys default to the prefix `"tollgate:rl:"`.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use tollgate_core::redis::RedisConfig;

/// The key prefix of the rate limit's keys when [`RedisConfig::key_prefix`] is left out.
#[cfg(feature = "redis")]
pub(crate) const KEY_PREFIX: &str = "tollgate:rl:";

/// Checks `redis` as the rate limit's, naming its fields under `rate_limit.redis`.
#[cfg(feature = "redis")]
fn validate_redis(redis: &RedisConfig) -> Result<(), ConfigError> {
    redis.validate().map_err(|e| {
        let field = match e.field() {
            "url" => "rate_limit.redis.url",
            "connect_timeout" => "rate_limit.redis.connect_timeout",
            "response_timeout" => "rate_limit.redis.response_timeout",
            "failures" => "rate_limit.redis.failures",
            "cooldown" => "rate_limit.redis.cooldown",
            _ => "rate_limit.redis",
        };
        ConfigError::new(field, e.problem())
    })?;
    redis::Client::open(redis.url.as_str())
        .map_err(|e| ConfigError::new("rate_limit.redis.url", e.to_string()))?;
    Ok(())
}

/// Client-side adaptive throttling from the Google SRE book: while the backend rejects, reject
/// locally with probability `max(0, (requests - k * accepts) / (requests + 1))`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// The multiplier `K`: 2.0 lets through about twice what the backend accepts. Default 2.0;
    /// must be at least 1.
    pub k: f64,
    /// The window over which requests and accepts are counted. Default 120 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// The random generator's seed, so tests are deterministic. Default 0.
    pub seed: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            k: 2.0,
            window: Duration::from_secs(120),
            seed: 0,
        }
    }
}

/// How the layer answers `poll_ready`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyMode {
    /// `poll_ready` forwards the inner service's readiness; `call` calls the instance it readied.
    /// Default.
    #[default]
    Inner,
    /// `poll_ready` is always ready, for servers that call without waiting on it (axum). The
    /// response future waits for admission, then readies a clone of the inner service and calls
    /// it.
    Always,
}

/// Everything the admission layer can be told. Build a layer with
/// [`AdmissionLayer::new`](crate::AdmissionLayer::new), which validates it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// The classes, highest priority first. Default: `critical_plus`, `critical`,
    /// `sheddable_plus`, `sheddable` (the Google SRE criticalities). At least 1, at most
    /// [`MAX_CLASSES`].
    pub classes: Vec<ClassConfig>,
    /// The most requests in flight when the capacity is a fixed limit. Default 64 requests; at
    /// least 1.
    pub limit: usize,
    /// The most requests waiting over all classes. When it is reached, a request sheds the
    /// newest waiter of the lowest class below its own, or is rejected if there is none.
    /// Default 256 requests.
    pub max_queued: usize,
    /// The queue-time bound. See [`CodelConfig`].
    pub codel: CodelConfig,
    /// The per-key rate limit. Default `None` (off).
    pub rate_limit: Option<RateLimitConfig>,
    /// Client-side adaptive throttling. Default `None` (off).
    pub throttle: Option<ThrottleConfig>,
    /// How `poll_ready` behaves. Default [`ReadyMode::Inner`].
    pub ready_mode: ReadyMode,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            classes: ["critical_plus", "critical", "sheddable_plus", "sheddable"]
                .into_iter()
                .map(ClassConfig::new)
                .collect(),
            limit: 64,
            max_queued: 256,
            codel: CodelConfig::default(),
            rate_limit: None,
            throttle: None,
            ready_mode: ReadyMode::Inner,
        }
    }
}

impl AdmissionConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.classes.is_empty() {
            return Err(ConfigError::new("classes", "at least one class is needed"));
        }
        if self.classes.len() > MAX_CLASSES {
            return Err(ConfigError::new(
                "classes",
                format!("at most {MAX_CLASSES} classes"),
            ));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.name.is_empty() {
                return Err(ConfigError::new(
                    "classes.name",
                    format!("class {i} has an empty name"),
                ));
            }
            if self.classes[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::new(
                    "classes.name",
                    format!("`{}` is used twice", c.name),
                ));
            }
        }
        if self.limit == 0 {
            return Err(ConfigError::new("limit", "must be at least 1"));
        }
        let kept: usize = self.classes[..self.classes.len() - 1]
            .iter()
            .map(|c| c.headroom)
            .sum();
        if kept >= self.limit {
            return Err(ConfigError::new(
                "classes.headroom",
                format!(
                    "headrooms add up to {kept}, leaving the lowest class nothing of the limit {}",
                    self.limit
                ),
            ));
        }
        let reserved: usize = self.classes.iter().map(|c| c.reserved).sum();
        if reserved > self.limit {
            return Err(ConfigError::new(
                "classes.reserved",
                format!(
                    "reservations add up to {reserved}, more than the limit {}",
                    self.limit
                ),
            ));
        }
        if self.codel.target.is_zero() {
            return Err(ConfigError::new("codel.target", "must be non-zero"));
        }
        if self.codel.interval < self.codel.target {
            return Err(ConfigError::new(
                "codel.interval",
                "must be at least `codel.target`",
            ));
        }
        if let Some(r) = &self.rate_limit {
            if r.burst == 0 {
                return Err(ConfigError::new("rate_limit.burst", "must be at least 1"));
            }
            if r.period.is_zero() {
                return Err(ConfigError::new("rate_limit.period", "must be non-zero"));
            }
            if r.max_keys == 0 {
                return Err(ConfigError::new(
                    "rate_limit.max_keys",
                    "must be at least 1",
                ));
            }
            #[cfg(feature = "redis")]
            if let Some(redis) = &r.redis {
                validate_redis(redis)?;
            }
        }
        if let Some(t) = &self.throttle {
            if !(t.k >= 1.0 && t.k.is_finite()) {
                return Err(ConfigError::new(
                    "throttle.k",
                    "must be a finite number at least 1",
                ));
            }
            if t.window.is_zero() {
                return Err(ConfigError::new("throttle.window", "must be non-zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        AdmissionConfig::default().validate().unwrap();
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn bad_fields_are_named() {
        let cases: Vec<(&str, Box<dyn Fn(&mut AdmissionConfig)>)> = vec![
            ("classes", Box::new(|c| c.classes.clear())),
            (
                "classes.name",
                Box::new(|c| c.classes[1].name = "critical_plus".into()),
            ),
            ("classes.name", Box::new(|c| c.classes[0].name.clear())),
            ("limit", Box::new(|c| c.limit = 0)),
            ("classes.reserved", Box::new(|c| c.classes[0].reserved = 65)),
            ("classes.headroom", Box::new(|c| c.classes[0].headroom = 64)),
            (
                "codel.target",
                Box::new(|c| c.codel.target = Duration::ZERO),
            ),
            (
                "codel.interval",
                Box::new(|c| c.codel.interval = Duration::from_millis(1)),
            ),
            (
                "rate_limit.burst",
                Box::new(|c| c.rate_limit = Some(RateLimitConfig::new(0, Duration::from_secs(1)))),
            ),
            (
                "rate_limit.period",
                Box::new(|c| c.rate_limit = Some(RateLimitConfig::new(1, Duration::ZERO))),
            ),
            (
                "throttle.k",
                Box::new(|c| {
                    c.throttle = Some(ThrottleConfig {
                        k: 0.5,
                        ..Default::default()
                    })
                }),
            ),
            (
                "throttle.window",
                Box::new(|c| {
                    c.throttle = Some(ThrottleConfig {
                        window: Duration::ZERO,
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (field, edit) in cases {
            let mut c = AdmissionConfig::default();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().field(), field);
        }
    }
}

/// Defaults of the fields a config read with `serde` may leave out, where the type as a whole
/// has required fields (and so no `Default`): the same values as the constructors'.
#[cfg(feature = "serde")]
mod serde_defaults {
    pub(super) fn queue_capacity() -> usize {
        super::ClassConfig::new("").queue_capacity
    }

    pub(super) fn max_keys() -> usize {
        super::RateLimitConfig::new(1, std::time::Duration::from_secs(1)).max_keys
    }
}
