//! Errors shared by the layers, and helpers that walk an error chain.
//!
//! A layer that can reject returns a [`BoxError`] holding a small public type named after the
//! event (the breaker's `Open`, [`Overloaded`], [`DeadlineExceeded`]). Callers test with
//! `err.is::<Overloaded>()`, or with [`is_caused_by`] when the rejection may be wrapped by an
//! outer layer. Inner errors pass through unchanged.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The boxed error type every rejecting layer returns, as in `tower`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Whether `err`, or any error in its `source()` chain, is a `T`.
///
/// ```
/// use tollgate_core::error::{is_caused_by, Overloaded};
/// let err: tollgate_core::BoxError = Box::new(Overloaded::new(None));
/// assert!(is_caused_by::<Overloaded>(&*err));
/// ```
pub fn is_caused_by<T: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    find_cause::<T>(err).is_some()
}

/// The first `T` in `err`'s `source()` chain, starting with `err` itself.
pub fn find_cause<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The service has no capacity for this request right now; it was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    retry_after: Option<Duration>,
}

impl Overloaded {
    /// A rejection, with a suggested time to wait before retrying if one is known.
    pub fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// How long the caller should wait before retrying, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service overloaded")
    }
}

impl Error for Overloaded {}

/// The caller exceeded its rate limit; the request was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    /// A rejection that can be retried after `retry_after`.
    pub fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until the request would be allowed.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit exceeded")
    }
}

impl Error for RateLimited {}

/// The request's deadline passed, or could not be met, before it was answered.
///
/// [`DeadlineExceeded::new`] says nothing about whether the request reached the upstream (a
/// timeout around the whole call: the upstream may be what was slow), so a breaker above it
/// counts it as a failure. [`DeadlineExceeded::not_sent`] is a rejection: the deadline was
/// already past, or could not be met, before the request was sent, which says nothing about
/// the upstream ([`is_rejection`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadlineExceeded {
    not_sent: bool,
}

impl DeadlineExceeded {
    /// Creates the error; the request may have been sent.
    pub fn new() -> Self {
        Self { not_sent: false }
    }

    /// The deadline passed (or could not be met) before the request was sent: a rejection.
    pub fn not_sent() -> Self {
        Self { not_sent: true }
    }

    /// Whether the request was turned away before it was sent ([`DeadlineExceeded::not_sent`]).
    pub fn was_not_sent(&self) -> bool {
        self.not_sent
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// The inner service panicked while handling this request (or a batch holding it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    message: Option<String>,
}

impl Panicked {
    /// Creates the error from a panic payload, keeping its message when it is a string.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        Self { message }
    }

    /// The panic message, when the payload was a string.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "inner service panicked: {m}"),
            None => f.write_str("inner service panicked"),
        }
    }
}

impl Error for Panicked {}

/// The service is closed (shut down, or the task serving it went away); the request was not
/// answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Closed(());

impl Closed {
    /// Creates the error.
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service closed")
    }
}

impl Error for Closed {}

/// The service has no endpoints to send the request to (a balancer over an empty set); the
/// request was not sent.
///
/// Returned at once, never after a wait: an empty endpoint set is a configuration or discovery
/// problem the caller should see, not a reason to hang. tollgate-balance re-exports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoEndpoints(());

impl NoEndpoints {
    /// Creates the error.
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoints to balance over")
    }
}

impl Error for NoEndpoints {}

/// The cause behind a tollgate layer's own refusal that has an error type of its own (a circuit
/// breaker's `Open`): the request was not sent. Such an error returns it from `source()`, so
/// [`is_rejection`] knows it without knowing the layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refused(());

impl Refused {
    /// Creates the error.
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused before it was sent")
    }
}

impl Error for Refused {}

/// Whether `err` (or an error in its `source()` chain) is a rejection made by a tollgate layer
/// before the request reached the upstream: [`Overloaded`] (a pool or admission shedding),
/// [`RateLimited`], [`NoEndpoints`], a [`DeadlineExceeded::not_sent`], or [`Refused`] (behind
/// a breaker's `Open`: an endpoint breaker below a cluster breaker or an outlier detector
/// is not the upstream failing again).
///
/// A rejection says nothing about the upstream's health, so breakers, outlier detectors and
/// limiters above the layer that made it record it as
/// [`Outcome::Ignored`](crate::Outcome::Ignored), whatever their classifier says (see
/// [`classify_upstream`](crate::classify::classify_upstream)): otherwise a pool shedding
/// under load would open the breaker above it and turn shedding into an outage.
pub fn is_rejection(err: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<Overloaded>()
            || e.is::<RateLimited>()
            || e.is::<NoEndpoints>()
            || e.is::<Refused>()
            || e.downcast_ref::<DeadlineExceeded>()
                .is_some_and(DeadlineExceeded::was_not_sent)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An invalid configuration value, naming the field and what is wrong with it.
///
/// Every layer's `Config::validate` returns this, so a bad config is rejected when the layer is
/// built, never with a panic later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    problem: String,
}

impl ConfigError {
    /// `field` is the config field's name as the user wrote it (`"failure_rate_threshold"`).
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }

    /// The offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.problem)
    }
}

impl Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn walks_the_chain() {
        let err = Wrapper(Box::new(RateLimited::new(Duration::from_secs(2))));
        assert!(is_caused_by::<RateLimited>(&err));
        assert!(!is_caused_by::<Overloaded>(&err));
        assert_eq!(
            find_cause::<RateLimited>(&err).unwrap().retry_after(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn rejections_are_told_from_failures() {
        assert!(is_rejection(&Wrapper(Box::new(Overloaded::new(None)))));
        assert!(is_rejection(&RateLimited::new(Duration::ZERO)));
        assert!(is_rejection(&NoEndpoints::new()));
        assert!(is_rejection(&Wrapper(Box::new(
            DeadlineExceeded::not_sent()
        ))));
        // A timeout around a call that was sent may be the upstream's fault.
        assert!(!is_rejection(&DeadlineExceeded::new()));
        assert!(!is_rejection(&Closed::new()));
        assert!(!is_rejection(&Wrapper(Box::new(std::io::Error::other(
            "x"
        )))));
    }

    #[test]
    fn messages_are_lower_case_without_stop() {
        let msgs = [
            Overloaded::new(None).to_string(),
            RateLimited::new(Duration::ZERO).to_string(),
            DeadlineExceeded::new().to_string(),
            Panicked::from_payload(&"boom").to_string(),
            Closed::new().to_string(),
            NoEndpoints::new().to_string(),
            ConfigError::new("window_size", "must be at least 1").to_string(),
        ];
        for m in msgs {
            assert!(!m.ends_with('.'), "{m}");
            assert!(
                m.chars().next().unwrap().is_lowercase() || m.starts_with("invalid"),
                "{m}"
            );
        }
        assert_eq!(
            Panicked::from_payload(&String::from("x")).message(),
            Some("x")
        );
    }
}
