//! [`Permit`]: one request's worth of concurrency, and how its outcome and RTT reach the
//! limiter (see the ground rules in the `limiter` module).

use crate::limiter::{Handle, home};
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::Outcome;

/// The right to one request's worth of concurrency.
///
/// Finish it with [`success`](Permit::success), [`failure`](Permit::failure) or
/// [`finish`](Permit::finish). Dropping a started permit unfinished counts it as *cancelled*:
/// the permit is given back, no RTT is recorded, and it is never mistaken for a fast success.
/// Dropping a permit that was never started just gives it back.
///
/// Kept small (24 bytes: a pointer and two words) because it moves with every request: from
/// `poll_ready` to `call` and into the response future.
#[derive(Debug)]
pub struct Permit {
    handle: Arc<CachePadded<Handle>>,
    /// When the RTT clock started, in nanoseconds after the limiter's epoch plus one; 0 when
    /// this request is not timed.
    start: u64,
    /// Requests this one stands for in the window's success count (see `Core::finish`);
    /// sampling rates are capped well below `u32::MAX`.
    weight: u32,
    /// Timed, and started with few enough requests in flight that it cannot have queued at
    /// the backend ([`LimitAlgorithm::calm_below`](crate::LimitAlgorithm::calm_below)).
    calm: bool,
    state: PermitState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum PermitState {
    Idle,
    Started,
    /// Outcome recorded, permit still held (released on drop).
    Held,
    Finished,
}

impl Permit {
    /// A permit taken on `handle`'s shard, not yet started.
    pub(crate) fn new(handle: Arc<CachePadded<Handle>>) -> Self {
        Permit {
            handle,
            start: 0,
            weight: 1,
            calm: false,
            state: PermitState::Idle,
        }
    }

    /// Starts the RTT clock: the call is being made now. Taking the permit does not start it,
    /// so the time between `poll_ready` and `call` is not counted. Only started permits count
    /// as cancelled when dropped. At high rates only some are timed (see
    /// [`PoolConfig::samples_per_window`](crate::PoolConfig::samples_per_window)).
    #[inline]
    pub fn start(&mut self) {
        self.state = PermitState::Started;
        match self.handle.core.sample_now() {
            Some(weight) => {
                self.weight = u32::try_from(weight).unwrap_or(u32::MAX);
                // Only timed requests read the in-flight count (a few relaxed loads).
                self.calm = self.handle.core.is_calm();
                self.start = self.handle.core.nanos_since_epoch(Instant::now()) + 1;
            }
            None => self.weight = 0,
        }
    }

    /// Finishes with a success.
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// Finishes with a failure.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    /// Finishes with `outcome`; the RTT runs from [`start`](Permit::start) (none if the permit
    /// was not started or not sampled).
    #[inline]
    pub fn finish(mut self, outcome: Outcome) {
        self.finish_in_place(outcome);
    }

    /// [`finish`](Permit::finish) without moving the permit; dropping it afterwards only
    /// releases the reference to the limiter.
    #[inline]
    pub(crate) fn finish_in_place(&mut self, outcome: Outcome) {
        if self.state != PermitState::Finished {
            self.record(outcome, true);
            self.state = PermitState::Finished;
        }
    }

    /// Records `outcome` and the RTT so far now, but keeps the permit until it is dropped: for
    /// a response whose headers say how the backend did while its body still streams (the
    /// request keeps counting against the limit until the body ends). Does nothing if the
    /// outcome was already recorded.
    pub fn record_and_hold(&mut self, outcome: Outcome) {
        if self.state != PermitState::Held {
            self.record(outcome, false);
            self.state = PermitState::Held;
        }
    }

    #[inline]
    fn record(&mut self, outcome: Outcome, release: bool) {
        if self.state == PermitState::Held {
            if release {
                self.handle.core.release(home());
            }
            return;
        }
        let (rtt, now) = match std::mem::take(&mut self.start) {
            0 => (None, None),
            start => {
                let now = Instant::now();
                let core = &self.handle.core;
                let ns = core.nanos_since_epoch(now).saturating_sub(start - 1);
                (Some(Duration::from_nanos(ns)), Some(now))
            }
        };
        self.handle.core.finish(
            rtt,
            outcome,
            now,
            u64::from(self.weight),
            self.calm,
            release,
        );
    }

    /// Finishes with `outcome` and an RTT measured by the caller.
    pub fn finish_with_rtt(mut self, rtt: Duration, outcome: Outcome) {
        let held = self.state == PermitState::Held;
        self.state = PermitState::Finished;
        if held {
            self.handle.core.release(home());
            return;
        }
        let calm = self.calm;
        self.handle
            .core
            .finish(Some(rtt), outcome, Some(Instant::now()), 1, calm, true);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        match self.state {
            PermitState::Finished => {}
            PermitState::Started => self.handle.core.cancelled(),
            PermitState::Idle | PermitState::Held => self.handle.core.release(home()),
        }
    }
}

// A permit moves with every request; keep it at a pointer and two words.
const _: () = assert!(std::mem::size_of::<Permit>() <= 24);
