//! Sharded permits: the part of the limiter every request touches.
//!
//! # Design
//!
//! A free permit is a *token* held by one shard. There are as many shards as
//! [`shard_count`](tollgate_core::counter::shard_count) (one per core, rounded to a power of
//! two), each a cache-padded `AtomicIsize`, so a thread that takes and gives back tokens on its
//! own shard never writes a cache line another core is using:
//!
//! - **take**: decrement the home shard if it is positive. If the home shard is empty, scan the
//!   others and take one from the first non-empty one (*borrowing*). Tokens rebalance through
//!   releases, which go to the releaser's shard, so they follow the load without a central
//!   lock. No token anywhere means the limit is reached.
//! - **give**: pay off the `debt` first if there is any (see below), otherwise increment the
//!   home shard.
//! - **grow** by `n`: cancel up to `n` of the debt, put the rest on the caller's shard.
//! - **shrink** by `n`: take up to `n` free tokens from the shards; what could not be taken
//!   because it is in flight becomes `debt`, paid by the next releases, so the number in flight
//!   falls to the new limit as requests finish.
//!
//! # Ground rules
//!
//! Only the limiter's updater (holding the algorithm lock) calls `grow`, `shrink` and `settle`.
//! Any thread calls `take` and `give`. Every operation is a single atomic read-modify-write
//! that moves tokens, so tokens are never created or lost:
//!
//! `Σ shards + in flight = permits + debt` at every instant.
//!
//! A take succeeds only by taking a token, so sequentially (and whenever `debt` is 0) in flight
//! never exceeds the limit. With `debt > 0` a token given back concurrently with a `shrink`
//! may land on a shard instead of paying the debt; `settle`, run at every limit update, cancels
//! such tokens against the debt, so the overshoot is transient and at most the number of
//! releases racing with one update.
//!
//! # Waiting tasks: the `WAITING` bit
//!
//! Bit 62 of each shard word is a `WAITING` flag; the low bits are the token count (never
//! negative). A task that is about to wait sets the flag on every shard with `fetch_or` and
//! looks at the counts it returns; a release is a `fetch_add` that returns the old word. Both
//! are read-modify-writes of the *same* word, so they are ordered: either the waiter's
//! `fetch_or` sees the freed token, or the releaser's `fetch_add` sees the flag and wakes a
//! waiter. No fence is needed, and a release costs one `fetch_add` whether or not anyone can
//! wait. The limiter clears the flags when the last waiter leaves (see `WaiterCount`).
//!
//! # Memory orderings
//!
//! Tokens are counts: they guard no other memory (the request's own state travels with its
//! future), so taking, shrinking and settling are `Relaxed`; atomicity alone conserves tokens.
//! Setting the flag is `Release` and a give is `Acquire`: a releaser that sees the flag then
//! also sees the waiter's registration with the `Notify` made before it, so its `notify_one`
//! finds the waiter.

use crossbeam_utils::CachePadded;
use tollgate_core::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Set on every shard while tasks wait for a permit.
const WAITING: isize = 1 << 62;
/// The token count in a shard word.
const COUNT: isize = WAITING - 1;

#[derive(Debug)]
pub(crate) struct Tokens {
    shards: Box<[CachePadded<AtomicIsize>]>,
    debt: CachePadded<AtomicUsize>,
}

impl Tokens {
    /// `permits` free tokens over `shards` shards (rounded up to a power of two).
    pub(crate) fn new(permits: usize, shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let shards: Box<[CachePadded<AtomicIsize>]> = (0..n)
            .map(|_| CachePadded::new(AtomicIsize::new(0)))
            .collect();
        // Spread the initial tokens so the first requests on every core find one at home.
        for i in 0..permits {
            // Relaxed: construction, nothing is shared yet.
            shards[i % n].fetch_add(1, Ordering::Relaxed);
        }
        Self {
            shards,
            debt: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    #[inline]
    pub(crate) fn shard_mask(&self) -> usize {
        self.shards.len() - 1
    }

    /// Takes one token from `cell` if it has one.
    #[inline]
    fn take_from(cell: &AtomicIsize) -> bool {
        // Relaxed: tokens guard no memory, see the module docs.
        let mut cur = cell.load(Ordering::Relaxed);
        while cur & COUNT > 0 {
            match cell.compare_exchange_weak(cur, cur - 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Takes one token, preferring `home`'s shard; `false` when none is free.
    #[inline]
    pub(crate) fn take(&self, home: usize) -> bool {
        let mask = self.shard_mask();
        let home = home & mask;
        if Self::take_from(&self.shards[home]) {
            return true;
        }
        // Borrow one token from another shard. One at a time: a batch moved home would be
        // invisible to a task checking the shards while it is in transit.
        for i in 1..=mask {
            if Self::take_from(&self.shards[(home + i) & mask]) {
                return true;
            }
        }
        false
    }

    /// Pays one unit of debt if there is any.
    #[inline]
    fn pay_debt(&self) -> bool {
        // Relaxed: the debt is a count like the tokens.
        let mut d = self.debt.load(Ordering::Relaxed);
        while d > 0 {
            match self
                .debt
                .compare_exchange_weak(d, d - 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => d = actual,
            }
        }
        false
    }

    /// Gives one token back on `home`'s shard, or pays debt with it. `None` when it paid debt
    /// (no permit became free); otherwise `Some(waiting)`: whether tasks wait for a permit.
    #[inline]
    pub(crate) fn give(&self, home: usize) -> Option<bool> {
        if self.pay_debt() {
            return None;
        }
        // Acquire: pairs with the Release `fetch_or` in `flag_all` (module docs).
        let old = self.shards[home & self.shard_mask()].fetch_add(1, Ordering::Acquire);
        Some(old & WAITING != 0)
    }

    /// Sets the `WAITING` flag on every shard; `true` if any shard had a free token.
    pub(crate) fn flag_all(&self) -> bool {
        let mut free = false;
        for cell in self.shards.iter() {
            // Release: pairs with the Acquire `fetch_add` in `give` and `grow` (module docs).
            let old = cell.fetch_or(WAITING, Ordering::AcqRel);
            free |= old & COUNT > 0;
        }
        free
    }

    /// Clears the `WAITING` flag on every shard.
    pub(crate) fn clear_all(&self) {
        for cell in self.shards.iter() {
            // AcqRel: ordered with the waiter count by the limiter's exit protocol.
            cell.fetch_and(!WAITING, Ordering::AcqRel);
        }
    }

    /// Adds `n` tokens (the limit grew): cancels debt first, the rest goes to `home`. Returns
    /// whether tasks wait for a permit (and some became free).
    pub(crate) fn grow(&self, n: usize, home: usize) -> bool {
        let mut rest = n;
        while rest > 0 && self.pay_debt() {
            rest -= 1;
        }
        if rest == 0 {
            return false;
        }
        // Acquire: as in `give`.
        let old = self.shards[home & self.shard_mask()].fetch_add(rest as isize, Ordering::Acquire);
        old & WAITING != 0
    }

    /// Removes `n` tokens (the limit shrank): free ones first, the rest as debt.
    pub(crate) fn shrink(&self, n: usize) {
        let mut rest = n;
        for cell in self.shards.iter() {
            while rest > 0 && Self::take_from(cell) {
                rest -= 1;
            }
        }
        if rest > 0 {
            // Relaxed: a count, see the module docs.
            self.debt.fetch_add(rest, Ordering::Relaxed);
        }
    }

    /// Cancels free tokens against debt left by a racing `give` (see the ground rules).
    /// Returns whether tokens it took but did not need went back while tasks wait.
    pub(crate) fn settle(&self) -> bool {
        // Relaxed: counts only.
        let debt = self.debt.load(Ordering::Relaxed);
        if debt == 0 {
            return false;
        }
        let mut taken = 0;
        for cell in self.shards.iter() {
            while taken < debt && Self::take_from(cell) {
                taken += 1;
            }
        }
        // Cancel what we took; tokens beyond what the debt still is go back.
        let mut waiting = false;
        for _ in 0..taken {
            if !self.pay_debt() {
                // Acquire: as in `give`.
                waiting |= self.shards[0].fetch_add(1, Ordering::Acquire) & WAITING != 0;
            }
        }
        waiting
    }

    /// Free tokens (may be momentarily inexact under concurrency).
    pub(crate) fn free(&self) -> isize {
        // Relaxed: statistics.
        self.shards
            .iter()
            .map(|c| c.load(Ordering::Relaxed) & COUNT)
            .sum()
    }

    /// Outstanding debt.
    pub(crate) fn debt(&self) -> usize {
        // Relaxed: statistics.
        self.debt.load(Ordering::Relaxed)
    }
}
