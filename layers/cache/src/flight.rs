//! Single-flight: concurrent misses for one key send one request to the inner service.
//!
//! The first miss for a key becomes its *leader* and enters the table; later misses register a
//! one-shot channel and wait. The leader ends the flight one of two ways:
//!
//! - [`Flights::complete`]: every waiter receives the value (a waiter holding a stale entry
//!   receives [`Signal::Failed`] instead when the value is an error response, and serves its
//!   stale entry).
//! - [`Flights::fail`] (an inner error, a panic, or a dropped leader): waiters holding a stale
//!   entry are told [`Signal::Failed`], and the first live waiter without one is told
//!   [`Signal::Lead`] and takes over; the others keep waiting on it.
//!
//! An invalidation [`detach`](Flights::detach)es the key's flight: its waiters are let go (they
//! ask the inner service themselves rather than take a value fetched before the invalidation),
//! and the old leader, whose flight id no longer matches, ends nothing but its own call.
//!
//! The table is sharded by key hash and each shard's mutex is held only to insert or remove
//! a flight, never across an await.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

const SHARDS: usize = 16;

/// What a waiter learns from its flight.
#[derive(Debug)]
pub(crate) enum Signal<V> {
    /// The leader's answer; `error` when the policy classified it as a failure.
    Value { value: V, error: bool },
    /// The leader failed; serve the stale entry you hold.
    Failed,
    /// The leader failed or left; you lead flight `id` now.
    Lead(u64),
}

#[derive(Debug)]
struct Waiter<V> {
    tx: oneshot::Sender<Signal<V>>,
    has_stale: bool,
}

/// How a miss joined its key's flight.
#[derive(Debug)]
pub(crate) enum Join<V> {
    /// This request leads flight `id`: it must end it with `complete` or `fail`.
    Lead(u64),
    /// Another request leads: wait on the channel.
    Wait(oneshot::Receiver<Signal<V>>),
}

/// The table of flights in progress.
#[derive(Debug)]
pub(crate) struct Flights<K, V> {
    shards: Box<[Shard<K, V>]>,
    next_id: AtomicU64,
}

type Shard<K, V> = Mutex<HashMap<K, Flight<V>>>;

#[derive(Debug)]
struct Flight<V> {
    id: u64,
    waiters: Vec<Waiter<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
        }
    }

    fn new_flight(&self) -> Flight<V> {
        // Relaxed: only hands out distinct ids.
        Flight {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waiters: Vec::new(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        // The maps are only changed by whole inserts and removes; a panic cannot leave one torn.
        self.shards[(hash >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the flight for `key`, or waits on the one in progress.
    pub(crate) fn join(&self, hash: u64, key: &K, has_stale: bool) -> Join<V> {
        match self.shard(hash).entry(key.clone()) {
            Entry::Vacant(v) => Join::Lead(v.insert(self.new_flight()).id),
            Entry::Occupied(mut o) => {
                let (tx, rx) = oneshot::channel();
                o.get_mut().waiters.push(Waiter { tx, has_stale });
                Join::Wait(rx)
            }
        }
    }

    /// Leads the flight for `key` only if none is in progress (background refreshes).
    pub(crate) fn try_lead(&self, hash: u64, key: &K) -> Option<u64> {
        match self.shard(hash).entry(key.clone()) {
            Entry::Vacant(v) => Some(v.insert(self.new_flight()).id),
            Entry::Occupied(_) => None,
        }
    }

    /// Removes flight `id` of `key` if it is still in the table.
    fn take(&self, hash: u64, key: &K, id: u64) -> Vec<Waiter<V>> {
        let mut map = self.shard(hash);
        match map.get(key) {
            Some(f) if f.id == id => map.remove(key).map(|f| f.waiters).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Ends flight `id` with `value`; returns how many waiters received it.
    pub(crate) fn complete(&self, hash: u64, key: &K, id: u64, value: &V, error: bool) -> usize {
        let waiters = self.take(hash, key, id);
        let mut served = 0;
        for w in waiters {
            let signal = if error && w.has_stale {
                Signal::Failed
            } else {
                Signal::Value {
                    value: value.clone(),
                    error,
                }
            };
            served += usize::from(w.tx.send(signal).is_ok());
        }
        served
    }

    /// Ends the leader's part of flight `id` after a failure: hands it to a waiter, or removes
    /// it.
    pub(crate) fn fail(&self, hash: u64, key: &K, id: u64) {
        let mut map = self.shard(hash);
        let Some(flight) = map.get_mut(key).filter(|f| f.id == id) else {
            return;
        };
        let mut rest = Vec::new();
        let mut promoted = false;
        for w in flight.waiters.drain(..) {
            if w.has_stale {
                let _ = w.tx.send(Signal::Failed);
            } else if promoted {
                rest.push(w);
            } else {
                promoted = w.tx.send(Signal::Lead(id)).is_ok();
            }
        }
        if promoted {
            flight.waiters = rest;
        } else {
            map.remove(key);
        }
    }

    /// Forgets `key`'s flight (an invalidation): its waiters are let go, its leader ends
    /// nothing.
    pub(crate) fn detach(&self, hash: u64, key: &K) {
        let flight = self.shard(hash).remove(key);
        drop(flight);
    }

    /// Flights in progress (for tests and statistics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(j: Join<u8>) -> u64 {
        match j {
            Join::Lead(id) => id,
            Join::Wait(_) => panic!("should lead"),
        }
    }

    fn wait(j: Join<u8>) -> oneshot::Receiver<Signal<u8>> {
        match j {
            Join::Wait(rx) => rx,
            Join::Lead(_) => panic!("should wait"),
        }
    }

    #[test]
    fn waiters_receive_the_leaders_value() {
        let f = Flights::<u8, u8>::new();
        let id = lead(f.join(1, &1, false));
        let mut a = wait(f.join(1, &1, false));
        let mut b = wait(f.join(1, &1, true));
        assert!(f.try_lead(1, &1).is_none());
        assert_eq!(f.complete(1, &1, id, &9, false), 2);
        assert!(matches!(
            a.try_recv(),
            Ok(Signal::Value {
                value: 9,
                error: false
            })
        ));
        assert!(matches!(
            b.try_recv(),
            Ok(Signal::Value {
                value: 9,
                error: false
            })
        ));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn failure_promotes_one_live_waiter_and_frees_stale_holders() {
        let f = Flights::<u8, u8>::new();
        let id = lead(f.join(1, &1, false));
        let gone = wait(f.join(1, &1, false));
        let mut stale = wait(f.join(1, &1, true));
        let mut next = wait(f.join(1, &1, false));
        let mut last = wait(f.join(1, &1, false));
        drop(gone);
        f.fail(1, &1, id);
        assert!(matches!(stale.try_recv(), Ok(Signal::Failed)));
        assert!(matches!(next.try_recv(), Ok(Signal::Lead(i)) if i == id));
        assert!(last.try_recv().is_err());
        f.fail(1, &1, id);
        assert!(matches!(last.try_recv(), Ok(Signal::Lead(_))));
        f.fail(1, &1, id);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_detached_flight_lets_its_waiters_go_and_its_old_leader_ends_nothing() {
        let f = Flights::<u8, u8>::new();
        let old = lead(f.join(1, &1, false));
        let mut w = wait(f.join(1, &1, false));
        f.detach(1, &1);
        assert!(matches!(
            w.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        let new = lead(f.join(1, &1, false));
        let mut w2 = wait(f.join(1, &1, false));
        assert_eq!(f.complete(1, &1, old, &1, false), 0);
        f.fail(1, &1, old);
        assert!(
            w2.try_recv().is_err(),
            "the old leader must not end the new flight"
        );
        assert_eq!(f.complete(1, &1, new, &2, false), 1);
        assert!(matches!(w2.try_recv(), Ok(Signal::Value { value: 2, .. })));
    }
}
