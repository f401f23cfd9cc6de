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
//!   others and move half of the first non-empty one home (*borrowing*; rebalancing follows the
//!   load without a central lock). No token anywhere means the limit is reached.
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
//! # Memory orderings
//!
//! Tokens are counts: they guard no other memory (the request's own state travels with its
//! future), so every token operation is `Relaxed`; atomicity alone conserves tokens. The
//! ordering that matters is the sleep/wake handshake with waiting tasks, which lives in the
//! limiter (`SeqCst` fences after a give and after a waiter announces itself).

use crossbeam_utils::CachePadded;
use tollgate_core::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

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
        while cur > 0 {
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
        for i in 1..=mask {
            let cell = &self.shards[(home + i) & mask];
            // Relaxed: tokens guard no memory.
            let mut cur = cell.load(Ordering::Relaxed);
            while cur > 0 {
                // Borrow half (at least one): one for us, the rest moves home.
                let grab = (cur + 1) / 2;
                match cell.compare_exchange_weak(
                    cur,
                    cur - grab,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        if grab > 1 {
                            // Relaxed: tokens guard no memory.
                            self.shards[home].fetch_add(grab - 1, Ordering::Relaxed);
                        }
                        return true;
                    }
                    Err(actual) => cur = actual,
                }
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

    /// Gives one token back on `home`'s shard (or pays debt with it). Returns `true` when the
    /// token became free (it did not pay debt).
    ///
    /// (The limiter follows this with a `SeqCst` fence for its wake-up handshake.)
    /// waiting, for its wake-up handshake.
    #[inline]
    pub(crate) fn give(&self, home: usize) -> bool {
        if self.pay_debt() {
            return false;
        }
        // Relaxed: tokens guard no memory; the limiter's fence orders the wake-up handshake.
        self.shards[home & self.shard_mask()].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Adds `n` tokens (the limit grew): cancels debt first, the rest goes to `home`.
    pub(crate) fn grow(&self, n: usize, home: usize) {
        let mut rest = n;
        while rest > 0 && self.pay_debt() {
            rest -= 1;
        }
        if rest > 0 {
            // Relaxed: as in `give`; the limiter fences after growing.
            self.shards[home & self.shard_mask()].fetch_add(rest as isize, Ordering::Relaxed);
        }
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
    pub(crate) fn settle(&self) {
        // Relaxed: counts only.
        let debt = self.debt.load(Ordering::Relaxed);
        if debt == 0 {
            return;
        }
        let mut taken = 0;
        for cell in self.shards.iter() {
            while taken < debt && Self::take_from(cell) {
                taken += 1;
            }
        }
        // Cancel what we took; tokens beyond what the debt still is go back.
        for _ in 0..taken {
            if !self.pay_debt() {
                self.shards[0].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Free tokens (may be momentarily inexact under concurrency).
    pub(crate) fn free(&self) -> isize {
        // Relaxed: statistics.
        self.shards.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Outstanding debt.
    pub(crate) fn debt(&self) -> usize {
        // Relaxed: statistics.
        self.debt.load(Ordering::Relaxed)
    }
}
