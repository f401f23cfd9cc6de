//! The cache's configuration: plain data, checked once when the layer is built.

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// Configuration of a [`CacheLayer`](crate::layer::CacheLayer).
///
/// Durations a response gives itself (through the policy) are capped at `max_ttl`; the defaults
/// here apply where the policy leaves a field `None`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// L1 slots per worker thread (each thread serving requests keeps its own table). A power
    /// of two, at most 65 536; 0 turns L1 off. Default 256.
    pub l1_slots: usize,
    /// The longest an L1 copy answers before the next request looks at L2 again, so L2 sees
    /// the key's popularity and invalidations from other threads settle. Default 1 s; not zero
    /// when L1 is on.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub l1_ttl: Duration,
    /// L2 capacity: entries, or weight units (what [`CachePolicy::weight`](crate::policy::CachePolicy::weight)
    /// returns: bytes for the HTTP policy) for a policy whose `WEIGHTED` is true. At least 1.
    /// Default 67 108 864.
    pub l2_capacity: u64,
    /// Freshness of a stored response whose policy gives none. Default 60 s; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub default_ttl: Duration,
    /// Upper bound for any freshness or stale window. Default 1 day; at least `default_ttl`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ttl: Duration,
    /// Entries not read for this long are dropped (`None`: never). Default `None`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub time_to_idle: Option<Duration>,
    /// Freshness of negative answers ([`Cacheability::Negative`](crate::policy::Cacheability::Negative));
    /// zero stores none. Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub negative_ttl: Duration,
    /// Default stale-while-revalidate window (RFC 5861). Default 0 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stale_while_revalidate: Duration,
    /// Default stale-if-error window (RFC 5861). Default 0 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stale_if_error: Duration,
    /// XFetch's β (Vattani et al.): larger refreshes earlier; 0 turns early refresh off.
    /// Finite, at least 0. Default 1.0.
    pub xfetch_beta: f64,
    /// How long a request waits for another request already fetching the same key before it
    /// asks the inner service itself. Not zero. Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub coalesce_timeout: Duration,
    /// Seed of the random numbers behind XFetch, so runs repeat. Default `0x7011_6a7e`.
    pub seed: u64,
    /// Hash L2's keys with a key derived from `seed` instead of a random one, so simulations
    /// repeat exactly (moka's admission depends on key hashes). Leave it off where clients
    /// choose the keys: a known hash key invites hash flooding. Default `false`.
    pub deterministic: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            l1_slots: 256,
            l1_ttl: Duration::from_secs(1),
            l2_capacity: 64 << 20,
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(86_400),
            time_to_idle: None,
            negative_ttl: Duration::from_secs(5),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            xfetch_beta: 1.0,
            coalesce_timeout: Duration::from_secs(5),
            seed: 0x7011_6a7e,
            deterministic: false,
        }
    }
}

impl CacheConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.l1_slots != 0 && (!self.l1_slots.is_power_of_two() || self.l1_slots > 65_536) {
            return Err(ConfigError::new(
                "l1_slots",
                "must be 0 or a power of two up to 65536",
            ));
        }
        if self.l1_slots != 0 && self.l1_ttl.is_zero() {
            return Err(ConfigError::new(
                "l1_ttl",
                "must not be zero while L1 is on",
            ));
        }
        if self.l2_capacity == 0 {
            return Err(ConfigError::new("l2_capacity", "must be at least 1"));
        }
        if self.default_ttl.is_zero() {
            return Err(ConfigError::new("default_ttl", "must not be zero"));
        }
        if self.max_ttl < self.default_ttl {
            return Err(ConfigError::new(
                "max_ttl",
                "must be at least `default_ttl`",
            ));
        }
        if self.time_to_idle.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "time_to_idle",
                "must not be zero (use None for no limit)",
            ));
        }
        if self.negative_ttl > self.max_ttl {
            return Err(ConfigError::new(
                "negative_ttl",
                "must not exceed `max_ttl`",
            ));
        }
        if self.stale_while_revalidate > self.max_ttl {
            return Err(ConfigError::new(
                "stale_while_revalidate",
                "must not exceed `max_ttl`",
            ));
        }
        if self.stale_if_error > self.max_ttl {
            return Err(ConfigError::new(
                "stale_if_error",
                "must not exceed `max_ttl`",
            ));
        }
        if !self.xfetch_beta.is_finite() || self.xfetch_beta < 0.0 {
            return Err(ConfigError::new(
                "xfetch_beta",
                "must be finite and at least 0",
            ));
        }
        if self.coalesce_timeout.is_zero() {
            return Err(ConfigError::new("coalesce_timeout", "must not be zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        CacheConfig::default().validate().unwrap();
    }

    #[test]
    fn names_the_bad_field() {
        let cases: Vec<(CacheConfig, &str)> = vec![
            (
                CacheConfig {
                    l1_slots: 3,
                    ..Default::default()
                },
                "l1_slots",
            ),
            (
                CacheConfig {
                    l1_ttl: Duration::ZERO,
                    ..Default::default()
                },
                "l1_ttl",
            ),
            (
                CacheConfig {
                    l2_capacity: 0,
                    ..Default::default()
                },
                "l2_capacity",
            ),
            (
                CacheConfig {
                    default_ttl: Duration::ZERO,
                    ..Default::default()
                },
                "default_ttl",
            ),
            (
                CacheConfig {
                    max_ttl: Duration::from_secs(1),
                    ..Default::default()
                },
                "max_ttl",
            ),
            (
                CacheConfig {
                    time_to_idle: Some(Duration::ZERO),
                    ..Default::default()
                },
                "time_to_idle",
            ),
            (
                CacheConfig {
                    xfetch_beta: f64::NAN,
                    ..Default::default()
                },
                "xfetch_beta",
            ),
            (
                CacheConfig {
                    coalesce_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "coalesce_timeout",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate().unwrap_err().field(), field);
        }
        CacheConfig {
            l1_slots: 0,
            l1_ttl: Duration::ZERO,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
