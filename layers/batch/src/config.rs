//! [`BatchConfig`]: plain data, validated when the layer is built.

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// What a caller meets when the queue is full.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// `poll_ready` waits until the queue has room (backpressure). The default.
    #[default]
    Wait,
    /// `poll_ready` is always ready; a request that finds the queue full fails at once with
    /// [`QueueFull`](crate::error::QueueFull).
    Reject,
}

/// Settings of a [`BatchLayer`](crate::layer::BatchLayer).
///
/// A batch is sent when it holds `max_items` requests, when it weighs `max_weight`, when its
/// oldest request has waited the (adaptive) linger, when a request's deadline would otherwise
/// pass, or at once when the backend is idle and requests are sparse, whichever comes first.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// The most requests in one batch call. Default 64; at least 1.
    pub max_items: usize,
    /// The most total weight in one batch call, measured by the weigher given to
    /// [`BatchLayer::with_weigher`](crate::layer::BatchLayer::with_weigher) (in the weigher's
    /// unit, e.g. bytes). A single request heavier than this is sent alone. Default `None`
    /// (no weight limit); when set, at least 1.
    pub max_weight: Option<u64>,
    /// The longest the oldest request of a batch waits for company before the batch is sent.
    /// The layer lingers less when the arrival rate says the batch will fill sooner, and not at
    /// all when the backend is idle and requests are sparse. Default 10 ms; zero sends every
    /// request as soon as the flusher sees it.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_linger: Duration,
    /// Whether a request that finds nothing in flight and a sparse arrival rate is sent at
    /// once instead of lingering. Default `true`.
    pub flush_when_idle: bool,
    /// The most batch calls in flight at once, per batch key. Default 2; at least 1.
    pub max_in_flight: usize,
    /// The most requests waiting to be sent, over all keys. Default 1024 requests; at least 1.
    pub queue_capacity: usize,
    /// What happens when the queue is full. Default [`Overflow::Wait`].
    pub overflow: Overflow,
    /// How much each new sample moves the arrival-rate and batch-duration averages, in
    /// `(0, 1]`. Default 0.2.
    pub ewma_alpha: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 64,
            max_weight: None,
            max_linger: Duration::from_millis(10),
            flush_when_idle: true,
            max_in_flight: 2,
            queue_capacity: 1024,
            overflow: Overflow::Wait,
            ewma_alpha: 0.2,
        }
    }
}

/// The largest queue the semaphore behind it can count.
const MAX_QUEUE: usize = usize::MAX >> 4;

impl BatchConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_items == 0 {
            return Err(ConfigError::new("max_items", "must be at least 1"));
        }
        if self.max_weight == Some(0) {
            return Err(ConfigError::new(
                "max_weight",
                "must be at least 1 when set",
            ));
        }
        if self.max_linger > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_linger", "must be at most an hour"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new("max_in_flight", "is too large"));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new("queue_capacity", "must be at least 1"));
        }
        if self.queue_capacity > MAX_QUEUE {
            return Err(ConfigError::new("queue_capacity", "is too large"));
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::new("ewma_alpha", "must be in (0, 1]"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(BatchConfig::default().validate(), Ok(()));
    }

    #[test]
    fn names_the_bad_field() {
        let cases: [(&str, BatchConfig); 6] = [
            (
                "max_items",
                BatchConfig {
                    max_items: 0,
                    ..Default::default()
                },
            ),
            (
                "max_weight",
                BatchConfig {
                    max_weight: Some(0),
                    ..Default::default()
                },
            ),
            (
                "max_in_flight",
                BatchConfig {
                    max_in_flight: 0,
                    ..Default::default()
                },
            ),
            (
                "queue_capacity",
                BatchConfig {
                    queue_capacity: 0,
                    ..Default::default()
                },
            ),
            (
                "ewma_alpha",
                BatchConfig {
                    ewma_alpha: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "max_linger",
                BatchConfig {
                    max_linger: Duration::from_secs(7200),
                    ..Default::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            assert_eq!(cfg.validate().unwrap_err().field(), field);
        }
    }
}
