//! Balancer configuration: plain data with defaults, checked by [`BalanceConfig::validate`].

use std::time::Duration;
use tollgate_core::error::ConfigError;

/// How the balancer scores, ejects, checks and ramps its endpoints.
///
/// Every field has a default (see [`Default`]); `validate` names the first bad field.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    /// Time constant of the peak-EWMA latency estimate: how fast a slow sample is forgotten,
    /// and how fast an idle endpoint's estimate decays towards zero so it is tried again.
    /// Default 10 s (Finagle's and Linkerd's choice).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub decay: Duration,
    /// Latency assumed for an endpoint before its first response; it decays with `decay` like
    /// an estimate, so an endpoint never tried is tried eventually. Default 30 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub default_rtt: Duration,
    /// Weight of each outcome in an endpoint's failure rate, in `(0, 1]`. Default 0.1.
    pub failure_weight: f64,
    /// Time constant with which an endpoint's failure rate decays towards zero while it gets no
    /// requests, so a failing endpoint is eventually tried again. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub failure_decay: Duration,
    /// Exponent of the failure penalty: the cost is divided by `(1 - failure rate)^penalty`,
    /// so an endpoint that fails fast looks expensive rather than cheap. 0 turns the penalty
    /// off. Default 2.
    pub failure_penalty: f64,
    /// A request dropped unfinished after running at least this long counts as a failure of
    /// its endpoint (the caller timed out on it); one dropped sooner is ignored, since callers
    /// also cancel for reasons of their own. Either way its running time raises the latency
    /// estimate. `Duration::MAX` never counts a cancellation. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub cancel_failure_after: Duration,
    /// Share of endpoints (in `(0, 1]`) that must be admitted (healthy and not ejected); below
    /// it the balancer panics and spreads requests over every endpoint rather than overload
    /// the few. 0 never panics. Default 0.5.
    pub panic_threshold: f64,
    /// How long a new or recovered endpoint's weight ramps up, linearly, from
    /// `slow_start_min_weight` to its full weight. Zero turns slow start off. Endpoints given
    /// when the balancer is built start at full weight. Default zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_start: Duration,
    /// The share of its weight an endpoint starts slow start with, in `(0, 1]`. Default 0.1.
    pub slow_start_min_weight: f64,
    /// Outlier ejection.
    pub outlier: OutlierConfig,
    /// Active health checks (used when checks run; see `Balance::spawn_health_checks`).
    pub health: HealthConfig,
    /// Consistent hashing with bounded load (used when a request key is read; see
    /// `Balance::hash_by`).
    pub hash: HashConfig,
    /// Seed of the random choices. `None` seeds each balancer clone differently per thread;
    /// `Some` makes a single-threaded run repeatable. Default `None`.
    pub seed: Option<u64>,
}

/// When an endpoint is taken out of rotation because it fails more than its peers.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive failures that eject an endpoint; 0 turns this check off. Default 5.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the n-th repeat lasts n times as long. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub base_ejection_time: Duration,
    /// The longest an ejection may last. Default 300 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ejection_time: Duration,
    /// The largest share of endpoints ejected at once, in `[0, 1]` (rounded down: 0.5 of 5 is
    /// 2). Default 0.5.
    pub max_ejection_share: f64,
    /// How often success rates are compared across the fleet; also the time an endpoint must
    /// stay clear of ejection for its repeat count to go down by one. Default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// Whether to eject endpoints whose success rate is below the fleet's (mean minus
    /// `success_rate_stdev_factor` standard deviations). Default true.
    pub success_rate: bool,
    /// Requests an endpoint needs in an interval to take part in the comparison. Default 100.
    pub success_rate_min_requests: u32,
    /// Endpoints that must take part for the comparison to run. Default 5.
    pub success_rate_min_hosts: u32,
    /// How many standard deviations below the mean an endpoint's success rate must be to be
    /// ejected. Default 1.9 (Envoy's).
    pub success_rate_stdev_factor: f64,
}

/// Active health checks: a probe per endpoint at a fixed interval.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Time between check rounds. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// A check that has not answered by then fails. Default 500 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub timeout: Duration,
    /// Consecutive failed checks that mark an endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that mark an unhealthy endpoint healthy again. Default 2.
    pub healthy_threshold: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_weight: 0.1,
            failure_decay: Duration::from_secs(30),
            failure_penalty: 2.0,
            cancel_failure_after: Duration::from_secs(1),
            panic_threshold: 0.5,
            slow_start: Duration::ZERO,
            slow_start_min_weight: 0.1,
            outlier: OutlierConfig::default(),
            health: HealthConfig::default(),
            hash: HashConfig::default(),
            seed: None,
        }
    }
}

/// Consistent hashing with bounded load: requests with the same key go to the same endpoint
/// while its in-flight load stays within `load_factor` times its share of the fleet's; past
/// that, to the next endpoint clockwise on the ring.
///
/// `header`, `cookie` and `path` say where an `http::Request`'s key is found (read by
/// [`HttpKey::from_config`](crate::HttpKey), feature `http`, as the gateway does); at most
/// one is set. A key read by `Balance::hash_by` ignores them.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct HashConfig {
    /// The bound `c` on an endpoint's in-flight load, as a multiple of its fair share: it takes
    /// a request only while its load, with the request, is at most
    /// `ceil(c × (total in flight + 1) ÷ endpoints)` (weighted by its share of the weights).
    /// At least 1; lower keeps loads more even, higher keeps more keys in place. Default 1.25.
    pub load_factor: f64,
    /// Points on the ring per endpoint of average weight (an endpoint's count scales with its
    /// weight), in `[1, 4096]`; more points spread keys more evenly. Default 128.
    pub vnodes: u32,
    /// Hash the value of this request header. Default none.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// Hash the value of this cookie. Default none.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub cookie: Option<String>,
    /// Hash the request path (without the query). Default false.
    pub path: bool,
}

impl Default for HashConfig {
    fn default() -> Self {
        Self {
            load_factor: 1.25,
            vnodes: 128,
            header: None,
            cookie: None,
            path: false,
        }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_share: 0.5,
            interval: Duration::from_secs(10),
            success_rate: true,
            success_rate_min_requests: 100,
            success_rate_min_hosts: 5,
            success_rate_stdev_factor: 1.9,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

fn unit(field: &'static str, v: f64, zero_ok: bool) -> Result<(), ConfigError> {
    let ok = v.is_finite() && v <= 1.0 && if zero_ok { v >= 0.0 } else { v > 0.0 };
    if ok {
        Ok(())
    } else if zero_ok {
        Err(ConfigError::new(
            field,
            format!("must be in [0, 1], got {v}"),
        ))
    } else {
        Err(ConfigError::new(
            field,
            format!("must be in (0, 1], got {v}"),
        ))
    }
}

fn positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

impl BalanceConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("decay", self.decay)?;
        positive("default_rtt", self.default_rtt)?;
        unit("failure_weight", self.failure_weight, false)?;
        positive("failure_decay", self.failure_decay)?;
        if !(self.failure_penalty.is_finite() && (0.0..=16.0).contains(&self.failure_penalty)) {
            return Err(ConfigError::new(
                "failure_penalty",
                format!("must be in [0, 16], got {}", self.failure_penalty),
            ));
        }
        unit("panic_threshold", self.panic_threshold, true)?;
        unit("slow_start_min_weight", self.slow_start_min_weight, false)?;
        self.outlier.validate()?;
        self.health.validate()?;
        self.hash.validate()
    }
}

impl OutlierConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("outlier.base_ejection_time", self.base_ejection_time)?;
        if self.max_ejection_time < self.base_ejection_time {
            return Err(ConfigError::new(
                "outlier.max_ejection_time",
                "must be at least `base_ejection_time`",
            ));
        }
        unit("outlier.max_ejection_share", self.max_ejection_share, true)?;
        positive("outlier.interval", self.interval)?;
        if self.success_rate_min_hosts < 2 {
            return Err(ConfigError::new(
                "outlier.success_rate_min_hosts",
                "must be at least 2",
            ));
        }
        if !(self.success_rate_stdev_factor.is_finite() && self.success_rate_stdev_factor >= 0.0) {
            return Err(ConfigError::new(
                "outlier.success_rate_stdev_factor",
                "must be a finite number at least 0",
            ));
        }
        Ok(())
    }
}

impl HealthConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("health.interval", self.interval)?;
        positive("health.timeout", self.timeout)?;
        if self.unhealthy_threshold == 0 {
            return Err(ConfigError::new(
                "health.unhealthy_threshold",
                "must be at least 1",
            ));
        }
        if self.healthy_threshold == 0 {
            return Err(ConfigError::new(
                "health.healthy_threshold",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl HashConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range, or the key fields when more
    /// than one is set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.load_factor.is_finite() && (1.0..=100.0).contains(&self.load_factor)) {
            return Err(ConfigError::new(
                "hash.load_factor",
                format!("must be in [1, 100], got {}", self.load_factor),
            ));
        }
        if !(1..=4096).contains(&self.vnodes) {
            return Err(ConfigError::new(
                "hash.vnodes",
                format!("must be in [1, 4096], got {}", self.vnodes),
            ));
        }
        let sources = usize::from(self.header.is_some())
            + usize::from(self.cookie.is_some())
            + usize::from(self.path);
        if sources > 1 {
            return Err(ConfigError::new(
                "hash",
                "sets more than one of `header`, `cookie` and `path`",
            ));
        }
        if self.header.as_deref() == Some("") || self.cookie.as_deref() == Some("") {
            let field = if self.header.is_some() {
                "hash.header"
            } else {
                "hash.cookie"
            };
            return Err(ConfigError::new(field, "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(BalanceConfig::default().validate(), Ok(()));
    }

    #[test]
    fn names_the_bad_field() {
        let mut c = BalanceConfig {
            failure_weight: 0.0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field(), "failure_weight");
        c.failure_weight = 0.1;
        c.outlier.max_ejection_time = Duration::from_secs(1);
        assert_eq!(
            c.validate().unwrap_err().field(),
            "outlier.max_ejection_time"
        );
        c.outlier = OutlierConfig::default();
        c.health.healthy_threshold = 0;
        assert_eq!(
            c.validate().unwrap_err().field(),
            "health.healthy_threshold"
        );
        c.health = HealthConfig::default();
        c.panic_threshold = 1.5;
        assert_eq!(c.validate().unwrap_err().field(), "panic_threshold");
        c.panic_threshold = 0.5;
        c.decay = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field(), "decay");
        c.decay = Duration::from_secs(1);
        c.hash.load_factor = 0.9;
        assert_eq!(c.validate().unwrap_err().field(), "hash.load_factor");
        c.hash.load_factor = 1.25;
        c.hash.vnodes = 0;
        assert_eq!(c.validate().unwrap_err().field(), "hash.vnodes");
        c.hash.vnodes = 64;
        c.hash.header = Some("x-user".into());
        c.hash.path = true;
        assert_eq!(c.validate().unwrap_err().field(), "hash");
    }
}
