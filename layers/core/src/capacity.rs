//! A source of a concurrency limit that another layer defers to, so that a layer that learns a
//! limit (tollgate-pool's adaptive `Limiter`) and a layer that enforces one (tollgate-admission,
//! with its priority classes and queues) meet here without depending on each other.
//!
//! The enforcing layer counts its requests in flight itself; a [`Capacity`] says how many may be
//! in flight ([`limit`](Capacity::limit), read on every admission) and hears of each admitted
//! request: when it starts ([`on_start`](Capacity::on_start), which may take what the capacity
//! keeps for itself, such as one of its own permits, and hand it back as a [`Slot`]) and how it
//! ended ([`on_release`](Capacity::on_release), or [`on_cancel`](Capacity::on_cancel) when it
//! was dropped unfinished). Nothing is allocated per request: a slot is a plain 128-bit word.

use crate::Outcome;
use std::fmt;
use std::time::Duration;

/// A source of the concurrency limit, and what it learns from.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use tollgate_core::Outcome;
/// use tollgate_core::capacity::{Capacity, Slot};
///
/// /// Halves on a failure, grows by one on a success, between 1 and 64.
/// #[derive(Debug)]
/// struct Aimd(AtomicUsize);
///
/// impl Capacity for Aimd {
///     fn limit(&self) -> usize {
///         self.0.load(Ordering::Relaxed)
///     }
///
///     fn on_release(&self, _: Slot, _: Option<Duration>, outcome: Outcome) {
///         let l = self.limit();
///         let next = match outcome {
///             Outcome::Failure => (l / 2).max(1),
///             Outcome::Success => (l + 1).min(64),
///             Outcome::Ignored => l,
///         };
///         self.0.store(next, Ordering::Relaxed);
///     }
/// }
///
/// let a = Aimd(AtomicUsize::new(8));
/// a.on_release(Slot::EMPTY, None, Outcome::Failure);
/// assert_eq!(a.limit(), 4);
/// ```
pub trait Capacity: Send + Sync + fmt::Debug + 'static {
    /// The most requests that may be in flight now; at least 1 is assumed.
    fn limit(&self) -> usize;

    /// Whether [`on_release`](Self::on_release) wants each request's latency. Measuring it
    /// reads the clock twice per request. Default `false`.
    fn wants_latency(&self) -> bool {
        false
    }

    /// An admitted request starts. A capacity that keeps books of its own (counts its requests
    /// in flight, times some of them) takes what it needs and returns it; the slot comes back
    /// to [`on_release`](Self::on_release) or [`on_cancel`](Self::on_cancel). Default
    /// [`Slot::EMPTY`].
    fn on_start(&self) -> Slot {
        Slot::EMPTY
    }

    /// An admitted request finished: its slot, its time in service (when
    /// [`wants_latency`](Self::wants_latency), or when the enforcing layer timed it anyway)
    /// and its outcome. Default: nothing.
    fn on_release(&self, slot: Slot, latency: Option<Duration>, outcome: Outcome) {
        let _ = (slot, latency, outcome);
    }

    /// A request found the limit reached: the enforcing layer queues it (or refuses it) instead
    /// of admitting it now. Demand is at the limit; a capacity that learns its limit from use
    /// counts this as the limit being in use, as a refused permit would tell it in a layer of
    /// its own. Default: nothing.
    fn on_limited(&self) {}

    /// An admitted request was dropped before it finished (its caller gave up). Default:
    /// [`on_release`](Self::on_release) with no latency and [`Outcome::Ignored`].
    fn on_cancel(&self, slot: Slot) {
        self.on_release(slot, None, Outcome::Ignored);
    }
}

/// What a [`Capacity`] took for one request in [`on_start`](Capacity::on_start), given back
/// when it ends: 128 bits whose meaning is the capacity's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Slot(u128);

impl Slot {
    /// Nothing taken.
    pub const EMPTY: Slot = Slot(0);

    /// A slot holding `bits`.
    #[inline]
    pub const fn new(bits: u128) -> Self {
        Slot(bits)
    }

    /// The bits it holds.
    #[inline]
    pub const fn bits(self) -> u128 {
        self.0
    }
}
