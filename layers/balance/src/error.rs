//! The balancer's own rejection.

use std::fmt;

/// The balancer has no endpoints; the request was not sent.
///
/// Returned by `poll_ready` at once, never after a wait: an empty endpoint set is a
/// configuration or discovery problem the caller should see, not a reason to hang.
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

impl std::error::Error for NoEndpoints {}
