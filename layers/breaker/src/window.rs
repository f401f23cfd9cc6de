//! Sliding windows of call outcomes.
//!
//! # Ground rules
//! - [`CountWindow`] (the last N calls): every recorded call bumps this thread's cell of a
//!   sharded call counter, so successes on different cores never write a shared cache line.
//!   A failure (or slow call) also reads the total, C, and pushes C as its position onto a ring
//!   of the last N failure (or slow-call) positions. The window is the calls numbered
//!   `max(C - N, base) + 1 ..= C`, where `base` is the total at the last clear: its failures are
//!   the ring entries above `max(C - N, base)`, found by binary search (positions only grow).
//!   A success can only lower the rates once the window holds the minimum number of calls, so
//!   after that (`warm`) a success does nothing else. With one thread the window is exact;
//!   concurrent recorders may each see the other's call or not, as with any linearization, and a
//!   reader racing a push may miss that one entry.
//! - [`TimeWindow`]: a bucket belongs to the time slice in its `epoch`; the first recorder of a
//!   newer slice claims the bucket with a CAS on `epoch` and restarts its count. A recorder
//!   racing that restart may lose its call: a handful of calls at a bucket boundary, which a
//!   rate over a window tolerates. Calls have a 64-bit counter of their own (no rate overflows
//!   it), failures and slow calls 32 bits each packed in a second word that only a failed or
//!   slow call writes: recording a success is one `fetch_add`, a failure two.
//! - `clear` runs under the breaker's transition lock, when the breaker closes.
//!
//! Every ordering here is `Relaxed`: the windows are statistics, nothing else is published
//! through them, and the state word orders the transitions.

use crate::config::SlidingWindow;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use crossbeam_utils::CachePadded;
use tollgate_core::counter::{shard_count, shard_index};

const FIELD_BITS: u32 = 32;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// A time bucket's increment of its failure and slow-call counters for one outcome.
fn marks(failed: bool, slow: bool) -> u64 {
    u64::from(failed) | (u64::from(slow) << FIELD_BITS)
}

/// The window's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    /// A bucket's counts from its call counter and its packed failure and slow-call counters
    /// (read first, so a recorder's failure is seldom seen without its call; clamped anyway).
    fn unpack(calls: u64, marks: u64) -> Self {
        Counts {
            calls,
            failures: (marks & FIELD_MASK).min(calls),
            slow: (marks >> FIELD_BITS).min(calls),
        }
    }
}

std::thread_local! {
    /// This thread's shard, cached so the hot path reads one thread-local.
    static SHARD: usize = shard_index();
}

/// A monotonic call counter split over cache-padded cells, one per shard (as tollgate-core's
/// `ShardedCounter`, inlined here because it is bumped on every call).
#[derive(Debug)]
struct Calls {
    cells: Box<[CachePadded<AtomicU64>]>,
}

impl Calls {
    fn new() -> Self {
        Self {
            cells: (0..shard_count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    #[inline]
    fn incr(&self) {
        let i = SHARD.with(|s| *s) & (self.cells.len() - 1);
        self.cells[i].fetch_add(1, Relaxed);
    }

    fn sum(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// The positions (call numbers) of the last `cap` failures or slow calls.
#[derive(Debug)]
struct Events {
    head: CachePadded<AtomicU64>,
    pos: Box<[AtomicU64]>,
}

impl Events {
    fn new(cap: u64) -> Self {
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            pos: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn push(&self, pos: u64) {
        let i = self.head.fetch_add(1, Relaxed);
        self.pos[(i % self.pos.len() as u64) as usize].store(pos, Relaxed);
    }

    /// How many kept events lie after call number `lo`.
    fn count_after(&self, lo: u64) -> u64 {
        let head = self.head.load(Relaxed);
        let cap = self.pos.len() as u64;
        let (mut a, mut b) = (head - head.min(cap), head);
        while a < b {
            let m = a + (b - a) / 2;
            if self.pos[(m % cap) as usize].load(Relaxed) > lo {
                b = m;
            } else {
                a = m + 1;
            }
        }
        head - a
    }
}

/// The last N calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    size: u64,
    min_calls: u64,
    calls: Calls,
    base: CachePadded<AtomicU64>,
    warm: CachePadded<AtomicBool>,
    failures: Events,
    slow: Option<Events>,
}

impl CountWindow {
    fn new(size: u32, min_calls: u64, slow_enabled: bool) -> Self {
        let size = u64::from(size);
        Self {
            size,
            min_calls,
            calls: Calls::new(),
            base: CachePadded::new(AtomicU64::new(0)),
            warm: CachePadded::new(AtomicBool::new(false)),
            failures: Events::new(size),
            slow: slow_enabled.then(|| Events::new(size)),
        }
    }

    /// Records one outcome; returns the totals when they may trip the breaker.
    #[inline]
    fn record(&self, failed: bool, slow: bool) -> Option<Counts> {
        self.calls.incr();
        if !failed && !slow && self.warm.load(Relaxed) {
            return None;
        }
        let c = self.total();
        if failed {
            self.failures.push(c);
        }
        if let (true, Some(events)) = (slow, &self.slow) {
            events.push(c);
        }
        let counts = self.counts_at(c);
        if counts.calls >= self.min_calls && !self.warm.load(Relaxed) {
            self.warm.store(true, Relaxed);
        }
        Some(counts)
    }

    fn total(&self) -> u64 {
        self.calls.sum()
    }

    fn counts_at(&self, c: u64) -> Counts {
        let base = self.base.load(Relaxed);
        let lo = c.saturating_sub(self.size).max(base);
        Counts {
            calls: c.saturating_sub(base).min(self.size),
            failures: self.failures.count_after(lo),
            slow: self.slow.as_ref().map_or(0, |e| e.count_after(lo)),
        }
    }

    fn counts(&self) -> Counts {
        self.counts_at(self.total())
    }

    fn clear(&self) {
        self.base.store(self.total(), Relaxed);
        self.warm.store(false, Relaxed);
    }
}

#[derive(Debug)]
struct Bucket {
    /// The time slice (`now / bucket_ns + 1`) this bucket counts; 0 when empty.
    epoch: AtomicU64,
    /// Calls recorded: a counter of its own, so no rate makes it overflow into another.
    calls: AtomicU64,
    /// Failures (low 32 bits) and slow calls (high 32 bits): written by failed or slow calls
    /// only, so a success is one `fetch_add`.
    marks: AtomicU64,
}

/// The calls that finished in the last `length`, in buckets.
///
/// Buckets are not padded: every recorder writes the current bucket anyway, and packed buckets
/// let the sum each result needs read a few cache lines rather than one per bucket.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_ns: u64,
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    fn new(length_ns: u64, buckets: u32) -> Self {
        Self {
            bucket_ns: (length_ns / u64::from(buckets)).max(1),
            buckets: (0..buckets)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    marks: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    fn slice(&self, now: u64) -> u64 {
        now / self.bucket_ns + 1
    }

    fn record(&self, failed: bool, slow: bool, now: u64) -> Counts {
        let add = marks(failed, slow);
        let slice = self.slice(now);
        let bucket = &self.buckets[(slice % self.buckets.len() as u64) as usize];
        loop {
            let epoch = bucket.epoch.load(Relaxed);
            if epoch == slice {
                bucket.calls.fetch_add(1, Relaxed);
                if add != 0 {
                    bucket.marks.fetch_add(add, Relaxed);
                }
                break;
            }
            if epoch > slice {
                // This call's slice has aged out already (the recorder stalled): drop it.
                break;
            }
            if bucket
                .epoch
                .compare_exchange(epoch, slice, Relaxed, Relaxed)
                .is_ok()
            {
                bucket.marks.store(add, Relaxed);
                bucket.calls.store(1, Relaxed);
                break;
            }
        }
        self.counts(now)
    }

    fn counts(&self, now: u64) -> Counts {
        let slice = self.slice(now);
        let n = self.buckets.len() as u64;
        let mut total = Counts::default();
        for b in self.buckets.iter() {
            let epoch = b.epoch.load(Relaxed);
            if epoch != 0 && epoch <= slice && epoch + n > slice {
                let marks = b.marks.load(Relaxed);
                let c = Counts::unpack(b.calls.load(Relaxed), marks);
                total.calls += c.calls;
                total.failures += c.failures;
                total.slow += c.slow;
            }
        }
        total
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.epoch.store(0, Relaxed);
            b.calls.store(0, Relaxed);
            b.marks.store(0, Relaxed);
        }
    }
}

/// Either window.
// One per breaker; boxing the padded count window would add an indirection to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// `min_calls` is the minimum number of calls for a decision, already capped at the
    /// window's size.
    pub(crate) fn new(config: &SlidingWindow, min_calls: u64, slow_enabled: bool) -> Self {
        match *config {
            SlidingWindow::Count { size } => {
                Window::Count(CountWindow::new(size, min_calls, slow_enabled))
            }
            SlidingWindow::Time { length, buckets } => {
                let ns = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
                Window::Time(TimeWindow::new(ns, buckets))
            }
        }
    }

    /// Whether recording needs the time.
    pub(crate) fn is_timed(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records an outcome; returns the totals when they may have changed.
    #[inline]
    pub(crate) fn record(
        &self,
        failed: bool,
        slow: bool,
        now: impl FnOnce() -> u64,
    ) -> Option<Counts> {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => Some(w.record(failed, slow, now())),
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A time bucket takes any number of calls: a busy one (millions of calls in one slice)
    /// does not wrap its call count into the failures.
    #[test]
    fn a_time_bucket_counts_past_millions_of_calls() {
        let w = TimeWindow::new(60_000_000_000, 1);
        let n = (1u64 << 21) + 5;
        for _ in 0..n {
            w.record(false, false, 0);
        }
        let c = w.record(true, true, 0);
        assert_eq!(
            c,
            Counts {
                calls: n + 1,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.counts(59_999_999_999), c);
        assert_eq!(w.counts(60_000_000_000), Counts::default(), "aged out");
    }
}
