//! Striped counters and shard indices for many-core hot paths.
//!
//! One `AtomicU64` bumped by every core turns the cache line holding it into the bottleneck:
//! each increment must take the line exclusively. A [`ShardedCounter`] keeps one cache-padded
//! cell per shard; a thread always uses the cell chosen by [`shard_index`], so on a host with as
//! many shards as cores increments never share a line. Reading the total sums all cells, which
//! is cheap enough for snapshots and metrics but not for the request path.

use crate::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use std::sync::OnceLock;

/// The number of shards used by sharded structures in this process: the number of available
/// cores rounded up to a power of two, at least 1 and at most 64.
pub fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .clamp(1, 64)
    })
}

/// This thread's shard, a stable number below [`shard_count`].
///
/// Threads are numbered round-robin as they first ask, so the first `shard_count()` threads
/// (typically the runtime's workers) get distinct shards.
pub fn shard_index() -> usize {
    // Relaxed: the counter only hands out distinct numbers; nothing is published through it.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    INDEX.with(|i| *i) & (shard_count() - 1)
}

/// A counter split over cache-padded cells, one per shard.
///
/// Cells are signed so a value can be added on one thread and subtracted on another (an
/// in-flight count): individual cells may go negative, the sum is what counts.
#[derive(Debug)]
pub struct ShardedCounter {
    cells: Box<[CachePadded<AtomicI64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardedCounter {
    /// Creates a counter at zero with [`shard_count`] cells.
    pub fn new() -> Self {
        Self::with_shards(shard_count())
    }

    /// Creates a counter at zero with `shards` cells (rounded up to a power of two, at least 1).
    pub fn with_shards(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            cells: (0..n)
                .map(|_| CachePadded::new(AtomicI64::new(0)))
                .collect(),
        }
    }

    fn cell(&self) -> &AtomicI64 {
        &self.cells[shard_index() & (self.cells.len() - 1)]
    }

    /// Adds `n` to this thread's cell.
    pub fn add(&self, n: i64) {
        // Relaxed: a counter publishes no other memory; `sum` is a statistic.
        self.cell().fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn decr(&self) {
        self.add(-1);
    }

    /// The sum of all cells. Concurrent updates may or may not be included.
    pub fn sum(&self) -> i64 {
        // Relaxed: statistics only.
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sets every cell to zero and returns the sum they held.
    pub fn take(&self) -> i64 {
        // Relaxed: statistics only; increments racing with the reset land either side of it.
        self.cells
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .sum()
    }

    /// The number of cells.
    pub fn shards(&self) -> usize {
        self.cells.len()
    }
}

/// A gauge of the largest value ever offered, for "max in flight" style statistics.
#[derive(Debug, Default)]
pub struct MaxGauge {
    max: AtomicUsize,
}

impl MaxGauge {
    /// Creates a gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the gauge to `value` if it is larger.
    pub fn offer(&self, value: usize) {
        // Relaxed: statistics only.
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// The largest value offered so far.
    pub fn get(&self) -> usize {
        // Relaxed: statistics only.
        self.max.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_across_threads() {
        let c = Arc::new(ShardedCounter::with_shards(4));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.incr();
                    }
                    if i % 2 == 0 {
                        c.add(-500);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.sum(), 8 * 1000 - 4 * 500);
        assert_eq!(c.take(), 6000);
        assert_eq!(c.sum(), 0);
    }

    #[test]
    fn shards_are_powers_of_two() {
        assert!(shard_count().is_power_of_two());
        assert!(shard_index() < shard_count());
        assert_eq!(ShardedCounter::with_shards(3).shards(), 4);
        assert_eq!(ShardedCounter::with_shards(0).shards(), 1);
    }

    #[test]
    fn max_gauge_keeps_the_largest() {
        let g = MaxGauge::new();
        g.offer(3);
        g.offer(1);
        assert_eq!(g.get(), 3);
    }
}
