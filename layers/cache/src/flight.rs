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
//! The table is sharded by key hash and each shard's mutex is held only to insert or remove
//! a flight, never across an await.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
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
    /// The leader failed or left; you lead now.
    Lead,
}

#[derive(Debug)]
struct Waiter<V> {
    tx: oneshot::Sender<Signal<V>>,
    has_stale: bool,
}

/// How a miss joined its key's flight.
#[derive(Debug)]
pub(crate) enum Join<V> {
    /// This request leads: it must end the flight with `complete` or `fail`.
    Lead,
    /// Another request leads: wait on the channel.
    Wait(oneshot::Receiver<Signal<V>>),
}

/// The table of flights in progress.
#[derive(Debug)]
pub(crate) struct Flights<K, V> {
    shards: Box<[Mutex<HashMap<K, Vec<Waiter<V>>>>]>,
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, HashMap<K, Vec<Waiter<V>>>> {
        // The maps are only changed by whole inserts and removes; a panic cannot leave one torn.
        self.shards[(hash >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the flight for `key`, or waits on the one in progress.
    pub(crate) fn join(&self, hash: u64, key: &K, has_stale: bool) -> Join<V> {
        match self.shard(hash).entry(key.clone()) {
            Entry::Vacant(v) => {
                v.insert(Vec::new());
                Join::Lead
            }
            Entry::Occupied(mut o) => {
                let (tx, rx) = oneshot::channel();
                o.get_mut().push(Waiter { tx, has_stale });
                Join::Wait(rx)
            }
        }
    }

    /// Leads the flight for `key` only if none is in progress (background refreshes).
    pub(crate) fn try_lead(&self, hash: u64, key: &K) -> bool {
        match self.shard(hash).entry(key.clone()) {
            Entry::Vacant(v) => {
                v.insert(Vec::new());
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// Ends the flight with `value`; returns how many waiters received it.
    pub(crate) fn complete(&self, hash: u64, key: &K, value: &V, error: bool) -> usize {
        let waiters = self.shard(hash).remove(key).unwrap_or_default();
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

    /// Ends the leader's part after a failure: hands the flight to a waiter, or removes it.
    pub(crate) fn fail(&self, hash: u64, key: &K) {
        let mut map = self.shard(hash);
        let Some(waiters) = map.get_mut(key) else {
            return;
        };
        let mut rest = Vec::new();
        let mut promoted = false;
        for w in waiters.drain(..) {
            if w.has_stale {
                let _ = w.tx.send(Signal::Failed);
            } else if promoted {
                rest.push(w);
            } else {
                promoted = w.tx.send(Signal::Lead).is_ok();
            }
        }
        if promoted {
            *waiters = rest;
        } else {
            map.remove(key);
        }
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

    #[test]
    fn waiters_receive_the_leaders_value() {
        let f = Flights::<u8, u8>::new();
        assert!(matches!(f.join(1, &1, false), Join::Lead));
        let Join::Wait(mut a) = f.join(1, &1, false) else {
            panic!("second should wait")
        };
        let Join::Wait(mut b) = f.join(1, &1, true) else {
            panic!("third should wait")
        };
        assert!(!f.try_lead(1, &1));
        assert_eq!(f.complete(1, &1, &9, false), 2);
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
        assert!(matches!(f.join(1, &1, false), Join::Lead));
        let Join::Wait(gone) = f.join(1, &1, false) else {
            panic!()
        };
        let Join::Wait(mut stale) = f.join(1, &1, true) else {
            panic!()
        };
        let Join::Wait(mut next) = f.join(1, &1, false) else {
            panic!()
        };
        let Join::Wait(mut last) = f.join(1, &1, false) else {
            panic!()
        };
        drop(gone);
        f.fail(1, &1);
        assert!(matches!(stale.try_recv(), Ok(Signal::Failed)));
        assert!(matches!(next.try_recv(), Ok(Signal::Lead)));
        assert!(last.try_recv().is_err());
        f.fail(1, &1);
        assert!(matches!(last.try_recv(), Ok(Signal::Lead)));
        f.fail(1, &1);
        assert_eq!(f.len(), 0);
    }
}
