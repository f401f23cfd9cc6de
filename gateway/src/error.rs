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

/// The client's request body failed while the gateway buffered it for retries (the client went
/// away mid-body, or broke its framing): answered like a body the upstream could not read.
#[derive(Debug)]
pub(crate) struct ClientBodyFailed(pub(crate) tollgate_core::BoxError);

impl std::fmt::Display for ClientBodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body could not be read: {}", self.0)
    }
}

impl std::error::Error for ClientBodyFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
