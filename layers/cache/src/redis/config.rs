//! The Redis tier's configuration: tollgate-core's one shape for Redis settings, nested as
//! `server`, plus what only a cache tier has (its invalidation channel and reconnection pace).
//!
//! Nested rather than flattened, so the core settings keep refusing unknown fields when read
//! with `serde` (serde cannot refuse unknown fields through `#[serde(flatten)]`) and a reader
//! sees at once which settings every Redis user shares:
//!
//! ```toml
//! [redis]
//! server = { url = "redis://127.0.0.1:6379", response_timeout = "50ms" }
//! channel = "tollgate:cache:invalidate"
//! reconnect_interval = "500ms"
//! ```

use std::time::Duration;
use tollgate_core::error::ConfigError;
pub use tollgate_core::redis::RedisConfig;

/// The key prefix of the tier's entries when [`RedisConfig::key_prefix`] is left out.
pub const KEY_PREFIX: &str = "tollgate:cache:";

/// Configuration of the Redis tier.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTierConfig {
    /// The server and its timeouts and outage behaviour, in the shape every layer shares.
    /// Its `key_prefix` defaults to [`KEY_PREFIX`]; after `server.failures` failures in a
    /// row the tier is skipped for `server.cooldown`, then one read probes it. Required (its
    /// `url` has no default).
    pub server: RedisConfig,
    /// Pub/sub channel carrying invalidated keys. Default `"tollgate:cache:invalidate"`; not
    /// empty.
    #[cfg_attr(feature = "serde", serde(default = "serde_defaults::channel"))]
    pub channel: String,
    /// Pause between connection attempts while Redis is unreachable. Default 500 ms; not zero.
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "humantime_serde",
            default = "serde_defaults::reconnect_interval"
        )
    )]
    pub reconnect_interval: Duration,
}

impl RedisTierConfig {
    /// The defaults, talking to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_server(RedisConfig::new(url))
    }

    /// The tier's defaults around `server`.
    pub fn with_server(server: RedisConfig) -> Self {
        Self {
            server,
            channel: "tollgate:cache:invalidate".into(),
            reconnect_interval: Duration::from_millis(500),
        }
    }

    /// The prefix of every key the tier writes.
    pub fn key_prefix(&self) -> &str {
        self.server.key_prefix_or(KEY_PREFIX)
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range (`server.url`, `channel`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate().map_err(|e| {
            let field = match e.field() {
                "url" => "server.url",
                "connect_timeout" => "server.connect_timeout",
                "response_timeout" => "server.response_timeout",
                "failures" => "server.failures",
                "cooldown" => "server.cooldown",
                _ => "server",
            };
            ConfigError::new(field, e.problem())
        })?;
        if let Err(e) = redis::Client::open(self.server.url.as_str()) {
            return Err(ConfigError::new(
                "server.url",
                format!("not a Redis URL: {e}"),
            ));
        }
        if self.channel.is_empty() {
            return Err(ConfigError::new("channel", "must not be empty"));
        }
        if self.reconnect_interval.is_zero() {
            return Err(ConfigError::new("reconnect_interval", "must not be zero"));
        }
        Ok(())
    }
}

/// Defaults of the fields a config read with `serde` may leave out: the same values as
/// [`RedisTierConfig::new`]'s.
#[cfg(feature = "serde")]
mod serde_defaults {
    pub(super) fn channel() -> String {
        super::RedisTierConfig::new("").channel
    }

    pub(super) fn reconnect_interval() -> std::time::Duration {
        super::RedisTierConfig::new("").reconnect_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn config_names_the_bad_field() {
        RedisTierConfig::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
        assert_eq!(
            RedisTierConfig::new("").validate().unwrap_err().field(),
            "server.url"
        );
        let mut c = RedisTierConfig::new("redis://127.0.0.1/");
        c.server.response_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field(), "server.response_timeout");
        let mut c = RedisTierConfig::new("redis://127.0.0.1/");
        c.server.failures = 0;
        assert_eq!(c.validate().unwrap_err().field(), "server.failures");
        let mut c = RedisTierConfig::new("redis://127.0.0.1/");
        c.channel.clear();
        assert_eq!(c.validate().unwrap_err().field(), "channel");
        let mut c = RedisTierConfig::new("redis://127.0.0.1/");
        c.reconnect_interval = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field(), "reconnect_interval");
    }

    #[test]
    fn keys_default_to_the_cache_prefix() {
        let c = RedisTierConfig::new("redis://h");
        assert_eq!(c.key_prefix(), KEY_PREFIX);
        let c = RedisTierConfig::with_server(RedisConfig::new("redis://h").with_key_prefix("a:"));
        assert_eq!(c.key_prefix(), "a:");
    }
}
