//! The error a retry layer returns when it gives up on a retryable failure.

use std::fmt;
use tollgate_core::BoxError;

/// The layer retried a failure (or would have) and gave up: the attempts ran out, or the
/// budget had no retry left. The last attempt's error is the [`source`](std::error::Error::source).
///
/// A retry layer further out sees this in the error chain and does not retry the failure
/// again: only the layer nearest the failure retries, so stacked layers cost one layer's
/// budget, not the product of every layer's. Test for the inner error with
/// [`tollgate_core::error::is_caused_by`].
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: u32,
    budget: bool,
    source: BoxError,
}

impl RetriesExhausted {
    pub(crate) fn new(attempts: u32, budget: bool, source: BoxError) -> Self {
        Self {
            attempts,
            budget,
            source,
        }
    }

    /// Attempts made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the retry budget, rather than the attempt limit, stopped the retries.
    pub fn budget_exhausted(&self) -> bool {
        self.budget
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.budget {
            write!(f, "retry budget exhausted after {} attempts", self.attempts)
        } else {
            write!(f, "gave up after {} attempts", self.attempts)
        }
    }
}

impl std::error::Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
