//! Where the limit on requests in flight comes from.
//!
//! The admission layer counts requests in flight itself, in one atomic word that also says
//! whether anyone is queued: that is what lets a request take a slot with a single
//! compare-and-swap when nobody waits, and lets a finishing request hand its slot straight to
//! the highest waiting class when somebody does. A [`Capacity`] only says how many may be in
//! flight ([`Capacity::limit`], read on every admission) and learns from each finished request
//! ([`Capacity::on_release`]), which is all an adaptive limit (tollgate-pool's) needs. The
//! trait lives in tollgate-core, so that tollgate-pool implements it for its `Limiter` without
//! either crate depending on the other.

use std::sync::atomic::{AtomicUsize, Ordering};
pub use tollgate_core::capacity::{Capacity, Slot};

/// A limit that changes only when told to.
#[derive(Debug)]
pub struct FixedLimit {
    limit: AtomicUsize,
}

impl FixedLimit {
    /// A limit of `limit` requests in flight (0 counts as 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit.max(1)),
        }
    }

    /// Changes the limit (0 counts as 1). Waiters are admitted when the next request finishes,
    /// or at once through [`AdmissionHandle::set_limit`](crate::AdmissionHandle::set_limit).
    pub fn set(&self, limit: usize) {
        // Relaxed: the limit guards no other memory; a reader seeing the old value for a moment
        // admits or holds one request more or less, as if it had looked a moment earlier.
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }
}

impl Capacity for FixedLimit {
    #[inline]
    fn limit(&self) -> usize {
        // Relaxed: see `set`.
        self.limit.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::Outcome;

    #[test]
    fn a_fixed_limit_is_at_least_one() {
        let l = FixedLimit::new(0);
        assert_eq!(l.limit(), 1);
        l.set(7);
        assert_eq!(l.limit(), 7);
        assert!(!l.wants_latency());
        l.on_release(Slot::EMPTY, None, Outcome::Success);
    }
}
