//! The limiter as a [`Capacity`] (tollgate-core's trait), so that a layer that enforces a limit
//! itself (tollgate-admission's classes and queues) can take it from the pool without either
//! crate depending on the other. Each admitted request then holds one of the pool's permits,
//! timed as a [`Permit`](crate::Permit) is, and its outcome teaches the limit.
//!
//! A permit's state travels in the [`Slot`] instead of a `Permit` value: whether a token was
//! taken, whether the request was sampled and calm, its sampling weight and its start (nanoseconds
//! after the limiter's epoch). No allocation, no reference count.

use crate::limiter::Limiter;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::Outcome;
use tollgate_core::capacity::{Capacity, Slot};

/// A token was taken.
const HELD: u128 = 1 << 127;
/// Started calm (see `Core::is_calm`).
const CALM: u128 = 1 << 126;
/// The sampling weight sits in bits 64..96; the start (nanoseconds after the epoch, plus one,
/// 0 when not timed) in bits 0..64.
const WEIGHT_SHIFT: u32 = 64;

impl Capacity for Limiter {
    #[inline]
    fn limit(&self) -> usize {
        Limiter::limit(self)
    }

    /// Takes a token (normally free: the enforcing layer admits no more than [`limit`]) and
    /// starts the RTT clock when this request is sampled.
    ///
    /// [`limit`]: Capacity::limit
    #[inline]
    fn on_start(&self) -> Slot {
        let core = self.core();
        if core.try_acquire().is_none() {
            return Slot::EMPTY;
        }
        let mut bits = HELD;
        if let Some(weight) = core.sample_now() {
            bits |= u128::from(weight.min(u64::from(u32::MAX))) << WEIGHT_SHIFT;
            // Only timed requests read the in-flight count, as a started `Permit` does.
            if core.is_calm() {
                bits |= CALM;
            }
            let since = Instant::now().saturating_duration_since(core.epoch());
            bits |= u128::from(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1);
        }
        Slot::new(bits)
    }

    #[inline]
    fn on_release(&self, slot: Slot, _latency: Option<Duration>, outcome: Outcome) {
        let bits = slot.bits();
        if bits & HELD == 0 {
            return;
        }
        let core = self.core();
        let start = bits as u64;
        let weight = u64::from((bits >> WEIGHT_SHIFT) as u32);
        let (rtt, now) = if start > 0 {
            let now = Instant::now();
            let started = core.epoch() + Duration::from_nanos(start - 1);
            (Some(now.saturating_duration_since(started)), Some(now))
        } else {
            (None, None)
        };
        core.finish(rtt, outcome, now, weight, bits & CALM != 0, true);
    }

    /// Counts demand at the limit, as a permit that was not free does in the pool's own layer:
    /// the algorithm sees the window as saturated.
    #[inline]
    fn on_limited(&self) {
        self.core().limited();
    }

    /// Counts a cancellation and gives the token back, as dropping a started permit does.
    #[inline]
    fn on_cancel(&self, slot: Slot) {
        if slot.bits() & HELD != 0 {
            self.core().cancelled();
        }
    }
}
