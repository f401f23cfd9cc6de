//! Sliding windows of call outcomes.
//!
//! Both windows keep three counters packed into one `u64` (21 bits each: calls, failures, slow
//! calls), so recording an outcome is one `fetch_add` of a delta.
//!
//! # Ground rules
//! - [`CountWindow`]: any recorder claims the next ring position with `head`, swaps its outcome
//!   into that slot and adds the difference between the new and the evicted outcome to
//!   `counts`. Because every slot change applies exactly its own delta, `counts` always equals
//!   the sum over the slots once in-flight recorders finish. A success replacing a success
//!   writes nothing but `head`.
//! - [`TimeWindow`]: a bucket belongs to the time slice in its `epoch`; the first recorder of a
//!   newer slice claims the bucket with a CAS on `epoch` and restarts its count. A recorder
//!   racing that restart may lose its call: a handful of calls at a bucket boundary, which a
//!   rate over a window tolerates.
//! - `clear` runs under the breaker's transition lock, when the breaker closes.
//!
//! Every ordering here is `Relaxed`: the windows are statistics, nothing else is published
//! through them, and the state word orders the transitions.

use crate::config::SlidingWindow;
use crate::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use crossbeam_utils::CachePadded;

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// A slot's outcome: bit 0 a call is recorded, bit 1 it failed, bit 2 it was slow.
pub(crate) const RECORDED: u8 = 1;
pub(crate) const FAILED: u8 = 2;
pub(crate) const SLOW: u8 = 4;

/// An outcome as a slot value.
pub(crate) fn slot_value(failed: bool, slow: bool) -> u8 {
    RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 }
}

/// The packed counters one slot value adds.
fn packed(v: u8) -> u64 {
    u64::from(v & 1)
        | (u64::from((v >> 1) & 1) << FIELD_BITS)
        | (u64::from((v >> 2) & 1) << (2 * FIELD_BITS))
}

/// The window's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    fn unpack(w: u64) -> Self {
        Counts {
            calls: w & FIELD_MASK,
            failures: (w >> FIELD_BITS) & FIELD_MASK,
            slow: (w >> (2 * FIELD_BITS)) & FIELD_MASK,
        }
    }
}

/// The last N calls, exactly.
#[derive(Debug)]
pub(crate) struct CountWindow {
    head: CachePadded<AtomicU64>,
    counts: CachePadded<AtomicU64>,
    slots: Box<[AtomicU8]>,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            counts: CachePadded::new(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Records one outcome; returns the new totals when they changed.
    #[inline]
    fn record(&self, v: u8) -> Option<Counts> {
        // Relaxed: only hands out distinct ring positions; slots and counts are statistics.
        let pos = self.head.fetch_add(1, Relaxed);
        let slot = &self.slots[(pos % self.slots.len() as u64) as usize];
        // A success evicting a success leaves every total as it is: skip the shared writes.
        if slot.load(Relaxed) == v {
            return None;
        }
        let old = slot.swap(v, Relaxed);
        if old == v {
            return None;
        }
        let delta = packed(v).wrapping_sub(packed(old));
        Some(Counts::unpack(
            self.counts.fetch_add(delta, Relaxed).wrapping_add(delta),
        ))
    }

    fn counts(&self) -> Counts {
        Counts::unpack(self.counts.load(Relaxed))
    }

    fn clear(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Relaxed);
            if old != 0 {
                self.counts.fetch_sub(packed(old), Relaxed);
            }
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }
}

#[derive(Debug)]
struct Bucket {
    /// The time slice (`now / bucket_ns + 1`) this bucket counts; 0 when empty.
    epoch: AtomicU64,
    counts: AtomicU64,
}

/// The calls that finished in the last `length`, in buckets.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_ns: u64,
    buckets: Box<[CachePadded<Bucket>]>,
}

impl TimeWindow {
    fn new(length_ns: u64, buckets: u32) -> Self {
        Self {
            bucket_ns: (length_ns / u64::from(buckets)).max(1),
            buckets: (0..buckets)
                .map(|_| {
                    CachePadded::new(Bucket {
                        epoch: AtomicU64::new(0),
                        counts: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    fn slice(&self, now: u64) -> u64 {
        now / self.bucket_ns + 1
    }

    fn record(&self, v: u8, now: u64) -> Counts {
        let slice = self.slice(now);
        let bucket = &self.buckets[(slice % self.buckets.len() as u64) as usize];
        loop {
            let epoch = bucket.epoch.load(Relaxed);
            if epoch == slice {
                bucket.counts.fetch_add(packed(v), Relaxed);
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
                bucket.counts.store(packed(v), Relaxed);
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
                let c = Counts::unpack(b.counts.load(Relaxed));
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
            b.counts.store(0, Relaxed);
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
    pub(crate) fn new(config: &SlidingWindow) -> Self {
        match *config {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size)),
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

    /// The most calls the window can hold before a decision (for the minimum-calls rule).
    pub(crate) fn capacity(&self) -> u64 {
        match self {
            Window::Count(w) => w.len(),
            Window::Time(_) => u64::MAX,
        }
    }

    /// Records an outcome; returns the totals when they may have changed.
    #[inline]
    pub(crate) fn record(&self, v: u8, now: impl FnOnce() -> u64) -> Option<Counts> {
        match self {
            Window::Count(w) => w.record(v),
            Window::Time(w) => Some(w.record(v, now())),
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
