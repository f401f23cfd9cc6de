//! One breaker per key, with a bounded number of keys.
//!
//! Keys live in a [`DashMap`]. A known key costs a shard read lock and a clock read per call
//! (to mark it used); a new key takes a shard write lock, may sweep keys idle for longer than
//! [`KeyLimits::idle_timeout`] (at most once per half of it), and, while the map is over
//! [`KeyLimits::max_keys`], evicts one key by the CLOCK rule (second chance): keys wait in
//! a queue in the order they came; the one at its head is evicted unless it was used since it
//! was queued, or its breaker is not closed, in which case it goes to the back. A bounded
//! number of looks per new key, so a client minting keys costs each request a few steps, not a
//! scan of the map; and an open breaker is the last to go, so such a client cannot push the
//! breaker of a failing key out and have it come back closed. Calls in flight on an evicted
//! key finish against its old breaker; the key's next call starts a fresh, closed one.

use crate::config::{BreakerConfig, KeyLimits};
use crate::future::{Guard, Local, ResponseFuture, nanos_since};
use crate::handle::BreakerHandle;
use crate::machine::{Core, Listener};
use crate::sync::Arc;
use dashmap::DashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::time::Instant;
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_service::Service;

struct Entry<C> {
    local: std::sync::Arc<Local<C>>,
    last_used: AtomicU64,
}

pub(crate) struct Keys<K, C> {
    map: DashMap<K, Entry<C>>,
    config: BreakerConfig,
    limits: KeyLimits,
    classify: C,
    listeners: Mutex<Vec<Listener>>,
    base: Instant,
    last_sweep: AtomicU64,
    /// Keys in the order they came (or were given their second chance), each with the time it
    /// was queued: the CLOCK's hand. Touched only when a key is created, evicted or swept.
    queue: Mutex<std::collections::VecDeque<(K, u64)>>,
}

/// How many queued keys one eviction looks at, at most: past that it takes the oldest closed
/// one it saw (or the oldest one at all).
const EVICT_LOOKS: usize = 16;

impl<K, C> fmt::Debug for Keys<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug, C> Keys<K, C> {
    pub(crate) fn new(config: BreakerConfig, limits: KeyLimits, classify: C) -> Self {
        Self {
            map: DashMap::new(),
            config,
            limits,
            classify,
            listeners: Mutex::new(Vec::new()),
            base: Instant::now(),
            last_sweep: AtomicU64::new(0),
            queue: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(K, u64)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evicts one key other than `keep` by the CLOCK rule (see the module docs).
    fn evict_one(&self, keep: &K) {
        let mut queue = self.queue();
        let mut fallback: Option<(K, bool)> = None;
        let mut looks = 0;
        while looks < EVICT_LOOKS {
            let Some((k, queued)) = queue.pop_front() else {
                break;
            };
            let Some(entry) = self.map.get(&k) else {
                // Swept or reset already: not a look.
                continue;
            };
            looks += 1;
            if k == *keep {
                drop(entry);
                queue.push_back((k, queued));
                continue;
            }
            // Relaxed: an eviction hint.
            let used = entry.last_used.load(Relaxed) > queued;
            let closed = entry.local.core.state() == crate::State::Closed;
            drop(entry);
            if !used && closed {
                self.map.remove(&k);
                return;
            }
            // A second chance: back of the queue, queued anew.
            let better = match &fallback {
                None => true,
                Some((_, was_closed)) => closed && !was_closed,
            };
            if better {
                fallback = Some((k.clone(), closed));
            }
            queue.push_back((k, self.now()));
        }
        if let Some((k, _)) = fallback {
            // Its queue entry stays: popped later, a key no longer in the map is skipped, and
            // the next sweep drops it (no scan of the queue here).
            self.map.remove(&k);
        }
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn with_classifier<C2>(&self, classify: C2) -> Keys<K, C2> {
        let keys = Keys::new(self.config.clone(), self.limits, classify);
        *keys.listeners.lock().unwrap_or_else(|e| e.into_inner()) = self.listeners();
        keys
    }

    pub(crate) fn add_listener(&self, listener: Listener) {
        for entry in self.map.iter() {
            entry.local.core.add_listener(listener.clone());
        }
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn now(&self) -> u64 {
        nanos_since(self.base, Instant::now())
    }

    /// The breaker for `key`, created (and the map swept) if new.
    fn get(&self, key: K) -> std::sync::Arc<Local<C>>
    where
        C: Clone,
    {
        let now = self.now();
        if let Some(entry) = self.map.get(&key) {
            // Relaxed: an eviction hint; a lost update only makes a key look idle sooner.
            entry.last_used.store(now, Relaxed);
            return entry.local.clone();
        }
        self.sweep(now);
        let mut created = false;
        let local = self
            .map
            .entry(key.clone())
            .or_insert_with(|| {
                created = true;
                let name: std::sync::Arc<str> = format!("{}[{key:?}]", self.config.name).into();
                let core = Core::new(&self.config, name);
                for l in self.listeners() {
                    core.add_listener(l);
                }
                let local = Local {
                    core: Arc::new(core),
                    classify: self.classify.clone(),
                };
                Entry {
                    local: std::sync::Arc::new(local),
                    last_used: AtomicU64::new(now),
                }
            })
            .local
            .clone();
        if created {
            self.queue().push_back((key.clone(), now));
        }
        // Each new key evicts at most one: the map stays at `max_keys` (a racing creation may
        // leave it one over for as long as the race).
        if created && self.map.len() > self.limits.max_keys {
            self.evict_one(&key);
        }
        local
    }

    /// Drops idle keys, at most once per half idle timeout (a full map does not make it run
    /// more often: eviction takes care of a full map, a step per new key).
    fn sweep(&self, now: u64) {
        let idle = u64::try_from(self.limits.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: only spaces sweeps out; two racing sweeps are harmless.
        let last = self.last_sweep.load(Relaxed);
        if now.saturating_sub(last) < idle / 2 {
            return;
        }
        self.last_sweep.store(now, Relaxed);
        // Relaxed: as in `get`.
        self.map
            .retain(|_, e| now.saturating_sub(e.last_used.load(Relaxed)) < idle);
        // The queue forgets the keys swept (and any left by resets), so it stays the size of
        // the map.
        self.queue().retain(|(k, _)| self.map.contains_key(k));
    }
}

/// Watches and steers the per-key breakers of a [`KeyedBreakerLayer`](crate::KeyedBreakerLayer).
pub struct KeyedBreakerHandle<K, C = ErrorsAreFailures> {
    keys: std::sync::Arc<Keys<K, C>>,
}

impl<K, C> Clone for KeyedBreakerHandle<K, C> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
        }
    }
}

impl<K, C> fmt::Debug for KeyedBreakerHandle<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerHandle")
            .field("keys", &self.keys)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug, C> KeyedBreakerHandle<K, C> {
    pub(crate) fn new(keys: std::sync::Arc<Keys<K, C>>) -> Self {
        Self { keys }
    }

    /// The breaker of `key`, if the key is currently kept.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.keys
            .map
            .get(key)
            .map(|e| BreakerHandle::new(e.local.core.clone()))
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.keys.map.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.keys.map.is_empty()
    }

    /// The keys kept, in no particular order.
    pub fn keys(&self) -> Vec<K> {
        self.keys.map.iter().map(|e| e.key().clone()).collect()
    }
}

/// Routes each request to the breaker of its key. Build it with
/// [`KeyedBreakerLayer`](crate::KeyedBreakerLayer).
///
/// The key is known only in `call`, so `poll_ready` readies the inner service and `call`
/// decides admission: a rejected request returns [`Open`](crate::Open) without calling the
/// inner service.
pub struct KeyedBreaker<S, K, F, C = ErrorsAreFailures> {
    inner: S,
    keys: std::sync::Arc<Keys<K, C>>,
    key_of: F,
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .finish()
    }
}

impl<S: Clone, K, F: Clone, C> Clone for KeyedBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: self.keys.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<S, K, F, C> KeyedBreaker<S, K, F, C> {
    pub(crate) fn from_parts(inner: S, keys: std::sync::Arc<Keys<K, C>>, key_of: F) -> Self {
        Self {
            inner,
            keys,
            key_of,
        }
    }

    /// A handle on the keys' breakers.
    pub fn handle(&self) -> KeyedBreakerHandle<K, C> {
        KeyedBreakerHandle {
            keys: self.keys.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, F, C, R> Service<R> for KeyedBreaker<S, K, F, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    F: Fn(&R) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let local = self.keys.get((self.key_of)(&req));
        let core = &*local.core;
        match core.acquire(|| crate::future::now_ns(core)) {
            Err(open) => ResponseFuture::rejected(open),
            Ok(permit) => {
                let mut guard = Guard::new(local.clone(), permit);
                guard.start();
                ResponseFuture::called(self.inner.call(req), guard)
            }
        }
    }
}
