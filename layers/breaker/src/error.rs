//! The rejection a breaker answers with instead of calling the inner service.

use std::fmt;
use std::time::Duration;

/// The breaker is open (or its half-open probes are all taken); the request was not sent.
///
/// [`retry_after`](Open::retry_after) says when the breaker will next let a probe through, for a
/// `Retry-After` header. Test for it with `err.is::<Open>()`, or with
/// [`tollgate_core::error::is_caused_by`] when an outer layer may have wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    retry_after: Option<Duration>,
}

impl Open {
    pub(crate) fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// The time until the breaker lets the next probe through: `Some` while it is open and
    /// waiting, `None` when that is unknown (forced open by a handle, or half-open with every
    /// probe slot taken, where a slot frees whenever a probe finishes).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker is open")
    }
}

/// Its cause, for layers above: a refusal, the request was not sent.
static REFUSED: tollgate_core::error::Refused = tollgate_core::error::Refused::new();

impl std::error::Error for Open {
    /// [`Refused`](tollgate_core::error::Refused): so a breaker, pool or outlier detector
    /// above ([`is_rejection`](tollgate_core::error::is_rejection)) does not count this
    /// breaker's refusal as the upstream failing.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&REFUSED)
    }
}
