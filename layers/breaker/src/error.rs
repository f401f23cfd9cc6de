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

impl std::error::Error for Open {}
