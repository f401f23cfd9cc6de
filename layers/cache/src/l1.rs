//! L1: one small table per shard (per core), so hits on different cores never share a lock or
//! a cache line.
//!
//! Each shard is a two-way set-associative table behind its own mutex. A thread only uses the
//! shard `tollgate_core::counter::shard_index()` gives it, so the mutex is uncontended and a hit
//! costs a hash, an uncontended lock and a clone of the value. Slots keep a small hit count: a new
//! key only replaces a slot whose count has decayed to zero, so the hottest keys stay.
//! Invalidation visits every shard.

use crossbeam_utils::CachePadded;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tollgate_core::counter::{shard_count, shard_index};

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
    hits: u8,
    /// Hits since the copy was made, wrapping; every [`TOUCH_EVERY`]th is reported to L2.
    seen: u8,
}

/// One L1 hit in this many is also reported to L2, so moka's recency and frequency estimates
/// keep counting keys that L1 answers (otherwise L2 evicts them as cold, and when L1 drops them
/// too they miss: measured 0.3 % of Zipf(1) hits).
pub(crate) const TOUCH_EVERY: u8 = 64;

type Table<K, V> = Vec<Option<Slot<K, V>>>;
type Shard<K, V> = CachePadded<Mutex<Table<K, V>>>;

/// The per-shard tables.
#[derive(Debug)]
pub(crate) struct L1<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// Slots per shard minus one (a power of two minus one).
    mask: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock (a `Clone` or `Eq` impl panicking) leaves a table whose
    // slots are each whole; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq, V: Clone> L1<K, V> {
    /// `slots` per shard, a power of two of at least 2.
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(2);
        let shards = (0..shard_count())
            .map(|_| CachePadded::new(Mutex::new((0..slots).map(|_| None).collect())))
            .collect();
        Self {
            shards,
            mask: slots - 1,
        }
    }

    fn shard(&self) -> &Mutex<Table<K, V>> {
        &self.shards[shard_index() & (self.shards.len() - 1)]
    }

    fn set(&self, hash: u64) -> usize {
        (hash as usize) & self.mask & !1
    }

    /// The value of `key` if this thread's shard holds it and it is still good at `now`, and
    /// whether this hit should be reported to L2.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &K, now: Instant) -> Option<(V, bool)> {
        let mut t = lock(self.shard());
        let i = self.set(hash);
        for slot in t[i..i + 2].iter_mut().flatten() {
            if slot.hash == hash && slot.key == *key {
                if now < slot.until {
                    slot.hits = slot.hits.saturating_add(1);
                    slot.seen = slot.seen.wrapping_add(1);
                    return Some((slot.value.clone(), slot.seen % TOUCH_EVERY == 0));
                }
                return None;
            }
        }
        None
    }

    /// Offers `key` to this thread's shard until `until`, if `still_valid()` (checked under the
    /// shard's lock, so an invalidation that clears the shard after it cannot be undone).
    pub(crate) fn insert(
        &self,
        hash: u64,
        key: K,
        value: V,
        until: Instant,
        now: Instant,
        still_valid: impl FnOnce() -> bool,
    ) {
        let mut t = lock(self.shard());
        if !still_valid() {
            return;
        }
        let i = self.set(hash);
        let pair = &mut t[i..i + 2];
        // The same key, an empty or expired slot, else the colder of the two if it is cold.
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
                let cold = if pair[0].as_ref().map_or(0, |s| s.hits)
                    <= pair[1].as_ref().map_or(0, |s| s.hits)
                {
                    0
                } else {
                    1
                };
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
            hits: 0,
            seen: 0,
        });
    }

    /// Drops `key` from every shard.
    pub(crate) fn remove(&self, hash: u64, key: &K) {
        let i = self.set(hash);
        for shard in self.shards.iter() {
            let mut t = lock(shard);
            for s in &mut t[i..i + 2] {
                if s.as_ref().is_some_and(|s| s.hash == hash && s.key == *key) {
                    *s = None;
                }
            }
        }
    }

    /// Empties every shard.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).iter_mut().for_each(|s| *s = None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hits_until_the_deadline_and_forgets_on_remove() {
        let l1 = L1::<u64, u64>::new(8);
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        l1.insert(hash_of(&1), 1, 10, until, now, || true);
        assert_eq!(l1.get(hash_of(&1), &1, now), Some((10, false)));
        assert_eq!(l1.get(hash_of(&2), &2, now), None);
        assert_eq!(l1.get(hash_of(&1), &1, until), None);
        l1.remove(hash_of(&1), &1);
        assert_eq!(l1.get(hash_of(&1), &1, now), None);
        l1.insert(hash_of(&3), 3, 30, until, now, || false);
        assert_eq!(l1.get(hash_of(&3), &3, now), None);
    }

    #[test]
    fn hot_keys_survive_a_stream_of_cold_ones() {
        let l1 = L1::<u64, u64>::new(2);
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        l1.insert(hash_of(&0), 0, 0, until, now, || true);
        for k in 1..100u64 {
            for _ in 0..8 {
                assert_eq!(
                    l1.get(hash_of(&0), &0, now).map(|h| h.0),
                    Some(0),
                    "hot key evicted by {k}"
                );
            }
            l1.insert(hash_of(&k), k, k, until, now, || true);
        }
        l1.clear();
        assert_eq!(l1.get(hash_of(&0), &0, now), None);
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
