//! The flusher: one short-lived task per busy partition that turns queued requests into batch
//! calls (each run by a task of its own, see [`crate::execute`]).
//!
//! A flusher starts when a request finds its partition without one and exits when the
//! partition is empty, parking the backend for the next one. It owns no request the callers
//! cannot get back: if it is dropped (runtime shutdown) or panics, the requests it held are
//! answered with `Closed` and a panicking flusher hands its role to a fresh task.
//! User code (the batch service, `Hash`/`Eq` when folding) always runs under `catch_unwind`.

use crate::error::BatchFailed;
use crate::execute::{InFlight, execute, fail_all};
use crate::queue::{Folder, Parked, Partition, Shared, Slot, Stamped};
use crate::stats::FlushReason;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tollgate_core::error::{DeadlineExceeded, Panicked};
use tollgate_core::ewma::Ewma;

enum Decision {
    Flush(FlushReason),
    Wait(Instant),
}

struct Flusher<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    shared: Arc<Shared<Req, T, K>>,
    part: Arc<Partition<Req, T, K>>,
    pending: VecDeque<Stamped<Req, T>>,
    pending_weight: u64,
    state: Option<Parked<Req, T>>,
    exited: bool,
}

/// The flusher task of `part`. The caller holds the partition's flusher role.
pub(crate) async fn run<Req, T, K>(shared: Arc<Shared<Req, T, K>>, part: Arc<Partition<Req, T, K>>)
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    let mut flusher = Flusher {
        shared,
        part,
        pending: VecDeque::new(),
        pending_weight: 0,
        state: None,
        exited: false,
    };
    flusher.unpark();
    flusher.run().await;
}

impl<Req, T, K> Flusher<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    async fn run(&mut self) {
        loop {
            self.drain();
            if self.pending.is_empty() {
                if self.try_exit() {
                    return;
                }
                continue;
            }
            match self.decide(Instant::now()) {
                Decision::Flush(reason) => self.flush(reason).await,
                Decision::Wait(at) => {
                    let notified = std::pin::pin!(self.part.wake.notified());
                    let sleep = std::pin::pin!(tokio::time::sleep_until(at));
                    futures_util::future::select(notified, sleep).await;
                }
            }
        }
    }

    fn unpark(&mut self) {
        let mut parked = self
            .part
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(parked) = &mut parked {
            // Whatever is queued now arrived after the last flusher left.
            parked.last_look = None;
        }
        let alpha = self.shared.config.ewma_alpha;
        self.state = Some(parked.unwrap_or_else(|| Parked {
            backend: self.shared.new_backend(),
            gap: Ewma::new(alpha),
            last_drain: None,
            last_look: None,
            last_found: None,
            unsampled: 0,
        }));
    }

    fn state(&mut self) -> &mut Parked<Req, T> {
        if self.state.is_none() {
            self.unpark();
        }
        self.state.as_mut().expect("unpark always leaves a state")
    }

    /// Parks the state and gives up the partition, unless a request slipped in.
    fn try_exit(&mut self) -> bool {
        if let Some(state) = self.state.take() {
            *self.part.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        }
        if !self.part.gate.try_exit() {
            self.unpark();
            return false;
        }
        self.exited = true;
        if let Some(key) = &self.part.key {
            let idle = self.part.in_flight_now(self.shared.config.max_in_flight) == 0;
            if idle {
                // A submitter still holding this partition finds `running == false` and starts
                // a flusher of its own, so nothing queued here is lost.
                self.shared
                    .keyed
                    .remove_if(key, |_, p| Arc::ptr_eq(p, &self.part));
            }
        }
        self.shared.drained.notify_waiters();
        true
    }

    /// Moves queued items into `pending`, stamped with the previous look (see [`Stamped`]),
    /// and updates the arrival-rate estimate.
    fn drain(&mut self) {
        let now = Instant::now();
        let stamp = {
            let state = self.state();
            // A fresh flusher was started by the request it is about to find: `now` is as good.
            let stamp = state.last_look.unwrap_or(now);
            state.last_look = Some(now);
            stamp
        };
        let before = self.pending.len();
        let n = self.part.drain_into(&mut self.pending, stamp);
        if n == 0 {
            return;
        }
        self.state().last_found = Some(now);
        self.pending_weight += self
            .pending
            .iter()
            .skip(before)
            .map(|s| s.item.weight)
            .sum::<u64>();
        // A burst drained within a sliver of the linger says nothing about the rate: count it
        // into the next sample instead of recording a zero gap.
        let sliver = self.shared.config.max_linger / 16;
        let state = self.state();
        match state.last_drain {
            None => state.last_drain = Some(now),
            Some(last) if now - last < sliver || now == last => state.unsampled += n,
            Some(last) => {
                let arrivals = (state.unsampled + n) as f64;
                state.gap.update((now - last).as_secs_f64() / arrivals);
                state.last_drain = Some(now);
                state.unsampled = 0;
            }
        }
    }

    /// The linger for the current batch: the time the arrival rate says it needs to fill,
    /// twice over, and never more than `max_linger`.
    fn linger(&mut self) -> Duration {
        let max = self.shared.config.max_linger;
        let missing = self
            .shared
            .config
            .max_items
            .saturating_sub(self.pending.len()) as f64;
        match self.state().gap.value() {
            Some(gap) => {
                let need = 2.0 * missing * gap;
                if need.is_finite() && need < max.as_secs_f64() {
                    Duration::from_secs_f64(need)
                } else {
                    max
                }
            }
            None => max,
        }
    }

    /// Arrivals are sparse when fewer than two more are expected within the linger.
    fn sparse(&mut self) -> bool {
        let max = self.shared.config.max_linger.as_secs_f64();
        self.state().gap.value().is_none_or(|gap| 2.0 * gap >= max)
    }

    fn decide(&mut self, now: Instant) -> Decision {
        let config = &self.shared.config;
        if self.shared.is_closed() {
            return Decision::Flush(FlushReason::Shutdown);
        }
        if self.pending.len() >= config.max_items {
            return Decision::Flush(FlushReason::Full);
        }
        if config
            .max_weight
            .is_some_and(|max| self.pending_weight >= max)
        {
            return Decision::Flush(FlushReason::Weight);
        }
        let max_in_flight = config.max_in_flight;
        let has_deadlines = self.shared.hooks.deadline.is_some();
        let flush_when_idle = config.flush_when_idle;
        let linger = self.linger();
        self.shared.stats.linger(linger);
        let oldest = self.pending.front().map_or(now, |i| i.at);
        let mut at = oldest + linger;
        let mut reason = FlushReason::Linger;
        if has_deadlines {
            let exec = self.part.exec_estimate();
            if let Some(deadline) = self.pending.iter().filter_map(|s| s.item.deadline).min() {
                let latest_start = deadline.checked_sub(exec).unwrap_or(now);
                if latest_start < at {
                    at = latest_start;
                    reason = FlushReason::Deadline;
                }
            }
        }
        if flush_when_idle && self.part.in_flight_now(max_in_flight) == 0 {
            if self.sparse() {
                return Decision::Flush(FlushReason::Idle);
            }
            // The backend is idle and the burst looks over (no arrival for three mean gaps):
            // waiting longer would only add latency. The newest request arrived no later than
            // the last look that found one.
            let newest = self.state().last_found.unwrap_or(now);
            let gap = self.state().gap.value();
            if let Some(quiet) = gap.and_then(|g| Duration::try_from_secs_f64(3.0 * g).ok()) {
                let quiet = newest + quiet;
                if quiet < at {
                    at = quiet;
                    reason = FlushReason::Idle;
                }
            }
        }
        if now >= at {
            Decision::Flush(reason)
        } else {
            Decision::Wait(at)
        }
    }

    async fn flush(&mut self, mut reason: FlushReason) {
        let permit = match self.part.in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let permit = self.part.in_flight.clone().acquire_owned().await;
                let permit = permit.expect("the in-flight semaphore is never closed");
                self.drain();
                permit
            }
        };
        let ready = {
            let backend = &mut self.state().backend;
            poll_fn(
                |cx| match catch_unwind(AssertUnwindSafe(|| backend.poll_ready(cx))) {
                    Ok(poll) => poll.map(|r| r.map_err(Err)),
                    Err(payload) => {
                        std::task::Poll::Ready(Err(Ok(Panicked::from_payload(&*payload))))
                    }
                },
            )
            .await
        };
        self.drain();
        if self.pending.len() >= self.shared.config.max_items {
            reason = FlushReason::Full;
        }
        let Some((items, slots)) = self.take_batch() else {
            return;
        };
        match ready {
            Ok(()) => self.dispatch(reason, items, slots, permit),
            Err(Err(error)) => {
                self.shared.stats.failed();
                fail_all(slots, &BatchFailed::new(Arc::new(error)));
            }
            Err(Ok(panicked)) => {
                self.shared.stats.panicked();
                self.replace_backend();
                fail_all(slots, &panicked);
            }
        }
    }

    fn replace_backend(&mut self) {
        let fresh = self.shared.new_backend();
        self.state().backend = fresh;
    }

    /// Takes the next batch off the front of `pending`, dropping abandoned and expired
    /// requests, and gives their queue places back.
    fn take_batch(&mut self) -> Option<(Vec<Req>, Vec<Slot<T>>)> {
        let config = &self.shared.config;
        let now = Instant::now();
        let room = self.pending.len().min(config.max_items);
        let (mut reqs, mut slots) = (Vec::with_capacity(room), Vec::with_capacity(room));
        let (mut taken, mut taken_weight, mut weight) = (0usize, 0u64, 0u64);
        let (mut abandoned, mut expired) = (0u64, 0u64);
        // Folding counts distinct requests against `max_items`, and takes every caller of them.
        let (folding, callers) = match &self.shared.hooks.folder {
            Some(f) => {
                let reqs = &mut self.pending.iter().map(|s| &s.item.req);
                (true, (f.unique_prefix)(reqs, config.max_items))
            }
            None => (false, usize::MAX),
        };
        while let Some(front) = self.pending.front() {
            if taken >= callers || (!folding && reqs.len() >= config.max_items) {
                break;
            }
            if let Some(max) = config.max_weight
                && !reqs.is_empty()
                && weight.saturating_add(front.item.weight) > max
            {
                break;
            }
            let item = self.pending.pop_front().expect("front was Some").item;
            taken += 1;
            taken_weight += item.weight;
            if item.slot.is_closed() {
                abandoned += 1;
                continue;
            }
            if item.deadline.is_some_and(|d| d <= now) {
                expired += 1;
                let _ = item.slot.send(Err(Box::new(DeadlineExceeded::not_sent())));
                continue;
            }
            weight += item.weight;
            reqs.push(item.req);
            slots.push(item.slot);
        }
        self.release(taken, taken_weight);
        if abandoned > 0 {
            self.shared.stats.abandoned(abandoned);
        }
        if expired > 0 {
            self.shared.stats.expired(expired);
        }
        (!reqs.is_empty()).then_some((reqs, slots))
    }

    /// Gives back the queue places of `n` requests that left `pending`.
    fn release(&mut self, n: usize, weight: u64) {
        if n == 0 {
            return;
        }
        self.pending_weight -= weight;
        self.shared.queue.add_permits(n);
        // Relaxed: the weight counter only decides wake-ups; see `Shared::push`.
        self.part.weight.fetch_sub(weight, Ordering::Relaxed);
        self.part.gate.left(n);
    }

    fn dispatch(
        &mut self,
        reason: FlushReason,
        reqs: Vec<Req>,
        slots: Vec<Slot<T>>,
        permit: OwnedSemaphorePermit,
    ) {
        let callers = slots.len();
        let folder = self.shared.hooks.folder.clone();
        let (reqs, map) = match &folder {
            None => (reqs, None),
            Some(f) => match catch_unwind(AssertUnwindSafe(|| (f.fold)(reqs))) {
                Ok((unique, map)) => (unique, Some(map)),
                Err(payload) => {
                    self.shared.stats.panicked();
                    return fail_all(slots, &Panicked::from_payload(&*payload));
                }
            },
        };
        self.shared.stats.batch_sent(reason, reqs.len(), callers);
        tracing::trace!(?reason, items = reqs.len(), callers, "batch sent");
        let backend = &mut self.state().backend;
        let fut = match catch_unwind(AssertUnwindSafe(|| backend.call(reqs))) {
            Ok(fut) => fut,
            Err(payload) => {
                self.shared.stats.panicked();
                self.replace_backend();
                return fail_all(slots, &Panicked::from_payload(&*payload));
            }
        };
        // Relaxed: a statistic; the guard below takes it back down.
        self.shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            shared: self.shared.clone(),
            part: self.part.clone(),
            _permit: permit,
        };
        let clone = folder.map(|f: Folder<Req, T>| f.clone);
        tokio::spawn(execute(fut, slots, map, clone, guard));
    }
}

impl<Req, T, K> Drop for Flusher<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // Requests still held here are answered `Closed` as their slots drop; their queue
        // places go back.
        let n = self.pending.len();
        let weight = self.pending_weight;
        self.pending.clear();
        self.release(n, weight);
        if self.exited {
            return;
        }
        // Dropped mid-run: the runtime is shutting down, or a bug panicked. Let go of the
        // partition, and after a panic start a successor for what is still queued.
        let panicking = std::thread::panicking();
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            // `try_exit` returns false when requests are queued and it took the role back.
            Ok(handle) if panicking && !self.part.gate.try_exit() => {
                handle.spawn(run(self.shared.clone(), self.part.clone()));
            }
            _ => self.part.gate.release_role(),
        }
    }
}
