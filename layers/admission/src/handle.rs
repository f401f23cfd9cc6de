//! Observing and steering a layer from outside the request path.

use crate::controller::{Controller, Shards};
use crate::stats::Snapshot;
use std::fmt;
use std::sync::Arc;

/// A handle on one [`AdmissionLayer`](crate::AdmissionLayer)'s shared state. Cheap to clone.
#[derive(Clone)]
pub struct AdmissionHandle {
    shards: Arc<Shards>,
}

impl AdmissionHandle {
    pub(crate) fn new(shards: Arc<Shards>) -> Self {
        Self { shards }
    }

    fn ctrl(&self) -> &Controller {
        self.shards.ctrl()
    }

    /// Counts, queue lengths and queue-wait percentiles per class. Takes the queue lock
    /// briefly.
    pub fn snapshot(&self) -> Snapshot {
        self.shards.snapshot()
    }

    /// Requests queued now, over all classes and per class (cheaper than a snapshot).
    #[cfg(any(fuzzing, feature = "fuzzing"))]
    pub(crate) fn queued(&self) -> (usize, Vec<usize>) {
        let slow = self.ctrl().lock();
        (slow.queued, slow.queues.iter().map(|q| q.len()).collect())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.ctrl().in_flight()
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.ctrl().limit()
    }

    /// Changes a fixed limit (0 counts as 1) and admits waiters that now fit. Returns `false`,
    /// changing nothing, when the limit comes from a [`Capacity`](crate::Capacity) instead.
    pub fn set_limit(&self, limit: usize) -> bool {
        let Some(fixed) = self.ctrl().fixed() else {
            return false;
        };
        fixed.set(limit);
        self.ctrl().poke();
        true
    }

    /// Forgets rate-limit keys whose bucket has refilled (they behave exactly like unseen
    /// keys). The store never holds more than `max_keys` anyway; call this periodically to
    /// give memory back sooner.
    pub fn forget_idle_keys(&self) {
        if let Some(r) = &self.ctrl().rate {
            r.forget_idle();
        }
    }

    /// Admits waiters that fit under the current limit; call it when an adaptive
    /// [`Capacity`](crate::Capacity) grows, or waiters are admitted only when the next request
    /// finishes.
    pub fn capacity_changed(&self) {
        self.ctrl().poke();
    }
}

impl fmt::Debug for AdmissionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionHandle")
            .field("in_flight", &self.in_flight())
            .field("limit", &self.limit())
            .finish()
    }
}
