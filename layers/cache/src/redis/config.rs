//! The Redis tier's configuration.

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// Configuration of the Redis tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis listens, `redis://host:port/db`. Required (default empty, which fails
    /// validation).
    pub url: String,
    /// Prefix of every key the tier writes. Default `"tollgate:cache:"`.
    pub key_prefix: String,
    /// Pub/sub channel carrying invalidated keys. Default `"tollgate:cache:invalidate"`.
    pub channel: String,
    /// The longest any Redis command may take before it counts as failed. Not zero.
    /// Default 50 ms.
    pub response_timeout: Duration,
    /// The longest a connection attempt may take. Not zero. Default 250 ms.
    pub connect_timeout: Duration,
    /// Failures in a row that open the breaker. At least 1. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker skips L3 before one probe. Not zero. Default 1 s.
    pub breaker_cooldown: Duration,
    /// Pause between connection attempts while Redis is unreachable. Not zero. Default 500 ms.
    pub reconnect_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "tollgate:cache:".into(),
            channel: "tollgate:cache:invalidate".into(),
            response_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            reconnect_interval: Duration::from_millis(500),
        }
    }
}

impl RedisConfig {
    /// The defaults, talking to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return Err(ConfigError::new("url", format!("not a Redis URL: {e}")));
        }
        if self.channel.is_empty() {
            return Err(ConfigError::new("channel", "must not be empty"));
        }
        let nonzero = [
            ("response_timeout", self.response_timeout),
            ("connect_timeout", self.connect_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("reconnect_interval", self.reconnect_interval),
        ];
        for (field, d) in nonzero {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError::new("breaker_failures", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn config_names_the_bad_field() {
        RedisConfig::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
        assert_eq!(
            RedisConfig::default().validate().unwrap_err().field(),
            "url"
        );
        let c = RedisConfig {
            response_timeout: Duration::ZERO,
            ..RedisConfig::new("redis://127.0.0.1/")
        };
        assert_eq!(c.validate().unwrap_err().field(), "response_timeout");
        let c = RedisConfig {
            breaker_failures: 0,
            ..RedisConfig::new("redis://127.0.0.1/")
        };
        assert_eq!(c.validate().unwrap_err().field(), "breaker_failures");
    }
}
