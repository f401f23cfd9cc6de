//! The retry budget: a lock-free sliding window of atomic buckets, shared by every clone.
//!
//! Time is cut into buckets of `window / 10`, numbered from the budget's creation (tokio time).
//! Each bucket is one `AtomicU64` holding the bucket's number (high 40 bits, wrapping at 2^40)
//! and a count (low 24 bits), so a bucket is rotated to a new number and its count reset by one
//! compare-and-swap,
//! and a stale bucket is simply ignored by readers: no lock, no sweeper, no clock thread.
//!
//! # Ground rules
//!
//! - **Deposits** (one per request) go to this thread's shard (`tollgate_core::counter`'s
//!   shard index), a cache-padded ring of buckets, with one `fetch_add` when the bucket is
//!   current. Cores never write each other's lines on the request path; tower's `TpsBudget`
//!   takes a mutex and bumps one shared counter on every deposit.
//! - **Withdrawals** (one per retry or hedge) go to one unsharded ring. A withdrawal reads the
//!   withdrawals of the window, then the deposits, and succeeds only by a compare-and-swap of
//!   the current withdrawal bucket from the value it read: two withdrawals in one bucket are
//!   ordered by that word's modification order, so they cannot both spend the last token
//!   (tower's check-then-subtract can). The CAS releases and the loads acquire, so a thread
//!   that sees another's withdrawal also sees the deposit that thread made before it; deposits
//!   themselves are `Relaxed` (more deposits only raise the allowance).
//! - A thread whose clock reading is a bucket behind may count into the newer bucket another
//!   thread rotated: the request is counted a bucket late, never lost or doubled.
//! - Rings have more slots (16) than the window has buckets (10). A thread a bucket ahead
//!   rotates the slot of the bucket that just left its window; with as many slots as buckets,
//!   that slot is still the oldest bucket of a thread a bucket behind, which would then see
//!   that bucket's withdrawals but no longer its deposits and refuse for thousands of requests
//!   at once. With spare slots, threads within a few buckets of each other read the same
//!   counts. A power of two keeps the slot of each bucket number in step across the wrap.
//! - A withdrawing thread that finds a bucket newer than its clock reading in either ring (it
//!   stalled after reading the clock, or while reading the rings) starts over from that
//!   bucket, so it never judges one window's withdrawals against another window's deposits.
//!   "Newer" means less than 2^39 buckets ahead (17 years of the shortest buckets), and a slot
//!   never written is neither current nor newer; so a slot an idle shard left alone for
//!   however long reads as old. A withdrawal starts over a bounded number of times, then
//!   refuses.
//!
//! Invariant (checked by the property test against a model, by the fuzz target and by the loom
//! models): when a withdrawal succeeds, the withdrawals of its window do not exceed
//! `max(floor, ratio * deposits)` of that window, where `floor = min_per_second * window`.
//! The floor is a minimum, not an addition: it lets a quiet service retry, and stops counting
//! once `ratio` of the traffic is larger (as Envoy's retry budget takes the larger of its
//! percentage and its minimum concurrency). (Deposits leave the window before the withdrawals
//! they paid for, so the bound is checked when spending, not at every later moment.)

use crate::config::BudgetConfig;
use crate::sync::atomic::{AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets per window.
pub(crate) const BUCKETS: usize = 10;
/// Slots per ring: more than the window, so the slot a thread one bucket ahead rotates is
/// never one a thread one bucket behind still reads (see the ground rules); and a power of
/// two, so that `bucket % SLOTS` runs on without a break where bucket numbers wrap.
const SLOTS: usize = 16;
/// Ratios are kept in millionths, so the arithmetic is integer.
const PPM: u64 = 1_000_000;
/// The most deposit shards (each read by a withdrawal: `SLOTS` loads apiece).
const MAX_SHARDS: usize = 16;

type Ring = [AtomicU64; SLOTS];

/// Bits of a bucket number: numbers wrap at 2^40, and a bucket counts as newer than a
/// reading when it is less than 2^39 ahead: 17 years of 1 ms buckets (the shortest window is
/// 10 ms), so no slot left untouched by an idle shard or a budget nobody retries on ever
/// looks newer than the clock. (With 32 bits, a shard unused for 2^31 buckets, 25 days of
/// 1 ms buckets, did: a withdrawal started over from it and back without end.)
const BUCKET_BITS: u32 = 40;
/// Bucket numbers are taken modulo 2^40.
pub(crate) const BUCKET_MASK: u64 = (1 << BUCKET_BITS) - 1;
/// Bits of a count: up to 2^24 - 2 per bucket and shard (46,000 requests a second on one
/// core in the longest buckets, 6 minutes), where it stops counting.
const COUNT_BITS: u32 = 64 - BUCKET_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const COUNT_MAX: u32 = COUNT_MASK as u32 - 1;
/// A slot never written: neither current, nor newer, nor in any window.
const EMPTY: u64 = u64::MAX;

fn pack(bucket: u64, count: u32) -> u64 {
    ((bucket & BUCKET_MASK) << COUNT_BITS) | u64::from(count)
}

/// The bucket number and count of a slot's word; `None` for a slot never written.
fn unpack(word: u64) -> Option<(u64, u32)> {
    (word != EMPTY).then_some((word >> COUNT_BITS, (word & COUNT_MASK) as u32))
}

/// `a - b` on bucket numbers (modulo 2^40).
#[inline]
fn dist(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b) & BUCKET_MASK
}

/// Whether `bucket` is newer than `now` (ahead of it, by less than half the number space).
#[inline]
fn newer(bucket: u64, now: u64) -> bool {
    let d = dist(bucket, now);
    d != 0 && d < 1 << (BUCKET_BITS - 1)
}

/// `count` of `word` if its bucket is within the window ending at `now`.
fn live(word: u64, now: u64) -> u64 {
    match unpack(word) {
        Some((bucket, count)) if dist(now, bucket) < BUCKETS as u64 => u64::from(count),
        _ => 0,
    }
}

/// The most times a withdrawal starts over from a newer bucket before it refuses. Each start
/// over moves it at least a bucket ahead, to a bucket another thread wrote: one or two in
/// practice, and never a loop that does not end. (A lost compare-and-swap, another thread
/// spending in the same bucket, is not a start over: it retries at once.)
const MAX_RESTARTS: u32 = 64;

fn new_ring() -> Ring {
    std::array::from_fn(|_| AtomicU64::new(EMPTY))
}

/// The budget's arithmetic on bucket numbers, without a clock (for models and fuzzing).
pub(crate) struct BudgetCore {
    deposits: Box<[CachePadded<Ring>]>,
    withdrawals: CachePadded<Ring>,
    ratio_ppm: u64,
    /// Withdrawals a window allows whatever its deposits.
    floor: u64,
}

impl BudgetCore {
    pub(crate) fn new(ratio: f64, floor: u64, shards: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        Self {
            deposits: (0..shards).map(|_| CachePadded::new(new_ring())).collect(),
            withdrawals: CachePadded::new(new_ring()),
            ratio_ppm: (ratio * PPM as f64).round() as u64,
            floor,
        }
    }

    /// Adds `n` to the current bucket of `ring`, rotating it first if it is stale.
    fn add(ring: &Ring, now: u64, n: u32) {
        let now = now & BUCKET_MASK;
        let cell = &ring[now as usize % SLOTS];
        // Relaxed: counts only; rotation is a CAS on the same word, so every add lands in
        // exactly one bucket number.
        let mut word = cell.load(Ordering::Relaxed);
        loop {
            let next = match unpack(word) {
                // The bucket is current, or newer than this thread's reading: count into it.
                Some((bucket, count)) if bucket == now || newer(bucket, now) => {
                    if count < COUNT_MAX / 2 {
                        // Far from full: no race of adders can reach the bucket bits.
                        cell.fetch_add(u64::from(n), Ordering::Relaxed);
                        return;
                    }
                    // Nearly full: stop counting at the top rather than carry into the
                    // bucket number.
                    pack(bucket, count.saturating_add(n).min(COUNT_MAX))
                }
                _ => pack(now, n.min(COUNT_MAX)),
            };
            match cell.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    fn sum(ring: &Ring, now: u64) -> u64 {
        ring.iter()
            .map(|c| live(c.load(Ordering::Relaxed), now))
            .sum()
    }

    /// Records one request in bucket `now`, on deposit shard `shard`.
    pub(crate) fn deposit(&self, now: u64, shard: usize) {
        // The shard count is a power of two (see `new`).
        Self::add(&self.deposits[shard & (self.deposits.len() - 1)], now, 1);
    }

    /// Requests counted in the window ending at bucket `now`, or the newest bucket found if a
    /// slot already holds one after `now`.
    fn window_deposits(&self, now: u64) -> Result<u64, u64> {
        let mut sum = 0;
        let mut newest = None::<u64>;
        for ring in self.deposits.iter() {
            for c in ring.iter() {
                let w = c.load(Ordering::Relaxed);
                if let Some((b, _)) = unpack(w)
                    && newer(b, now)
                {
                    newest = Some(newest.map_or(b, |n| if newer(b, n) { b } else { n }));
                }
                sum += live(w, now);
            }
        }
        newest.map_or(Ok(sum), Err)
    }

    /// Requests counted in the window ending at bucket `now`.
    pub(crate) fn deposits(&self, now: u64) -> u64 {
        self.deposits.iter().map(|r| Self::sum(r, now)).sum()
    }

    /// Retries and hedges spent in the window ending at bucket `now`.
    pub(crate) fn withdrawals(&self, now: u64) -> u64 {
        Self::sum(&self.withdrawals, now)
    }

    /// What a window with `deposits` requests allows in all: `ratio` of them, or the floor if
    /// that is more.
    fn allow(&self, deposits: u64, floor: u64) -> u64 {
        (deposits.saturating_mul(self.ratio_ppm) / PPM).max(floor)
    }

    /// What the window ending at `now` allows in all.
    pub(crate) fn allowance(&self, now: u64) -> u64 {
        self.allow(self.deposits(now), self.floor)
    }

    /// Spends one token in bucket `now` if the window has one left.
    pub(crate) fn try_withdraw(&self, now: u64) -> bool {
        self.withdraw(now, false)
    }

    /// Spends one token in bucket `now` if the window has one left *and* the last two buckets
    /// have not spent more than their own share (`ratio` of their requests, or two tenths of
    /// the floor if that is more). Hedges use it: a hedge is sent because an answer is late, and answers are
    /// late together when the service is congested, so a hedge must not borrow the whole
    /// window's savings at once and double the load exactly then.
    pub(crate) fn try_withdraw_paced(&self, now: u64) -> bool {
        self.withdraw(now, true)
    }

    fn recent_deposits(&self, now: u64) -> u64 {
        let prev = dist(now, 1);
        self.deposits
            .iter()
            .map(|ring| {
                [now, prev]
                    .iter()
                    .map(
                        |&b| match unpack(ring[b as usize % SLOTS].load(Ordering::Relaxed)) {
                            Some((bucket, count)) if bucket == b => u64::from(count),
                            _ => 0,
                        },
                    )
                    .sum::<u64>()
            })
            .sum()
    }

    fn withdraw(&self, now: u64, paced: bool) -> bool {
        let mut now = now & BUCKET_MASK;
        let mut restarts = 0;
        loop {
            if restarts > MAX_RESTARTS {
                // Other threads kept moving the buckets on: refuse rather than spin (a retry
                // not sent is always safe).
                return false;
            }
            // Acquire: pairs with the Release of the CAS below in other threads; whoever sees
            // a withdrawal also sees the deposit its thread made before it (read below).
            let words: [u64; SLOTS] =
                std::array::from_fn(|i| self.withdrawals[i].load(Ordering::Acquire));
            // A thread that read the clock and then stalled would judge a window other threads
            // have left: adopt the newest bucket in the ring instead.
            let newest = words
                .iter()
                .filter_map(|&w| unpack(w))
                .map(|(b, _)| b)
                .filter(|&b| newer(b, now))
                .max_by_key(|&b| dist(b, now));
            if let Some(newer) = newest {
                now = newer;
                restarts += 1;
            }
            let slot = now as usize % SLOTS;
            let prev = dist(now, 1);
            let here = match unpack(words[slot]) {
                Some((bucket, count)) if bucket == now => count,
                _ => 0,
            };
            let mut others = 0;
            let mut previous = 0;
            for (i, &w) in words.iter().enumerate() {
                if i != slot {
                    others += live(w, now);
                    if let Some((b, count)) = unpack(w)
                        && b == prev
                    {
                        previous = u64::from(count);
                    }
                }
            }
            // Deposits are read after the withdrawals: reading them first would let another
            // thread's deposit-then-withdraw pairs land in between, counting their withdrawals
            // without their deposits (a refusal of a fully paid-for retry). A deposit slot
            // already rotated past `now` means another thread has moved on since the ring was
            // read: start over from its bucket.
            let deposits = match self.window_deposits(now) {
                Ok(d) => d,
                Err(newer) => {
                    now = newer;
                    restarts += 1;
                    continue;
                }
            };
            let allowance = self.allow(deposits, self.floor);
            let recent_allowance = if paced {
                self.allow(self.recent_deposits(now), self.floor * 2 / BUCKETS as u64)
            } else {
                u64::MAX
            };
            if others + u64::from(here) >= allowance
                || previous + u64::from(here) >= recent_allowance
                || here >= COUNT_MAX
            {
                return false;
            }
            // AcqRel: the Release pairs with the Acquire loads above in other threads
            // (publishing this thread's earlier deposits); a failed exchange starts over.
            if self.withdrawals[slot]
                .compare_exchange(
                    words[slot],
                    pack(now, here + 1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return true;
            }
        }
    }
}

/// A retry budget shared by every clone: deposits one token share per request, withdraws one
/// token per retry or hedge. See the [`BudgetConfig`] for the sizing.
///
/// Against tower's `TpsBudget`: the window is a ring of atomic buckets (a bucket's number and
/// count in one word, rotated by one compare-and-swap), so nothing takes a lock; deposits go
/// to a cache-padded shard per core, so cores never write each other's lines on the request
/// path (tower takes a mutex and bumps one shared counter per deposit); and a withdrawal
/// spends by a compare-and-swap of the bucket it read, so two retries cannot both spend the
/// last token (tower's check-then-subtract can). The floor is a minimum, not added to the
/// ratio's share.
#[derive(Clone)]
pub struct Budget {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    core: BudgetCore,
    origin: Instant,
    bucket_nanos: u64,
    /// `2^64 / bucket_nanos`, rounded up: bucket numbers by a multiplication, not a division
    /// (a 64-bit division costs as much as the rest of a deposit).
    bucket_inverse: u128,
}

/// What a [`Budget`] holds right now, from [`Budget::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Requests counted in the window.
    pub requests: u64,
    /// Retries and hedges spent in the window.
    pub spent: u64,
    /// Retries and hedges the window allows in all: `ratio * requests`, or
    /// `min_per_second * window` if that is more.
    pub allowance: u64,
}

impl Budget {
    /// A budget sized by `config`, with one deposit shard per core (at most 16).
    ///
    /// `config` should have passed [`RetryConfig::validate`](crate::RetryConfig::validate).
    pub fn new(config: &BudgetConfig) -> Self {
        // Rounded up: 10 a second over a 50 ms window is one retry, not none (a quiet service
        // keeps the floor it was promised).
        let floor = (f64::from(config.min_per_second) * config.window.as_secs_f64()).ceil() as u64;
        let bucket = config.window / BUCKETS as u32;
        Self {
            inner: std::sync::Arc::new(Inner {
                core: BudgetCore::new(config.ratio, floor, tollgate_core::counter::shard_count()),
                origin: Instant::now(),
                bucket_nanos: (bucket.as_nanos() as u64).max(1),
                bucket_inverse: (1u128 << 64) / u128::from((bucket.as_nanos() as u64).max(1)) + 1,
            }),
        }
    }

    fn bucket(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.inner.origin);
        let nanos = since.as_secs() * 1_000_000_000 + u64::from(since.subsec_nanos());
        // Exact for every time below 2^64 / bucket_inverse's error (over a century at 1 ms
        // buckets); off by one at most at a bucket's very edge otherwise, which only moves a
        // count to the neighbouring bucket.
        ((u128::from(nanos) * self.inner.bucket_inverse) >> 64) as u64 & BUCKET_MASK
    }

    /// Counts one request.
    pub fn deposit(&self) {
        self.inner
            .core
            .deposit(self.bucket(), tollgate_core::counter::shard_index());
    }

    /// Spends one retry, if the window allows it.
    pub fn try_withdraw(&self) -> bool {
        self.inner.core.try_withdraw(self.bucket())
    }

    /// Spends one hedge, if the window allows it and the last two buckets (a fifth of the
    /// window) have not spent more than their own share: hedges are paced, retries are not.
    pub fn try_withdraw_hedge(&self) -> bool {
        self.inner.core.try_withdraw_paced(self.bucket())
    }

    /// Whether `other` is this very budget (a clone of it), not merely one with the same
    /// settings.
    pub fn is_shared_with(&self, other: &Budget) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The window's counts as of now (sums every shard: for metrics, not the request path).
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = self.bucket();
        BudgetSnapshot {
            requests: self.inner.core.deposits(now),
            spent: self.inner.core.withdrawals(now),
            allowance: self.inner.core.allowance(now),
        }
    }

    /// The length of one bucket (a tenth of the window).
    pub fn bucket_length(&self) -> Duration {
        Duration::from_nanos(self.inner.bucket_nanos)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}
