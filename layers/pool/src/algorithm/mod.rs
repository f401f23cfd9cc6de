//! Limit algorithms: how the limit follows what the backend tells us.
//!
//! The limiter aggregates completions into *windows* (a few round trips long, see
//! [`PoolConfig`](crate::PoolConfig)) and hands each one to a [`LimitAlgorithm`], which returns
//! the next limit. Running the algorithm once per window, on one thread at a time, keeps the
//! per-request path down to a few uncontended atomic increments.
//!
//! | | reacts to | baseline | the matrix (`tests/matrix`, 192 cells) |
//! |---|---|---|---|
//! | [`Knee`] (default) | queueing (`throughput × baseline` by Little's law), failures | calm requests only, median of their means | 174 of 192; the rest listed in the test |
//! | [`Vegas`] | queueing (`throughput × (rtt − baseline)`), failures | windowed minimum, re-probed | no: a noisy minimum collapses it (issue #15) |
//! | [`Aimd`] | failures, RTT above a fixed threshold | none (fixed threshold) | 131 of 192 with its defaults: see its docs |
//! | [`Gradient2`] | long-term vs short-term RTT, failures | long-term EWMA | 129 of 192 with its defaults: see its docs |

mod aimd;
mod gradient2;
mod knee;
mod vegas;

pub use aimd::{Aimd, AimdConfig};
pub use gradient2::{Gradient2, Gradient2Config};
pub use knee::{Knee, KneeConfig};
pub use vegas::{Vegas, VegasConfig};

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// What happened during one window, as the limiter hands it to a [`LimitAlgorithm`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Window {
    /// When the window closed.
    pub now: Instant,
    /// How long it lasted.
    pub duration: Duration,
    /// The limit during the window.
    pub limit: f64,
    /// Timed successes (RTT samples).
    pub samples: u64,
    /// Mean RTT of the samples (call to completion), `None` without samples.
    pub mean_rtt: Option<Duration>,
    /// Standard deviation of the RTT samples (microsecond resolution), `None` with fewer than
    /// two. `rtt_sd / sqrt(samples)` is the standard error of `mean_rtt`: how far the mean
    /// of a window moves by chance alone.
    pub rtt_sd: Option<Duration>,
    /// Of the samples, those of *calm* requests: timed requests that started with at most
    /// [`LimitAlgorithm::calm_below`] requests in flight, so few that they cannot have queued
    /// at the backend. All samples when the algorithm sets no threshold.
    pub calm_samples: u64,
    /// Mean RTT of the calm samples.
    pub calm_rtt: Option<Duration>,
    /// Standard deviation of the calm samples' RTTs.
    pub calm_rtt_sd: Option<Duration>,
    /// Calls that ended in a success (timed or not).
    pub successes: u64,
    /// Calls that ended in a failure, as the classifier decided.
    pub failures: u64,
    /// Calls whose future was dropped before it finished (cancelled; no RTT sample).
    pub dropped: u64,
    /// Acquire attempts that found no free permit: demand reached the limit.
    pub limited: u64,
    /// Requests in flight when the window closed.
    pub in_flight: usize,
}

impl Window {
    /// Whether demand reached the limit during the window (some acquire found no permit, or
    /// the window ended with the limit in use). An algorithm should only grow a saturated
    /// limit: growing an application-limited one says nothing about the backend.
    pub fn saturated(&self) -> bool {
        self.limited > 0 || self.in_flight as f64 >= self.limit.floor()
    }

    /// Completions (successes and failures) per second: the window's throughput.
    pub fn throughput(&self) -> f64 {
        (self.successes + self.failures) as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Failures as a fraction of finished calls (0 without any).
    pub fn failure_ratio(&self) -> f64 {
        let n = self.successes + self.failures;
        if n == 0 {
            0.0
        } else {
            self.failures as f64 / n as f64
        }
    }
}

/// RTT estimates an algorithm keeps, for the [`Snapshot`](crate::Snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttEstimates {
    /// The RTT the algorithm believes the backend has when nothing queues.
    pub baseline: Option<Duration>,
    /// The most recent (short-term) RTT.
    pub short_term: Option<Duration>,
    /// A long-term average RTT, for algorithms that keep one.
    pub long_term: Option<Duration>,
}

/// Computes the next limit from one window. Implement it to plug in your own algorithm.
///
/// The limiter clamps the result to `[min_limit, max_limit]` and ignores non-finite values.
/// `update` runs on one thread at a time, off the request path, at most once per window.
pub trait LimitAlgorithm: Send + fmt::Debug + 'static {
    /// The next limit, given the current one (`window.limit`) and what the window saw.
    fn update(&mut self, window: &Window) -> f64;

    /// Requests in flight (the new one included) at or below which a starting request counts
    /// as *calm* in the next window ([`Window::calm_rtt`]): the algorithm's estimate of a
    /// concurrency the backend serves without queueing. `None` (the default): every request.
    /// Read after each [`update`](LimitAlgorithm::update).
    fn calm_below(&self) -> Option<usize> {
        None
    }

    /// The RTT estimates, for snapshots.
    fn rtt(&self) -> RttEstimates {
        RttEstimates::default()
    }

    /// A short name for logs and snapshots.
    fn name(&self) -> &'static str;
}

/// Plain-data choice of a built-in algorithm, for [`PoolConfig`](crate::PoolConfig).
///
/// With the `serde` feature it reads from a name with the algorithm's defaults
/// (`algorithm = "knee"`) or from a table with `type` and the settings to change
/// (`algorithm = { type = "vegas", queued_windows = 3 }`), and writes the table form.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
#[derive(Debug, Clone, PartialEq)]
pub enum AlgorithmConfig {
    /// [`Knee`] (the default).
    Knee(KneeConfig),
    /// [`Vegas`] with baseline re-probing.
    Vegas(VegasConfig),
    /// [`Aimd`].
    Aimd(AimdConfig),
    /// [`Gradient2`].
    Gradient2(Gradient2Config),
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig::Knee(KneeConfig::default())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for AlgorithmConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The table form.
        #[derive(serde::Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Tagged {
            Knee(KneeConfig),
            Vegas(VegasConfig),
            Aimd(AimdConfig),
            Gradient2(Gradient2Config),
        }
        const NAMES: &[&str] = &["knee", "vegas", "aimd", "gradient2"];

        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = AlgorithmConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an algorithm's name (\"knee\", \"vegas\", \"aimd\", \"gradient2\") or a table \
                     with `type` and its settings",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(match name {
                    "knee" => AlgorithmConfig::Knee(KneeConfig::default()),
                    "vegas" => AlgorithmConfig::Vegas(VegasConfig::default()),
                    "aimd" => AlgorithmConfig::Aimd(AimdConfig::default()),
                    "gradient2" => AlgorithmConfig::Gradient2(Gradient2Config::default()),
                    other => return Err(E::unknown_variant(other, NAMES)),
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let tagged: Tagged = serde::Deserialize::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(match tagged {
                    Tagged::Knee(c) => AlgorithmConfig::Knee(c),
                    Tagged::Vegas(c) => AlgorithmConfig::Vegas(c),
                    Tagged::Aimd(c) => AlgorithmConfig::Aimd(c),
                    Tagged::Gradient2(c) => AlgorithmConfig::Gradient2(c),
                })
            }
        }
        d.deserialize_any(Either)
    }
}

impl AlgorithmConfig {
    /// Checks the chosen algorithm's settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](tollgate_core::error::ConfigError) naming the field.
    pub fn validate(&self) -> Result<(), tollgate_core::error::ConfigError> {
        match self {
            AlgorithmConfig::Knee(c) => c.validate(),
            AlgorithmConfig::Vegas(c) => c.validate(),
            AlgorithmConfig::Aimd(c) => c.validate(),
            AlgorithmConfig::Gradient2(c) => c.validate(),
        }
    }

    pub(crate) fn build(&self) -> Box<dyn LimitAlgorithm> {
        match self {
            AlgorithmConfig::Knee(c) => Box::new(Knee::new(c.clone())),
            AlgorithmConfig::Vegas(c) => Box::new(Vegas::new(c.clone())),
            AlgorithmConfig::Aimd(c) => Box::new(Aimd::new(c.clone())),
            AlgorithmConfig::Gradient2(c) => Box::new(Gradient2::new(c.clone())),
        }
    }
}

/// The cut every algorithm makes on failures: `backoff` in (0, 1) and `failure_ratio` in
/// (0, 1], each named when out of range.
pub(crate) fn check_cut(
    backoff: f64,
    failure_ratio: f64,
) -> Result<(), tollgate_core::error::ConfigError> {
    check_fraction("backoff", backoff)?;
    check_range("failure_ratio", failure_ratio, f64::MIN_POSITIVE, 1.0)
}

/// `Err` naming `field` unless `value` is a fraction strictly between 0 and 1 (a factor that
/// shrinks: a backoff, a probe's cut).
pub(crate) fn check_fraction(
    field: &'static str,
    value: f64,
) -> Result<(), tollgate_core::error::ConfigError> {
    check_range(field, value, f64::MIN_POSITIVE, 1.0 - f64::EPSILON)
}

/// `Err` naming `field` unless `value` is finite and within `[lo, hi]`.
pub(crate) fn check_range(
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
) -> Result<(), tollgate_core::error::ConfigError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(tollgate_core::error::ConfigError::new(
            field,
            format!("must be a number in [{lo}, {hi}], got {value}"),
        ))
    }
}

pub(crate) fn check_positive(
    field: &'static str,
    d: Duration,
) -> Result<(), tollgate_core::error::ConfigError> {
    if d.is_zero() {
        Err(tollgate_core::error::ConfigError::new(
            field,
            "must be greater than zero",
        ))
    } else {
        Ok(())
    }
}
