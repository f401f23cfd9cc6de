//! Counters behind [`BatchSnapshot`]. Every counter is Relaxed: they are statistics and
//! publish no other memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_core::counter::{MaxGauge, ShardedCounter};

/// Why a batch was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// It reached `max_items`.
    Full,
    /// It reached `max_weight`.
    Weight,
    /// Its oldest request waited out the linger.
    Linger,
    /// Nothing was in flight and arrivals were sparse, so it went at once.
    Idle,
    /// A request's deadline would have passed before the linger ended.
    Deadline,
    /// The layer is shutting down and flushes what is queued.
    Shutdown,
}

impl FlushReason {
    const ALL: [FlushReason; 6] = [
        FlushReason::Full,
        FlushReason::Weight,
        FlushReason::Linger,
        FlushReason::Idle,
        FlushReason::Deadline,
        FlushReason::Shutdown,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// How many batches were sent for each [`FlushReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushCounts {
    /// Batches sent full.
    pub full: u64,
    /// Batches sent at the weight limit.
    pub weight: u64,
    /// Batches sent when the linger ran out.
    pub linger: u64,
    /// Batches sent at once because the backend was idle.
    pub idle: u64,
    /// Batches sent early for a deadline.
    pub deadline: u64,
    /// Batches sent by shutdown.
    pub shutdown: u64,
}

impl FlushCounts {
    /// The count for one reason.
    pub fn get(&self, reason: FlushReason) -> u64 {
        match reason {
            FlushReason::Full => self.full,
            FlushReason::Weight => self.weight,
            FlushReason::Linger => self.linger,
            FlushReason::Idle => self.idle,
            FlushReason::Deadline => self.deadline,
            FlushReason::Shutdown => self.shutdown,
        }
    }
}

/// A point-in-time view of a batch layer, from
/// [`BatchHandle::snapshot`](crate::handle::BatchHandle::snapshot).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchSnapshot {
    /// Batch calls made.
    pub batches: u64,
    /// Requests sent in those batches (after folding duplicates).
    pub items: u64,
    /// Callers answered by those batches (before folding).
    pub callers: u64,
    /// The largest batch sent.
    pub max_batch_size: usize,
    /// The size of the most recent batch.
    pub last_batch_size: usize,
    /// The linger the flusher used last (adaptive, at most `max_linger`).
    pub linger: Duration,
    /// Requests queued and not yet sent, over all keys.
    pub queue_depth: usize,
    /// Batch keys with state held now (a queue, a flusher or batches in flight); idle keys are
    /// forgotten. 0 when the layer is not keyed.
    pub active_keys: usize,
    /// Batch calls in flight now.
    pub in_flight: usize,
    /// Batches sent, by reason.
    pub flushes: FlushCounts,
    /// Requests rejected with [`QueueFull`](crate::error::QueueFull).
    pub rejected: u64,
    /// Requests dropped from the queue because their caller went away first.
    pub abandoned: u64,
    /// Requests failed with `DeadlineExceeded` before they were sent.
    pub expired: u64,
    /// Batch calls that failed as a whole (an error, not a panic).
    pub failed_batches: u64,
    /// Batch calls that panicked.
    pub panicked_batches: u64,
}

impl BatchSnapshot {
    /// The mean number of requests per batch call, 0 before the first.
    pub fn mean_batch_size(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.items as f64 / self.batches as f64
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    batches: AtomicU64,
    items: AtomicU64,
    callers: AtomicU64,
    max_batch: MaxGauge,
    last_batch: AtomicUsize,
    linger_nanos: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    reasons: [AtomicU64; 6],
    rejected: ShardedCounter,
    abandoned: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
}

impl Stats {
    pub(crate) fn batch_sent(&self, reason: FlushReason, items: usize, callers: usize) {
        // Relaxed (all of these): statistics only.
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.callers.fetch_add(callers as u64, Ordering::Relaxed);
        self.max_batch.offer(items);
        self.last_batch.store(items, Ordering::Relaxed);
        self.reasons[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn linger(&self, linger: Duration) {
        // Relaxed: statistics only.
        self.linger_nanos.store(
            linger.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn rejected(&self) {
        self.rejected.incr();
    }

    pub(crate) fn abandoned(&self, n: u64) {
        // Relaxed: statistics only.
        self.abandoned.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn expired(&self, n: u64) {
        // Relaxed: statistics only.
        self.expired.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        // Relaxed: statistics only.
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn panicked(&self) {
        // Relaxed: statistics only.
        self.panicked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queue_depth: usize, active_keys: usize) -> BatchSnapshot {
        // Relaxed (all loads): statistics only; the fields need not agree with each other.
        let r = |reason: FlushReason| self.reasons[reason.index()].load(Ordering::Relaxed);
        let mut flushes = FlushCounts::default();
        for reason in FlushReason::ALL {
            let n = r(reason);
            match reason {
                FlushReason::Full => flushes.full = n,
                FlushReason::Weight => flushes.weight = n,
                FlushReason::Linger => flushes.linger = n,
                FlushReason::Idle => flushes.idle = n,
                FlushReason::Deadline => flushes.deadline = n,
                FlushReason::Shutdown => flushes.shutdown = n,
            }
        }
        BatchSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            callers: self.callers.load(Ordering::Relaxed),
            max_batch_size: self.max_batch.get(),
            last_batch_size: self.last_batch.load(Ordering::Relaxed),
            linger: Duration::from_nanos(self.linger_nanos.load(Ordering::Relaxed)),
            queue_depth,
            active_keys,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            flushes,
            rejected: self.rejected.sum().max(0) as u64,
            abandoned: self.abandoned.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            failed_batches: self.failed.load(Ordering::Relaxed),
            panicked_batches: self.panicked.load(Ordering::Relaxed),
        }
    }
}
