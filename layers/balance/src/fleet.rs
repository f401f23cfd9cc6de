//! The endpoint set: a snapshot read without a lock, replaced copy-on-write by writers.
//!
//! # Ground rules
//!
//! - Readers (every pick) load the current [`Snapshot`] from an `arc-swap` cell: no lock, no
//!   reference count on the fast path.
//! - Writers (discovery, the handle) take the writer lock, copy the endpoint list, change the
//!   copy and store it. The lock only serialises writers, so no update is lost.
//! - A removed endpoint leaves the snapshot first and is then marked `removed` (see the
//!   ground rules of [`crate::endpoint`]); it stays in the draining list until nothing is in
//!   flight on it.

use crate::common::Common;
use crate::endpoint::{Core, Endpoint};
use crate::pick::thread_seed;
use crate::ring::Ring;
use crate::signal::EndpointSignal;
use crate::sync::atomic::{AtomicU64, Ordering, fence};
use crate::sync::{Arc, Mutex, lock};
use std::fmt;

/// An immutable endpoint set.
pub(crate) struct Snapshot<K, S> {
    pub(crate) endpoints: Box<[Arc<Endpoint<K, S>>]>,
    /// The hash ring over `endpoints` (indices into it), when hashing is on.
    pub(crate) ring: Option<Ring>,
}

impl<K: fmt::Debug, S> fmt::Debug for Snapshot<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.endpoints.iter().map(|e| &e.key))
            .finish()
    }
}

/// The cell holding the current snapshot.
#[cfg(not(loom))]
mod cell {
    use arc_swap::ArcSwap;
    use std::ops::Deref;
    use std::sync::Arc;

    #[derive(Debug)]
    pub(crate) struct Cell<T>(ArcSwap<T>);

    impl<T> Cell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(ArcSwap::from_pointee(value))
        }
        pub(crate) fn load(&self) -> impl Deref<Target = Arc<T>> + '_ {
            self.0.load()
        }
        pub(crate) fn store(&self, value: T) {
            self.0.store(Arc::new(value));
        }
    }
}

/// Under loom, a mutex stands in for `arc-swap` (which loom cannot instrument): the model
/// checks the protocol around the cell, which is the same either way.
#[cfg(loom)]
mod cell {
    use loom::sync::Mutex;
    use std::ops::Deref;
    use std::sync::Arc;

    #[derive(Debug)]
    pub(crate) struct Cell<T>(Mutex<Arc<T>>);

    pub(crate) struct Loaded<T>(Arc<T>);

    impl<T> Deref for Loaded<T> {
        type Target = Arc<T>;
        fn deref(&self) -> &Arc<T> {
            &self.0
        }
    }

    impl<T> Cell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(Mutex::new(Arc::new(value)))
        }
        pub(crate) fn load(&self) -> Loaded<T> {
            Loaded(self.0.lock().unwrap().clone())
        }
        pub(crate) fn store(&self, value: T) {
            *self.0.lock().unwrap() = Arc::new(value);
        }
    }
}

/// What only writers touch.
struct Writer<K, S> {
    next_id: u64,
    /// How endpoint keys are placed on the hash ring; `None` while hashing is off.
    ring_key: Option<fn(&K) -> u64>,
    draining: Vec<Arc<Endpoint<K, S>>>,
}

/// The endpoint set and everything shared by the clones of one balancer.
pub(crate) struct Fleet<K, S> {
    pub(crate) common: Arc<Common>,
    cell: cell::Cell<Snapshot<K, S>>,
    writer: Mutex<Writer<K, S>>,
    next_sweep: AtomicU64,
    /// Seeds handed to balancer clones when the config gave one (repeatable runs); otherwise
    /// each thread makes its own ([`pick::thread_seed`]).
    seeds: Option<AtomicU64>,
}

impl<K: fmt::Debug, S> fmt::Debug for Fleet<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("endpoints", &**self.cell.load())
            .finish_non_exhaustive()
    }
}

impl<K, S> Fleet<K, S> {
    /// A seed for a new balancer clone's random sequence.
    pub(crate) fn next_seed(&self) -> u64 {
        match &self.seeds {
            // Relaxed: only hands out distinct seeds.
            Some(seeds) => seeds.fetch_add(1, Ordering::Relaxed),
            None => thread_seed(),
        }
    }
}

/// Where a new endpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At full weight (endpoints given when the balancer is built).
    Full,
    /// In slow start, when slow start is on.
    Ramp,
}

impl<K: PartialEq, S> Fleet<K, S> {
    /// A fleet whose clones draw from `seed` onwards, or from per-thread seeds when `None`.
    pub(crate) fn new(common: Arc<Common>, seed: Option<u64>) -> Self {
        Self {
            common,
            cell: cell::Cell::new(Snapshot {
                endpoints: Box::new([]),
                ring: None,
            }),
            writer: Mutex::new(Writer {
                next_id: 0,
                ring_key: None,
                draining: Vec::new(),
            }),
            next_sweep: AtomicU64::new(0),
            seeds: seed.map(AtomicU64::new),
        }
    }

    /// The current snapshot.
    pub(crate) fn load(
        &self,
    ) -> impl std::ops::Deref<Target = std::sync::Arc<Snapshot<K, S>>> + '_ {
        self.cell.load()
    }

    fn publish(&self, w: &Writer<K, S>, endpoints: Vec<Arc<Endpoint<K, S>>>) {
        let ids: Vec<u64> = endpoints.iter().map(|e| e.core.id).collect();
        self.common
            .set_members(endpoints.len(), |id| ids.contains(&id));
        // The ring is rebuilt here, with the set, never on the request path.
        let ring = w
            .ring_key
            .map(|key| Ring::build(&endpoints, key, self.common.vnodes));
        self.cell.store(Snapshot {
            endpoints: endpoints.into_boxed_slice(),
            ring,
        });
    }

    /// Turns hashing on: from now on each snapshot carries a ring placing endpoints by
    /// `key`. Rebuilds the current one's.
    pub(crate) fn enable_ring(&self, key: fn(&K) -> u64) {
        let mut w = lock(&self.writer);
        w.ring_key = Some(key);
        let list: Vec<_> = self.load().endpoints.to_vec();
        self.publish(&w, list);
    }

    /// Marks endpoints that just left the snapshot as removed and keeps them draining.
    fn retire(&self, w: &mut Writer<K, S>, gone: Vec<Arc<Endpoint<K, S>>>) {
        for ep in gone {
            // Relaxed: ordered by the fence in `prune`, which pairs with the one in
            // `Core::reserve` (see the endpoint ground rules).
            ep.core.removed.store(true, Ordering::Relaxed);
            w.draining.push(ep);
        }
        Self::prune(w);
    }

    fn prune(w: &mut Writer<K, S>) {
        // SeqCst fence: pairs with the fence in `Core::reserve`, after our store of `removed`
        // (in `retire`, or an earlier call): a drained endpoint is never reserved again.
        fence(Ordering::SeqCst);
        // Acquire: pairs with the Release decrement in `Core::release`.
        w.draining
            .retain(|ep| ep.core.in_flight.load(Ordering::Acquire) > 0);
    }

    /// Adds an endpoint, or replaces the one with the same key (which then drains).
    pub(crate) fn insert(
        &self,
        key: K,
        service: S,
        weight: f64,
        now: u64,
        start: Start,
        signal: Option<std::sync::Arc<dyn EndpointSignal>>,
    ) {
        let mut w = lock(&self.writer);
        let id = w.next_id;
        w.next_id += 1;
        let ramp = (start == Start::Ramp).then_some(now);
        let core = Arc::new(Core::new(
            id,
            self.common.clone(),
            weight,
            now,
            ramp,
            signal,
        ));
        let mut list: Vec<_> = self.load().endpoints.to_vec();
        let gone: Vec<_> = match list.iter().position(|e| e.key == key) {
            Some(i) => vec![std::mem::replace(
                &mut list[i],
                Arc::new(Endpoint::new(key, service, core)),
            )],
            None => {
                list.push(Arc::new(Endpoint::new(key, service, core)));
                Vec::new()
            }
        };
        self.publish(&w, list);
        self.retire(&mut w, gone);
    }

    /// Removes the endpoint with `key`; it drains. Returns whether it was there.
    pub(crate) fn remove(&self, key: &K) -> bool {
        let mut w = lock(&self.writer);
        let mut list: Vec<_> = self.load().endpoints.to_vec();
        let Some(i) = list.iter().position(|e| e.key == *key) else {
            Self::prune(&mut w);
            return false;
        };
        let gone = list.remove(i);
        self.publish(&w, list);
        self.retire(&mut w, vec![gone]);
        true
    }

    /// Sets the weight of the endpoint with `key`; returns whether it was there.
    pub(crate) fn set_weight(&self, key: &K, weight: f64) -> bool {
        let w = lock(&self.writer);
        let snap = self.load();
        match snap.endpoints.iter().find(|e| e.key == *key) {
            Some(e) => {
                e.core.set_weight(weight);
                if w.ring_key.is_some() {
                    // The ring gives each endpoint points in proportion to its weight.
                    let list = snap.endpoints.to_vec();
                    drop(snap);
                    self.publish(&w, list);
                }
                true
            }
            None => false,
        }
    }

    /// Removed endpoints with requests still in flight.
    pub(crate) fn draining(&self) -> Vec<Arc<Endpoint<K, S>>> {
        let mut w = lock(&self.writer);
        Self::prune(&mut w);
        w.draining.clone()
    }

    /// Compares success rates across the fleet when an interval has passed, ejecting the
    /// endpoints far below the mean. Cheap when no interval has passed: one load.
    pub(crate) fn maybe_sweep(&self, now: u64) {
        let o = &self.common.outlier;
        if !o.success_rate {
            return;
        }
        // Relaxed: the compare-exchange below decides who sweeps; nothing is published.
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now.saturating_add(u64::try_from(o.interval.as_nanos()).unwrap_or(u64::MAX));
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if due == 0 {
            // The first call only starts the first window.
            for e in self.load().endpoints.iter() {
                e.core.take_window(0);
            }
            return;
        }
        self.sweep(now);
    }

    /// Ejects endpoints whose success rate over the last interval is far below the fleet's.
    /// Allocates nothing: each endpoint keeps its window's rate for the second pass.
    fn sweep(&self, now: u64) {
        let o = &self.common.outlier;
        let snap = self.load();
        let (mut n, mut sum, mut sum_sq) = (0usize, 0.0f64, 0.0f64);
        for e in snap.endpoints.iter() {
            if let Some(r) = e.core.take_window(o.success_rate_min_requests) {
                n += 1;
                sum += r;
                sum_sq += r * r;
            }
        }
        if n < o.success_rate_min_hosts as usize {
            return;
        }
        let mean = sum / n as f64;
        let var = (sum_sq / n as f64 - mean * mean).max(0.0);
        let floor = mean - o.success_rate_stdev_factor * var.sqrt();
        for e in snap.endpoints.iter() {
            if e.core.window_rate().is_some_and(|r| r < floor) {
                self.common.try_eject(&e.core, now);
            }
        }
    }
}
