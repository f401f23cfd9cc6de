//! L1: one small table per worker thread, so hits on different cores share no lock and write
//! no shared cache line.
//!
//! Each thread that serves a layer's requests gets its own two-way set-associative table (in a
//! thread-local, found by the layer's id). A hit costs a hash, a clock read, one read of the
//! key's invalidation counter and a clone of the value: no atomic read-modify-write, no
//! allocation. Slots keep a small hit count: a new key only replaces a slot whose count has
//! decayed to zero, so the hottest keys stay.
//!
//! A thread cannot reach another thread's table, so invalidation is by validation: a copy
//! remembers its key's invalidation counter (see `tiers`) and only answers while the counter is
//! unchanged. Hits are counted in a single-writer counter per table, registered with the layer
//! so statistics can sum them. Tables of dropped layers are pruned when a thread makes a new one.

use std::any::Any;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::time::Instant;
/// A fast, non-cryptographic hash (FxHash's multiply-rotate with a final avalanche). Only picks
/// slots in fixed-size tables, where a collision costs an eviction, never a long probe.
#[derive(Debug, Default)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(K).rotate_left(26);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }
}

/// The hash every tier and the single-flight table use for `key`.
pub(crate) fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = FastHasher::default();
    key.hash(&mut h);
    h.finish()
}

#[derive(Debug)]
struct Slot<K, V> {
    hash: u64,
    key: K,
    value: V,
    until: Instant,
    /// When the value was stored (for its age).
    stored_at: Instant,
    /// The key's invalidation counter when the copy was made.
    epoch: u64,
    hits: u8,
    /// Hits since the copy was made, wrapping; every [`TOUCH_EVERY`]th is reported to L2.
    seen: u8,
}

/// One L1 hit in this many is also reported to L2, so moka's recency and frequency estimates
/// keep counting keys that L1 answers (otherwise L2 evicts them as cold, and when L1 drops them
/// too they miss: measured 0.3 % of Zipf(1) hits).
pub(crate) const TOUCH_EVERY: u8 = 64;

/// When an L1 copy was stored and until when it may answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validity {
    /// When the value was stored in L2.
    pub(crate) stored_at: Instant,
    /// The copy answers before this.
    pub(crate) until: Instant,
    /// Now.
    pub(crate) now: Instant,
    /// The key's invalidation counter read before the look-up.
    pub(crate) epoch: u64,
}

/// One thread's table for one layer.
struct Local<K, V> {
    slots: Vec<Option<Slot<K, V>>>,
    /// Written by this thread only; read by statistics.
    hits: Arc<AtomicU64>,
}

struct TlsEntry {
    id: u64,
    alive: Weak<()>,
    table: Box<dyn Any>,
}

thread_local! {
    static TABLES: RefCell<Vec<TlsEntry>> = const { RefCell::new(Vec::new()) };
}

/// A layer's L1: its id and what it needs to find and count its thread-local tables.
#[derive(Debug)]
pub(crate) struct L1<K, V> {
    id: u64,
    /// Slots per table minus one (a power of two minus one).
    mask: usize,
    /// Dropped with the layer, so threads can prune its tables.
    alive: Arc<()>,
    /// Every table's hit counter.
    counters: Mutex<Vec<Arc<AtomicU64>>>,
    /// Hits of tables whose threads have exited.
    retired: AtomicU64,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Eq + 'static, V: Clone + 'static> L1<K, V> {
    /// `slots` per thread, a power of two of at least 2.
    pub(crate) fn new(slots: usize) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            // Relaxed: only hands out distinct ids.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mask: slots.max(2) - 1,
            alive: Arc::new(()),
            counters: Mutex::new(Vec::new()),
            retired: AtomicU64::new(0),
            _types: PhantomData,
        }
    }

    fn set(&self, hash: u64) -> usize {
        (hash as usize) & self.mask & !1
    }

    /// Runs `f` on this thread's table, making it first if `create`. `None` when there is no
    /// table, or the thread-local is unavailable (thread exit, or re-entered from `f`).
    #[inline]
    fn with_local<R>(&self, create: bool, f: impl FnOnce(&mut Local<K, V>) -> R) -> Option<R> {
        TABLES
            .try_with(|tables| {
                let mut tables = tables.try_borrow_mut().ok()?;
                let pos = match tables.iter().position(|e| e.id == self.id) {
                    Some(p) => p,
                    None if create => {
                        tables.retain(|e| e.alive.strong_count() > 0);
                        let hits = Arc::new(AtomicU64::new(0));
                        self.register(hits.clone());
                        let local: Local<K, V> = Local {
                            slots: (0..=self.mask).map(|_| None).collect(),
                            hits,
                        };
                        tables.push(TlsEntry {
                            id: self.id,
                            alive: Arc::downgrade(&self.alive),
                            table: Box::new(local),
                        });
                        tables.len() - 1
                    }
                    None => return None,
                };
                tables[pos].table.downcast_mut::<Local<K, V>>().map(f)
            })
            .ok()
            .flatten()
    }

    /// The value of `key` if this thread's table holds a copy still good at `now` whose key has
    /// not been invalidated since (`epoch` reads the key's counter), and whether this hit should
    /// be reported to L2.
    #[inline]
    pub(crate) fn get(
        &self,
        hash: u64,
        key: &K,
        now: Instant,
        epoch: impl FnOnce() -> u64,
    ) -> Option<(V, Instant, bool)> {
        let i = self.set(hash);
        self.with_local(false, |l| {
            let slot = l.slots[i..i + 2]
                .iter_mut()
                .flatten()
                .find(|s| s.hash == hash && s.key == *key)?;
            if now >= slot.until || slot.epoch != epoch() {
                return None;
            }
            slot.hits = slot.hits.saturating_add(1);
            slot.seen = slot.seen.wrapping_add(1);
            // Relaxed, and a load plus a store rather than an RMW: this thread is the only writer.
            l.hits
                .store(l.hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            Some((
                slot.value.clone(),
                slot.stored_at,
                slot.seen % TOUCH_EVERY == 0,
            ))
        })
        .flatten()
    }

    /// Offers `key` to this thread's table until `until`, valid while the key's invalidation
    /// counter stays `epoch`.
    pub(crate) fn insert(&self, hash: u64, key: K, value: V, copy: Validity) {
        let Validity {
            stored_at,
            until,
            now,
            epoch,
        } = copy;
        let i = self.set(hash);
        self.with_local(true, |l| {
            let pair = &mut l.slots[i..i + 2];
            // The same key, an empty or dead slot, else the colder of the two if it is cold.
            let pos = pair
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.hash == hash && s.key == key))
                .or_else(|| {
                    pair.iter()
                        .position(|s| s.as_ref().is_none_or(|s| s.until <= now))
                });
            let pos = match pos {
                Some(p) => p,
                None => {
                    let hits = |p: usize| pair[p].as_ref().map_or(0, |s| s.hits);
                    let cold = usize::from(hits(0) > hits(1));
                    let slot = pair[cold].as_mut().expect("both slots are full here");
                    if slot.hits > 0 {
                        slot.hits /= 2;
                        return;
                    }
                    cold
                }
            };
            pair[pos] = Some(Slot {
                hash,
                key,
                value,
                until,
                stored_at,
                epoch,
                hits: 0,
                seen: 0,
            });
        });
    }

    /// Adds a new table's counter, folding those of exited threads into `retired`.
    fn register(&self, hits: Arc<AtomicU64>) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|c| {
            // Only the registry holds it: its thread has exited and its table is gone.
            let gone = Arc::strong_count(c) == 1;
            if gone {
                // Relaxed: statistics; the exited thread's writes were published by its exit.
                self.retired
                    .fetch_add(c.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            !gone
        });
        counters.push(hits);
    }

    /// Hits counted by every thread's table.
    pub(crate) fn hits(&self) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        // Relaxed: statistics.
        let live: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        live + self.retired.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hits_until_the_deadline_or_an_invalidation() {
        let l1 = L1::<u64, u64>::new(8);
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        assert_eq!(l1.get(hash_of(&1), &1, now, || 0), None);
        l1.insert(
            hash_of(&1),
            1,
            10,
            Validity {
                stored_at: now,
                until,
                now,
                epoch: 0,
            },
        );
        assert_eq!(l1.get(hash_of(&1), &1, now, || 0), Some((10, now, false)));
        assert_eq!(l1.get(hash_of(&2), &2, now, || 0), None);
        assert_eq!(l1.get(hash_of(&1), &1, until, || 0), None);
        assert_eq!(
            l1.get(hash_of(&1), &1, now, || 1),
            None,
            "invalidated since the copy"
        );
        assert_eq!(l1.hits(), 1);
    }

    #[test]
    fn tables_are_per_thread_and_per_layer() {
        let a = Arc::new(L1::<u64, u64>::new(8));
        let b = L1::<u64, u64>::new(8);
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        a.insert(
            hash_of(&1),
            1,
            10,
            Validity {
                stored_at: now,
                until,
                now,
                epoch: 0,
            },
        );
        assert_eq!(b.get(hash_of(&1), &1, now, || 0), None);
        let a2 = a.clone();
        let other = std::thread::spawn(move || a2.get(hash_of(&1), &1, now, || 0))
            .join()
            .unwrap();
        assert_eq!(other, None, "another thread has its own table");
        let a3 = a.clone();
        std::thread::spawn(move || {
            a3.insert(
                hash_of(&2),
                2,
                20,
                Validity {
                    stored_at: now,
                    until,
                    now,
                    epoch: 0,
                },
            );
            assert!(a3.get(hash_of(&2), &2, now, || 0).is_some());
        })
        .join()
        .unwrap();
        let a4 = a.clone();
        // A new thread's table folds the exited thread's counter into `retired`.
        std::thread::spawn(move || {
            a4.insert(
                hash_of(&3),
                3,
                30,
                Validity {
                    stored_at: now,
                    until,
                    now,
                    epoch: 0,
                },
            )
        })
        .join()
        .unwrap();
        assert_eq!(a.retired.load(Ordering::Relaxed), 1);
        assert_eq!(a.hits(), 1, "an exited thread's hits are kept");
        assert_eq!(a.get(hash_of(&1), &1, now, || 0).map(|h| h.0), Some(10));
    }

    #[test]
    fn hot_keys_survive_a_stream_of_cold_ones() {
        let l1 = L1::<u64, u64>::new(2);
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        l1.insert(
            hash_of(&0),
            0,
            0,
            Validity {
                stored_at: now,
                until,
                now,
                epoch: 0,
            },
        );
        for k in 1..100u64 {
            for _ in 0..8 {
                assert_eq!(
                    l1.get(hash_of(&0), &0, now, || 0).map(|h| h.0),
                    Some(0),
                    "hot key evicted by {k}"
                );
            }
            l1.insert(
                hash_of(&k),
                k,
                k,
                Validity {
                    stored_at: now,
                    until,
                    now,
                    epoch: 0,
                },
            );
        }
    }

    #[test]
    fn hash_spreads_small_integers() {
        let mut seen = std::collections::HashSet::new();
        for k in 0..1024u64 {
            seen.insert(hash_of(&k) & 1023);
        }
        assert!(seen.len() > 600, "{}", seen.len());
    }
}
