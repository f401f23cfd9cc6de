//! The typed rejection.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::error::{DeadlineExceeded, Overloaded, RateLimited};

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Its class's queue (or the queue over all classes) was full.
    QueueFull,
    /// It was waiting and made room for a higher class.
    Shed,
    /// It waited longer than the queue-time bound.
    QueueTimeout,
    /// Its deadline passed, or could not be met, before it took capacity.
    Deadline,
    /// Its key spent its rate limit.
    RateLimited,
    /// Client-side adaptive throttling turned it away.
    Throttled,
}

impl Reason {
    /// Every reason, in the order snapshots list them.
    pub const ALL: [Reason; 6] = [
        Reason::QueueFull,
        Reason::Shed,
        Reason::QueueTimeout,
        Reason::Deadline,
        Reason::RateLimited,
        Reason::Throttled,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short lower-case name (`"queue full"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue full",
            Reason::Shed => "shed",
            Reason::QueueTimeout => "queue timeout",
            Reason::Deadline => "deadline",
            Reason::RateLimited => "rate limited",
            Reason::Throttled => "throttled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
enum Cause {
    Overloaded(Overloaded),
    RateLimited(RateLimited),
    Deadline(DeadlineExceeded),
}

/// The admission layer turned the request away; it was not sent to the inner service.
///
/// Its `source()` is the matching `tollgate-core` error, so a gateway can pick a status with
/// [`is_caused_by`](tollgate_core::error::is_caused_by): [`Overloaded`] for queue full, shed,
/// queue timeout and throttled, [`RateLimited`] for rate limited, [`DeadlineExceeded`] for
/// deadline.
#[derive(Debug, Clone)]
pub struct Rejected {
    class: usize,
    class_name: Arc<str>,
    reason: Reason,
    retry_after: Option<Duration>,
    cause: Cause,
}

impl Rejected {
    pub(crate) fn new(
        class: usize,
        class_name: Arc<str>,
        reason: Reason,
        retry_after: Option<Duration>,
    ) -> Self {
        let cause = match reason {
            Reason::RateLimited => {
                Cause::RateLimited(RateLimited::new(retry_after.unwrap_or_default()))
            }
            Reason::Deadline => Cause::Deadline(DeadlineExceeded::not_sent()),
            _ => Cause::Overloaded(Overloaded::new(retry_after)),
        };
        Self {
            class,
            class_name,
            reason,
            retry_after,
            cause,
        }
    }

    /// The request's class index (0 is the highest priority).
    pub fn class(&self) -> usize {
        self.class
    }

    /// The request's class name.
    pub fn class_name(&self) -> &str {
        &self.class_name
    }

    /// Why it was turned away.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// A suggested wait before retrying, when one is known. `None` for a deadline.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request of class `{}` rejected: {}",
            self.class_name, self.reason
        )
    }
}

impl Error for Rejected {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(match &self.cause {
            Cause::Overloaded(e) => e,
            Cause::RateLimited(e) => e,
            Cause::Deadline(e) => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::error::is_caused_by;

    #[test]
    fn causes_follow_the_reason() {
        let r = |reason| Rejected::new(2, "low".into(), reason, Some(Duration::from_millis(5)));
        assert!(is_caused_by::<Overloaded>(&r(Reason::QueueFull)));
        assert!(is_caused_by::<Overloaded>(&r(Reason::Throttled)));
        assert!(is_caused_by::<RateLimited>(&r(Reason::RateLimited)));
        assert!(is_caused_by::<DeadlineExceeded>(&r(Reason::Deadline)));
        let e = r(Reason::QueueTimeout);
        assert_eq!(
            e.to_string(),
            "request of class `low` rejected: queue timeout"
        );
        assert_eq!(
            (e.class(), e.class_name(), e.reason()),
            (2, "low", Reason::QueueTimeout)
        );
        assert_eq!(e.retry_after(), Some(Duration::from_millis(5)));
    }
}
