//! Errors of the gateway's own making on the layered request path (leaves: they import nothing
//! of the crate). How each becomes an answer is [`answer`](crate::answer)'s business.

/// A request that ran past its route's overall timeout (answered 504).
#[derive(Debug)]
pub(crate) struct RouteTimedOut;

impl std::fmt::Display for RouteTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream timed out")
    }
}

impl std::error::Error for RouteTimedOut {}

/// A try that ran past `per_try_timeout_ms`.
#[derive(Debug)]
pub(crate) struct TryTimedOut;

impl std::fmt::Display for TryTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream try timed out")
    }
}

impl std::error::Error for TryTimedOut {}
