//! Counters of what the cache did, kept in per-core cells and summed on demand.

use tollgate_core::counter::ShardedCounter;

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Keyed requests that got past L1 (lookups = these + L1 hits).
    pub(crate) l2_lookups: ShardedCounter,
    pub(crate) l2_hits: ShardedCounter,
    pub(crate) l3_hits: ShardedCounter,
    pub(crate) inner_calls: ShardedCounter,
    pub(crate) coalesced: ShardedCounter,
    pub(crate) stale_served: ShardedCounter,
    pub(crate) stale_if_error: ShardedCounter,
    pub(crate) refreshes: ShardedCounter,
    pub(crate) takeovers: ShardedCounter,
    pub(crate) wait_timeouts: ShardedCounter,
    pub(crate) bypassed: ShardedCounter,
    pub(crate) invalidations: ShardedCounter,
    pub(crate) l3_errors: ShardedCounter,
}

impl Stats {
    /// The counters, given L1's hits (counted in L1's own tables).
    pub(crate) fn snapshot(&self, l1_hits: u64) -> CacheSnapshot {
        let n = |c: &ShardedCounter| c.sum().max(0) as u64;
        CacheSnapshot {
            lookups: n(&self.l2_lookups) + l1_hits,
            l1_hits,
            l2_hits: n(&self.l2_hits),
            l3_hits: n(&self.l3_hits),
            inner_calls: n(&self.inner_calls),
            coalesced: n(&self.coalesced),
            stale_served: n(&self.stale_served),
            stale_if_error: n(&self.stale_if_error),
            refreshes: n(&self.refreshes),
            takeovers: n(&self.takeovers),
            wait_timeouts: n(&self.wait_timeouts),
            bypassed: n(&self.bypassed),
            invalidations: n(&self.invalidations),
            l3_errors: n(&self.l3_errors),
        }
    }
}

/// A snapshot of the cache's counters since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheSnapshot {
    /// Requests that had a key (everything but bypassed ones).
    pub lookups: u64,
    /// Answered from this thread's L1.
    pub l1_hits: u64,
    /// Answered from L2 (fresh, or stale while revalidating).
    pub l2_hits: u64,
    /// Answered from L3 (Redis).
    pub l3_hits: u64,
    /// Requests this cache sent to the inner service (misses, takeovers, refreshes, timeouts).
    pub inner_calls: u64,
    /// Misses answered by another request's call (single-flight).
    pub coalesced: u64,
    /// Stale entries served while a background refresh ran (stale-while-revalidate).
    pub stale_served: u64,
    /// Stale entries served in place of a failure (stale-if-error).
    pub stale_if_error: u64,
    /// Background refreshes started (stale-while-revalidate and XFetch).
    pub refreshes: u64,
    /// Waiters that took over a flight whose leader failed or left.
    pub takeovers: u64,
    /// Waiters that stopped waiting after `coalesce_timeout` and called the inner service.
    pub wait_timeouts: u64,
    /// Requests without a key, passed straight through.
    pub bypassed: u64,
    /// Keys invalidated here or, through L3, by another instance.
    pub invalidations: u64,
    /// L3 operations that failed, timed out, were refused by its breaker or returned garbage.
    pub l3_errors: u64,
}

impl CacheSnapshot {
    fn ratio(n: u64, d: u64) -> f64 {
        if d == 0 { 0.0 } else { n as f64 / d as f64 }
    }

    /// Share of lookups answered by any tier.
    pub fn hit_ratio(&self) -> f64 {
        Self::ratio(self.l1_hits + self.l2_hits + self.l3_hits, self.lookups)
    }

    /// Share of lookups answered by L1.
    pub fn l1_hit_ratio(&self) -> f64 {
        Self::ratio(self.l1_hits, self.lookups)
    }

    /// Share of lookups answered by L2.
    pub fn l2_hit_ratio(&self) -> f64 {
        Self::ratio(self.l2_hits, self.lookups)
    }

    /// Share of lookups answered by L3.
    pub fn l3_hit_ratio(&self) -> f64 {
        Self::ratio(self.l3_hits, self.lookups)
    }
}
