//! What flows through a simulation: requests, responses and the backend's errors.

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// One simulated request, as the load generator issues it.
///
/// Layers under test classify requests by `class` (a priority: 0 is the most important by
/// convention), `key` (a routing or cache key) or `tag` (free for the test).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SimRequest {
    /// Sequence number, unique within one load run, from 0.
    pub id: u64,
    /// A small class or priority, chosen from the generator's class mix (default 0).
    pub class: u8,
    /// A key drawn from the generator's key space (default: the id).
    pub key: u64,
    /// Free for the test; copied from the generator's `tag`.
    pub tag: u32,
    /// When the generator issued the request.
    pub issued_at: Instant,
    /// When the caller stops caring about the answer, if the generator sets a deadline.
    pub deadline: Option<Instant>,
}

impl SimRequest {
    /// A request issued now, with `id` as its key, class 0 and no deadline.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            class: 0,
            key: id,
            tag: 0,
            issued_at: Instant::now(),
            deadline: None,
        }
    }

    /// Sets the class.
    pub fn with_class(mut self, class: u8) -> Self {
        self.class = class;
        self
    }

    /// Sets the deadline to `timeout` after `issued_at`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Some(self.issued_at + timeout);
        self
    }
}

/// A successful answer from a [`SimBackend`](crate::SimBackend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResponse {
    /// The request's id.
    pub id: u64,
    /// The request's class.
    pub class: u8,
    /// The id of the backend that served it (see `SimBackendBuilder::id`).
    pub backend: usize,
    /// Time spent waiting for a free worker.
    pub queued: Duration,
    /// Time spent being served.
    pub service: Duration,
}

/// Why a [`SimBackend`](crate::SimBackend) failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimError {
    /// The request was served but failed (drawn from the failure rate).
    Failed,
    /// The backend had no workers at all when the request arrived.
    Unavailable,
    /// The backend's queue was full when the request arrived.
    QueueFull,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimError::Failed => "simulated failure",
            SimError::Unavailable => "simulated backend unavailable",
            SimError::QueueFull => "simulated backend queue full",
        })
    }
}

impl std::error::Error for SimError {}
