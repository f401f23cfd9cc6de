//! The slow path: bounded per-class queues under one short-held lock.
//!
//! A request that cannot take a slot at once gets a *slot* in a slab (reused, so a warm layer
//! does not allocate) and its index joins its class's queue. Whenever a slot of capacity frees
//! (or a request joins), [`Controller::dispatch`] hands free capacity to waiters: first to a
//! class that is owed part of its reservation, then to the highest class with waiters. The
//! waiter's task is woken through its registered waker; it never polls on a timer.
//!
//! Queue discipline, after Meta's adaptive LIFO with CoDel: a class whose queue has not been
//! empty for `codel.interval` is *standing*. A standing queue drops waiters older than
//! `codel.target` and serves the newest first; otherwise it serves the oldest first and a
//! waiter gives up after `codel.interval`. With an adaptive capacity, an overloaded standing
//! queue bounds the wait more tightly, by how fast it hands out slots (see `pressure`).

use crate::config::ClassConfig;
use crate::controller::{COUNT, Controller, WAITERS};
use crate::error::{Reason, Rejected};
use crate::pressure::Pressure;
use crate::stats::Histogram;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::task::Waker;
use std::time::Duration;
use tokio::time::Instant;

/// How many CoDel targets' worth of work the fresh waiters must cover before the sweep drops
/// older ones. At 1 the queue drains too often at critical load and slots idle after a lull
/// (the simulator served 89% at 1x capacity); at 3 it serves 95% at 1x and stays within 5% of
/// the optimum from 0.5x to 4x, while 90% of served waits stay within the target at 2x.
const FRESH_COVER: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    Waiting,
    Granted,
    Rejected(Reason),
}

#[derive(Debug)]
pub(crate) struct Slot {
    generation: u32,
    pub(crate) state: SlotState,
    pub(crate) waker: Option<Waker>,
    pub(crate) class: usize,
    enqueued: Instant,
    deadline: Option<Instant>,
}

/// One class's queue and the statistics kept under the lock.
#[derive(Debug)]
pub(crate) struct ClassQueue {
    pub(crate) q: VecDeque<u32>,
    nonempty_since: Option<Instant>,
    /// When the CoDel sweep last dropped a waiter.
    last_drop: Option<Instant>,
    pub(crate) admitted: u64,
    pub(crate) wait: Histogram,
}

impl ClassQueue {
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct Slow {
    pub(crate) queues: Vec<ClassQueue>,
    pub(crate) slots: Vec<Slot>,
    free: Vec<u32>,
    pub(crate) queued: usize,
    /// Arrival and grant rates, for the overload bound of an adaptive capacity.
    pressure: Pressure,
}

/// A queued request's claim on its slot; stale claims (after the slot was reused) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterId {
    pub(crate) slot: u32,
    generation: u32,
}

/// What happened to a request that could not take the fast path.
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// It took a slot of capacity without waiting.
    Granted,
    /// It waits; its queue bound ends at `expires` (the reason it would fail then).
    Waiting(WaiterId, Instant, Reason),
    /// It was turned away.
    Rejected(Rejected),
}

impl Slow {
    pub(crate) fn new(classes: &[ClassConfig]) -> Self {
        Self {
            queues: classes
                .iter()
                .map(|c| ClassQueue {
                    q: VecDeque::with_capacity(c.queue_capacity.min(1024)),
                    nonempty_since: None,
                    last_drop: None,
                    admitted: 0,
                    wait: Histogram::default(),
                })
                .collect(),
            slots: Vec::new(),
            free: Vec::new(),
            queued: 0,
            pressure: Pressure::default(),
        }
    }

    /// Whether `class`'s queue stands: it has not been empty for `interval`, or the sweep
    /// dropped a waiter within the last `interval` (the queue emptied only because of the
    /// drops; without this, the mode would flip back to FIFO at the first lull).
    fn standing(&self, class: usize, now: Instant, interval: Duration) -> bool {
        let q = &self.queues[class];
        let long =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) >= interval);
        long(q.nonempty_since)
            || q.last_drop
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
    }

    fn alloc(&mut self, class: usize, now: Instant, deadline: Option<Instant>) -> u32 {
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.state = SlotState::Waiting;
            s.class = class;
            s.enqueued = now;
            s.deadline = deadline;
            s.waker = None;
            return i;
        }
        self.slots.push(Slot {
            generation: 0,
            state: SlotState::Waiting,
            waker: None,
            class,
            enqueued: now,
            deadline,
        });
        (self.slots.len() - 1) as u32
    }

    pub(crate) fn release_slot(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        s.state = SlotState::Free;
        s.generation = s.generation.wrapping_add(1);
        s.waker = None;
        self.free.push(i);
    }

    /// Notes that a waiter left `class`'s queue.
    pub(crate) fn left(&mut self, class: usize) {
        self.queued -= 1;
        if self.queues[class].q.is_empty() {
            self.queues[class].nonempty_since = None;
        }
    }

    /// Ends a waiting slot (already out of its queue) with `state`, waking its task.
    pub(crate) fn finish(&mut self, i: u32, state: SlotState) {
        let s = &mut self.slots[i as usize];
        s.state = state;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    pub(crate) fn get(&self, id: WaiterId) -> Option<&Slot> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation && s.state != SlotState::Free)
    }
}

impl Controller {
    /// Rejects (out of the queue) the waiter in slot `i` for `reason`.
    fn reject_waiter(&self, slow: &mut Slow, i: u32, reason: Reason) {
        let class = slow.slots[i as usize].class;
        self.count_rejection(class, reason);
        slow.left(class);
        slow.finish(i, SlotState::Rejected(reason));
    }

    /// Drops waiters older than the CoDel target from the front of a standing queue, but only
    /// while the fresher waiters behind them (within the target) are enough to keep every slot
    /// busy for the target: then the old ones could not be served in time anyway. With fewer
    /// fresh waiters (a lull in arrivals), the old ones stay to use capacity that would
    /// otherwise idle, and still give up after the interval.
    ///
    /// `room`: a request arrives at a full queue, so expired waiters go regardless (they are
    /// past the bound, and the alternative is turning the fresh request away).
    ///
    /// With an adaptive capacity and an overloaded queue, the bound may be tighter than the
    /// target, and then waiters past it go regardless too (see `pressure`).
    fn sweep(&self, slow: &mut Slow, class: usize, now: Instant, room: bool) {
        if !slow.standing(class, now, self.codel.interval) {
            return;
        }
        let overload = self.dynamic.as_ref().and_then(|_| {
            slow.pressure
                .overload_bound(self.codel.target, self.latency_cv())
        });
        let target = overload.unwrap_or(self.codel.target);
        // Waiters served per target: the limit times target / service time (at least 1).
        let per_target = {
            let service = self.latency_estimate();
            let limit = self.limit() as f64;
            if service.is_zero() {
                limit
            } else {
                (limit * target.as_secs_f64() / service.as_secs_f64()).max(1.0)
            }
        };
        let slots = &slow.slots;
        let q = &slow.queues[class].q;
        let expired = q.partition_point(|i| {
            now.saturating_duration_since(slots[*i as usize].enqueued) > target
        });
        let fresh = q.len() - expired;
        // Under overload, fresher waiters arrive before long: the old ones need no cover.
        let covered = overload.is_some() || (fresh as f64) >= FRESH_COVER * per_target;
        if expired == 0 || (!room && !covered) {
            return;
        }
        for _ in 0..expired {
            let i = slow.queues[class].q.pop_front().expect("counted above");
            self.reject_waiter(slow, i, Reason::QueueTimeout);
        }
        slow.queues[class].last_drop = Some(now);
    }

    /// The next class to get a slot: the highest class owed part of its reservation, else the
    /// highest class with waiters; `None` if that class may not take a slot now (headroom).
    fn pick(&self, slow: &Slow, in_flight: usize, limit: usize) -> Option<usize> {
        let waiting = |c: &usize| !slow.queues[*c].q.is_empty();
        let fits = |c: usize| in_flight < self.class_limit(c, limit);
        let n = self.classes.len();
        if self.track {
            let owed = (0..n).filter(waiting).find(|c| {
                // Relaxed: reservations are approximate by one request, see the controller.
                self.class_in_flight[*c].load(Ordering::Relaxed) < self.classes[*c].reserved
            });
            if let Some(c) = owed.filter(|c| fits(*c)) {
                return Some(c);
            }
        }
        // Headroom only grows down the classes: if the highest waiting class may not take a
        // slot, no lower one may.
        (0..n).find(waiting).filter(|c| fits(*c))
    }

    /// Hands free capacity to waiters until none is left or nobody waits.
    pub(crate) fn dispatch(&self, slow: &mut Slow, now: Instant) {
        loop {
            // Relaxed: see the ground rules in the controller.
            let in_flight = (self.hot.word.load(Ordering::Relaxed) & COUNT) as usize;
            let limit = self.limit();
            if slow.queued == 0 || in_flight >= limit {
                break;
            }
            let Some(c) = self.pick(slow, in_flight, limit) else {
                break;
            };
            self.sweep(slow, c, now, false);
            let standing = slow.standing(c, now, self.codel.interval);
            let q = &mut slow.queues[c].q;
            let next = if standing && self.codel.adaptive_lifo {
                q.pop_back()
            } else {
                q.pop_front()
            };
            let Some(i) = next else { continue };
            let slot = &slow.slots[i as usize];
            if slot.deadline.is_some_and(|d| self.unmeetable(d, now)) {
                self.reject_waiter(slow, i, Reason::Deadline);
                continue;
            }
            let waited = now.saturating_duration_since(slot.enqueued);
            // Relaxed: see the ground rules; only lock holders raise the count while WAITERS is set.
            self.hot.word.fetch_add(1, Ordering::Relaxed);
            if self.track {
                // Relaxed: see `pick`.
                self.class_in_flight[c].fetch_add(1, Ordering::Relaxed);
            }
            let cq = &mut slow.queues[c];
            cq.admitted += 1;
            cq.wait.record(waited);
            slow.pressure.granted();
            slow.left(c);
            slow.finish(i, SlotState::Granted);
        }
        if slow.queued == 0 {
            // Relaxed: see the ground rules; cleared only under the lock.
            self.hot.word.fetch_and(!WAITERS, Ordering::Relaxed);
        }
    }

    /// Queues a request that the fast path could not admit, or admits or rejects it at once.
    pub(crate) fn enqueue(
        &self,
        class: usize,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Enqueued {
        // Demand is at the limit: an adaptive capacity learns that its limit is in use.
        self.capacity_limited();
        let mut slow = self.lock();
        slow.pressure
            .arrived(now, self.codel.interval, || self.fast_admitted_total());
        self.sweep(&mut slow, class, now, false);
        let cap = self.classes[class].queue_capacity;
        if slow.queues[class].q.len() >= cap || slow.queued >= self.max_queued {
            self.sweep(&mut slow, class, now, true);
        }
        let full = slow.queues[class].q.len() >= cap;
        if full || slow.queued >= self.max_queued {
            // Nobody may be waiting for a slot that is free (a finishing request dispatches
            // only after it took the lock): serve them first, then take a free slot directly.
            self.dispatch(&mut slow, now);
            // Relaxed: see the ground rules.
            if slow.queued == 0
                && ((self.hot.word.load(Ordering::Relaxed) & COUNT) as usize)
                    < self.class_limit(class, self.limit())
            {
                return self.grant_direct(&mut slow, class);
            }
            if full || !self.shed_below(&mut slow, class) {
                let hint = self.retry_hint(slow.queued);
                return Enqueued::Rejected(self.reject(class, Reason::QueueFull, Some(hint)));
            }
        }
        let i = slow.alloc(class, now, deadline);
        let cq = &mut slow.queues[class];
        if cq.q.is_empty() {
            cq.nonempty_since = Some(now);
        }
        cq.q.push_back(i);
        slow.queued += 1;
        // Relaxed: see the ground rules; set only under the lock.
        self.hot.word.fetch_or(WAITERS, Ordering::Relaxed);
        self.dispatch(&mut slow, now);
        if slow.slots[i as usize].state == SlotState::Granted {
            slow.release_slot(i);
            return Enqueued::Granted;
        }
        // The queue-time bound; a standing queue also sheds waiters past the CoDel target
        // while fresher ones wait (see `sweep`).
        let bound = self.codel.interval;
        // An interval too long to add waits a year: as good as forever, without overflow.
        let far = now
            .checked_add(bound)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)));
        let (mut expires, mut reason) = (far.unwrap_or(now), Reason::QueueTimeout);
        if let Some(d) = deadline {
            let latest = d.checked_sub(self.latency_estimate()).unwrap_or(now);
            if latest < expires {
                (expires, reason) = (latest, Reason::Deadline);
            }
        }
        let generation = slow.slots[i as usize].generation;
        Enqueued::Waiting(
            WaiterId {
                slot: i,
                generation,
            },
            expires,
            reason,
        )
    }

    fn grant_direct(&self, slow: &mut Slow, class: usize) -> Enqueued {
        // Relaxed: see the ground rules; the caller holds the lock and nobody waits.
        self.hot.word.fetch_add(1, Ordering::Relaxed);
        if self.track {
            // Relaxed: see `pick`.
            self.class_in_flight[class].fetch_add(1, Ordering::Relaxed);
        }
        slow.pressure.granted();
        let cq = &mut slow.queues[class];
        cq.admitted += 1;
        cq.wait.record(Duration::ZERO);
        Enqueued::Granted
    }

    /// Makes room for a request of `class` by shedding the newest waiter of the lowest class
    /// below it. `false` if no lower class has waiters.
    fn shed_below(&self, slow: &mut Slow, class: usize) -> bool {
        let Some(low) = (class + 1..self.classes.len())
            .rev()
            .find(|c| !slow.queues[*c].q.is_empty())
        else {
            return false;
        };
        let i = slow.queues[low]
            .q
            .pop_back()
            .expect("the class has waiters");
        self.reject_waiter(slow, i, Reason::Shed);
        true
    }

    /// Admits waiters after the limit grew.
    pub(crate) fn poke(&self) {
        let mut slow = self.lock();
        self.dispatch(&mut slow, Instant::now());
    }
}
