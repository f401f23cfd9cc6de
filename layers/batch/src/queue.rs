//! The shared state of one layer instance: per-key partitions, each a set of per-core
//! lock-free queues, and the submission path.
//!
//! # Ground rules
//!
//! - Who runs a partition's flusher, and how many requests it holds, is decided by its
//!   [`Gate`] (see its ground rules; modelled under loom).
//! - Queue capacity is one semaphore over all keys. A service takes a permit in `poll_ready`
//!   (forgetting it at once, so no `Arc` is cloned per request) and owes it back; the flusher
//!   returns one permit for every request that leaves the queue.

use crate::backend::Backend;
use crate::config::BatchConfig;
use crate::flush;
use crate::gate::Gate;
use crate::stats::Stats;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::counter::{shard_count, shard_index};
use tollgate_core::ewma::Ewma;

pub(crate) type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;
pub(crate) type WeightFn<Req> = Arc<dyn Fn(&Req) -> u64 + Send + Sync>;
pub(crate) type DeadlineFn<Req> = Arc<dyn Fn(&Req) -> Option<Instant> + Send + Sync>;
pub(crate) type Slot<T> = oneshot::Sender<Result<T, BoxError>>;
/// Unique requests in first-seen order, and for every input the index of its unique one.
pub(crate) type FoldFn<Req> = fn(Vec<Req>) -> (Vec<Req>, Vec<usize>);
/// How many leading requests hold at most `max` distinct ones.
pub(crate) type PrefixFn<Req> = for<'a> fn(&mut dyn Iterator<Item = &'a Req>, usize) -> usize;
type Shards<Req, T> = Box<[CachePadded<SegQueue<Item<Req, T>>>]>;

/// Folding of duplicate requests, captured where `Req: Hash + Eq` and `T: Clone` are known.
pub(crate) struct Folder<Req, T> {
    pub(crate) fold: FoldFn<Req>,
    pub(crate) clone: fn(&T) -> T,
    pub(crate) unique_prefix: PrefixFn<Req>,
}

impl<Req, T> Clone for Folder<Req, T> {
    fn clone(&self) -> Self {
        Self {
            fold: self.fold,
            clone: self.clone,
            unique_prefix: self.unique_prefix,
        }
    }
}

/// The user's hooks: partition key, weigher, deadline, folding.
pub(crate) struct Hooks<Req, T, K> {
    pub(crate) key: Option<KeyFn<Req, K>>,
    pub(crate) weigher: Option<WeightFn<Req>>,
    pub(crate) deadline: Option<DeadlineFn<Req>>,
    pub(crate) folder: Option<Folder<Req, T>>,
}

impl<Req, T, K> Clone for Hooks<Req, T, K> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            weigher: self.weigher.clone(),
            deadline: self.deadline.clone(),
            folder: self.folder.clone(),
        }
    }
}

/// One queued request.
pub(crate) struct Item<Req, T> {
    pub(crate) req: Req,
    pub(crate) slot: Slot<T>,
    pub(crate) weight: u64,
    pub(crate) deadline: Option<Instant>,
}

/// A request in the flusher's pending list, with when it arrived at the latest.
///
/// Submitters do not read the clock (it is the costliest step of a submission on many
/// hosts); the flusher stamps what it drains with the time of its *previous* drain, before
/// which the request was not queued. The stamp is never later than the true arrival, so the
/// linger is never overrun; at worst a batch goes a little early.
pub(crate) struct Stamped<Req, T> {
    pub(crate) at: Instant,
    pub(crate) item: Item<Req, T>,
}

/// What a flusher keeps between its runs: the backend and its estimates.
pub(crate) struct Parked<Req, T> {
    pub(crate) backend: Box<dyn Backend<Req, T>>,
    /// Mean gap between arrivals, seconds.
    pub(crate) gap: Ewma,
    pub(crate) last_drain: Option<Instant>,
    /// When the flusher last looked at the queues: requests it finds next arrived after this.
    pub(crate) last_look: Option<Instant>,
    /// When a look last found new requests: the newest arrived no later than this.
    pub(crate) last_found: Option<Instant>,
    /// Arrivals seen since `last_drain` but not yet sampled (they came in a burst).
    pub(crate) unsampled: usize,
}

/// The requests of one batch key.
pub(crate) struct Partition<Req, T, K> {
    pub(crate) key: Option<K>,
    shards: Shards<Req, T>,
    pub(crate) gate: Gate,
    pub(crate) weight: CachePadded<AtomicU64>,
    pub(crate) wake: Notify,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) parked: Mutex<Option<Parked<Req, T>>>,
    /// Mean batch call duration in nanoseconds, 0 until the first one.
    exec_nanos: AtomicU64,
}

impl<Req, T, K> Partition<Req, T, K> {
    fn new(key: Option<K>, config: &BatchConfig) -> Self {
        Self {
            key,
            shards: (0..shard_count())
                .map(|_| CachePadded::new(SegQueue::new()))
                .collect(),
            gate: Gate::default(),
            weight: CachePadded::new(AtomicU64::new(0)),
            wake: Notify::new(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            parked: Mutex::new(None),
            exec_nanos: AtomicU64::new(0),
        }
    }

    /// Moves every queued item into `out`, stamped `at`; returns how many.
    pub(crate) fn drain_into(
        &self,
        out: &mut std::collections::VecDeque<Stamped<Req, T>>,
        at: Instant,
    ) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            while let Some(item) = shard.pop() {
                out.push_back(Stamped { at, item });
                n += 1;
            }
        }
        n
    }

    /// Batch calls of this partition in flight now.
    pub(crate) fn in_flight_now(&self, max: usize) -> usize {
        max.saturating_sub(self.in_flight.available_permits())
    }

    pub(crate) fn exec_estimate(&self) -> Duration {
        // Relaxed: an estimate; a stale value only moves a deadline flush slightly.
        Duration::from_nanos(self.exec_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn record_exec(&self, took: Duration, alpha: f64) {
        let sample = took.as_nanos().min(u64::MAX as u128) as f64;
        // Relaxed: an estimate; concurrent batches may overwrite each other's update.
        let prev = self.exec_nanos.load(Ordering::Relaxed);
        let next = if prev == 0 {
            sample
        } else {
            prev as f64 + alpha * (sample - prev as f64)
        };
        self.exec_nanos
            .store(next.max(1.0) as u64, Ordering::Relaxed);
    }

    /// Requests queued now (never negative).
    pub(crate) fn depth(&self) -> usize {
        self.gate.depth()
    }
}

/// Everything one layer instance shares between its service clones, flushers and batches.
pub(crate) struct Shared<Req, T, K> {
    pub(crate) config: BatchConfig,
    pub(crate) hooks: Hooks<Req, T, K>,
    proto: Mutex<Box<dyn Backend<Req, T>>>,
    single: Arc<Partition<Req, T, K>>,
    pub(crate) keyed: DashMap<K, Arc<Partition<Req, T, K>>>,
    pub(crate) queue: Arc<Semaphore>,
    closed: AtomicBool,
    pub(crate) stats: Stats,
    /// Signalled when a batch finishes or a flusher exits, for `shutdown`.
    pub(crate) drained: Notify,
}

impl<Req, T, K> Shared<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        config: BatchConfig,
        hooks: Hooks<Req, T, K>,
        backend: Box<dyn Backend<Req, T>>,
    ) -> Self {
        Self {
            single: Arc::new(Partition::new(None, &config)),
            keyed: DashMap::new(),
            queue: Arc::new(Semaphore::new(config.queue_capacity)),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            drained: Notify::new(),
            proto: Mutex::new(backend),
            hooks,
            config,
        }
    }

    /// A fresh backend cloned from the one the layer was built with.
    pub(crate) fn new_backend(&self) -> Box<dyn Backend<Req, T>> {
        // A poisoned lock only means a clone panicked earlier; the prototype is still whole.
        self.proto
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_box()
    }

    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release in `close`.
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        // Release: pairs with the Acquire in `is_closed`.
        self.closed.store(true, Ordering::Release);
        self.single.wake.notify_one();
        for p in self.keyed.iter() {
            p.wake.notify_one();
        }
        self.drained.notify_waiters();
    }

    /// Requests queued over all keys.
    pub(crate) fn depth(&self) -> usize {
        self.single.depth() + self.keyed.iter().map(|p| p.depth()).sum::<usize>()
    }

    /// Queues `req` (its queue permit already taken) and returns where its answer arrives.
    pub(crate) fn submit(self: &Arc<Self>, req: Req) -> oneshot::Receiver<Result<T, BoxError>> {
        let (slot, rx) = oneshot::channel();
        let weight = self.hooks.weigher.as_ref().map_or(0, |w| w(&req));
        let deadline = self.hooks.deadline.as_ref().and_then(|d| d(&req));
        let item = Item {
            req,
            slot,
            weight,
            deadline,
        };
        match &self.hooks.key {
            None => self.push(&self.single, item),
            Some(key_of) => {
                let key = key_of(&item.req);
                if let Some(part) = self.keyed.get(&key) {
                    self.push(&part, item);
                } else {
                    let config = &self.config;
                    let part = self
                        .keyed
                        .entry(key.clone())
                        .or_insert_with(|| Arc::new(Partition::new(Some(key), config)))
                        .clone();
                    self.push(&part, item);
                }
            }
        }
        rx
    }

    fn push(self: &Arc<Self>, part: &Arc<Partition<Req, T, K>>, item: Item<Req, T>) {
        let weight = item.weight;
        let has_deadline = item.deadline.is_some();
        part.shards[shard_index() & (part.shards.len() - 1)].push(item);
        let (prev, start) = part.gate.arrived();
        let now = prev + 1;
        let max = self.config.max_items as isize;
        let mut wake = prev == 0 || (now > 0 && now % max == 0) || has_deadline;
        if let Some(max_w) = self.config.max_weight {
            // Relaxed: only decides whether to wake the flusher, which recounts on its own.
            let before = part.weight.fetch_add(weight, Ordering::Relaxed);
            wake |= before < max_w && before.saturating_add(weight) >= max_w;
        }
        if start {
            tokio::spawn(flush::run(self.clone(), part.clone()));
        } else if wake {
            part.wake.notify_one();
        }
    }
}
