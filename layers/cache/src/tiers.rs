//! The tiers behind one layer: L1 (per-thread tables), L2 (`moka`), the optional remote L3,
//! the single-flight table and the counters.
//!
//! # Ground rules for invalidation
//!
//! `epochs` has one counter per bucket of key hashes (1024 buckets). [`Tiers::invalidate_local`]
//! bumps the key's counter *before* it removes the key from L2. A fill reads the counter before
//! it looks the key up and:
//! - for L2, inserts and then re-reads the counter, removing what it inserted if it changed;
//! - for L1, stores the counter with the copy, and a hit only counts while they are equal.
//!
//! Either the invalidation's removal comes after the L2 insert, or the fill sees the new
//! counter; and an L1 copy made before the bump never answers after it. So no value read before
//! an invalidation survives it. (An invalidation also retires L1 copies of the other keys in its
//! bucket; they are fetched from L2 once more.)

use crate::config::CacheConfig;
use crate::entry::{Entry, Lifetimes, Phase, Rng};
use crate::flight::Flights;
use crate::l1::{L1, Validity};
use crate::stats::Stats;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

const EPOCHS: usize = 1024;

/// An entry read from a remote tier.
#[derive(Debug)]
pub(crate) struct RemoteHit<V> {
    pub(crate) value: V,
    pub(crate) life: Lifetimes,
    /// Time since it was stored.
    pub(crate) age: Duration,
    pub(crate) delta: Duration,
}

/// A pending remote read: `None` on a miss or any failure (already counted by the tier).
pub(crate) type RemoteGet<V> = Pin<Box<dyn Future<Output = Option<RemoteHit<V>>> + Send>>;

/// What the tiers need from a remote (shared) tier. Every method is best effort and never
/// blocks: failures are counted and swallowed.
pub(crate) trait Remote<K, V>: Send + Sync + fmt::Debug {
    /// Starts a read, or `None` when the tier is unavailable (breaker open, not connected).
    fn get(&self, key: &K) -> Option<RemoteGet<V>>;
    /// Stores `entry` in the background.
    fn set(&self, key: &K, entry: &Entry<V>);
    /// Deletes `key` and tells the other instances, in the background.
    fn invalidate(&self, key: &K);
    /// Whether it is connected and subscribed to invalidations.
    fn connected(&self) -> bool;
    /// Hands the tier the local tiers, so invalidations from other instances reach them.
    fn attach(&self, local: Weak<dyn LocalTiers<K>>, stats: Weak<Stats>);
}

/// What a remote tier may do to the local tiers.
pub(crate) trait LocalTiers<K>: Send + Sync {
    /// Drops `key` from L1 and L2 (an invalidation from another instance).
    fn invalidate_local(&self, key: &K);
    /// Drops everything from L1 and L2 (invalidations may have been missed).
    fn clear_local(&self);
}

/// The result of an L2 look-up.
#[derive(Debug)]
pub(crate) enum Found<V> {
    /// Serve it; it has been stored this long.
    Hit(V, Duration),
    /// Serve it (stored this long) and refresh it in the background (XFetch, or
    /// stale-while-revalidate).
    Refresh(V, Duration),
    /// Nothing servable; the entry, if any, may still be served in place of a failure.
    Miss(Option<Arc<Entry<V>>>),
}

struct Lifetime;

// moka's `Expiry` names std's `Instant` in its signatures; the value is ignored here, and the
// lifetime comes from the tokio-time windows computed at insert.
#[allow(clippy::disallowed_types)]
impl<K, V> moka::Expiry<K, Arc<Entry<V>>> for Lifetime {
    fn expire_after_create(
        &self,
        _: &K,
        e: &Arc<Entry<V>>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(e.keep_for)
    }

    fn expire_after_update(
        &self,
        _: &K,
        e: &Arc<Entry<V>>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.keep_for)
    }
}

/// L2's key hasher: foldhash's quality hasher with a random seed (the default: a key's bucket
/// cannot be predicted, so a client cannot flood one), or a fixed one derived from the config's
/// seed for repeatable simulations. Not SipHash: moka re-hashes every entry when it rebuilds its
/// table, which a full cache with new keys arriving does again and again, and SipHash made that
/// a quarter of a miss's cost (`benches/cache.rs`, `miss_store_1_thread`).
pub(crate) type L2Hasher = foldhash::quality::SeedableRandomState;

fn l2_hasher(cfg: &CacheConfig) -> L2Hasher {
    if cfg.deterministic {
        L2Hasher::with_seed(cfg.seed, foldhash::SharedSeed::global_fixed())
    } else {
        L2Hasher::random()
    }
}

/// Everything one layer (and all services it built) shares.
pub(crate) struct Tiers<K, V> {
    pub(crate) cfg: CacheConfig,
    l1: Option<L1<K, V>>,
    l2: moka::sync::Cache<K, Arc<Entry<V>>, L2Hasher>,
    pub(crate) flights: Flights<K, V>,
    epochs: Box<[AtomicU64]>,
    pub(crate) stats: Arc<Stats>,
    rng: Rng,
    base: Instant,
    pub(crate) remote: Option<Arc<dyn Remote<K, V>>>,
}

impl<K, V> fmt::Debug for Tiers<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiers")
            .field("cfg", &self.cfg)
            .field("l2_entries", &self.l2.entry_count())
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<K, V> Tiers<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Builds the tiers for a validated `cfg`; `weighted` weighs L2 entries by their `weight`.
    pub(crate) fn new(
        cfg: CacheConfig,
        weighted: bool,
        remote: Option<Arc<dyn Remote<K, V>>>,
    ) -> Arc<Self> {
        let mut l2 = moka::sync::Cache::builder()
            .max_capacity(cfg.l2_capacity)
            .expire_after(Lifetime);
        if weighted {
            l2 = l2.weigher(|_: &K, e: &Arc<Entry<V>>| e.weight);
        }
        if let Some(tti) = cfg.time_to_idle {
            l2 = l2.time_to_idle(tti);
        }
        let hasher = l2_hasher(&cfg);
        let tiers = Arc::new(Self {
            l1: (cfg.l1_slots > 0).then(|| L1::new(cfg.l1_slots)),
            l2: l2.build_with_hasher(hasher),
            flights: Flights::new(),
            epochs: (0..EPOCHS).map(|_| AtomicU64::new(0)).collect(),
            stats: Arc::default(),
            rng: Rng::new(cfg.seed),
            base: Instant::now(),
            remote,
            cfg,
        });
        if let Some(r) = &tiers.remote {
            let local: Arc<dyn LocalTiers<K>> = tiers.clone();
            r.attach(Arc::downgrade(&local), Arc::downgrade(&tiers.stats));
        }
        tiers
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    fn epoch_cell(&self, hash: u64) -> &AtomicU64 {
        &self.epochs[(hash as usize) % EPOCHS]
    }

    /// The key's invalidation counter, read before a look-up whose result may be stored.
    pub(crate) fn epoch(&self, hash: u64) -> u64 {
        // SeqCst: pairs with the bump in `invalidate_local` (see the module's ground rules).
        self.epoch_cell(hash).load(Ordering::SeqCst)
    }

    /// L1's value for the key, if this thread's shard has a good copy.
    #[inline]
    pub(crate) fn l1_get(&self, hash: u64, key: &K, now: Instant) -> Option<(V, Duration)> {
        let (value, stored_at, touch) =
            self.l1.as_ref()?.get(hash, key, now, || self.epoch(hash))?;
        if touch {
            // Keep L2's recency and frequency estimates counting this key (see `TOUCH_EVERY`).
            let _ = self.l2.get(key);
        }
        Some((value, now.saturating_duration_since(stored_at)))
    }

    fn l1_fill(&self, hash: u64, key: &K, e: &Entry<V>, now: Instant, epoch: u64) {
        let Some(l1) = &self.l1 else { return };
        let mut until = (now + self.cfg.l1_ttl).min(e.fresh_until());
        if self.cfg.xfetch_beta > 0.0 && !e.delta.is_zero() {
            // XFetch drawn once per copy: the copy stops answering at a random point before
            // expiry, so some request reaches L2 (and its per-request XFetch test) in time.
            let gap = e.delta.as_secs_f64() * self.cfg.xfetch_beta * -self.rng.unit().ln();
            until = until
                .min(e.fresh_until() - Duration::from_secs_f64(gap.min(1e9)).min(e.life.fresh));
        }
        if until > now {
            let copy = Validity {
                stored_at: e.stored_at,
                until,
                now,
                epoch,
            };
            l1.insert(hash, key.clone(), e.value.clone(), copy);
        }
    }

    /// Looks `key` up in L2 (filling this thread's L1 on a fresh hit).
    pub(crate) fn l2_lookup(&self, hash: u64, key: &K, now: Instant, epoch: u64) -> Found<V> {
        let Some(e) = self.l2.get(key) else {
            return Found::Miss(None);
        };
        if !e.touch(self.now_ms(now), self.cfg.time_to_idle) {
            return Found::Miss(None);
        }
        let age = now.saturating_duration_since(e.stored_at);
        match e.phase(now, self.cfg.xfetch_beta, || self.rng.unit()) {
            Phase::Fresh { early: false } => {
                self.stats.l2_hits.incr();
                self.l1_fill(hash, key, &e, now, epoch);
                Found::Hit(e.value.clone(), age)
            }
            Phase::Fresh { early: true } => {
                self.stats.l2_hits.incr();
                if e.claim_refresh() {
                    Found::Refresh(e.value.clone(), age)
                } else {
                    Found::Hit(e.value.clone(), age)
                }
            }
            Phase::Revalidate => {
                self.stats.l2_hits.incr();
                self.stats.stale_served.incr();
                if e.claim_refresh() {
                    Found::Refresh(e.value.clone(), age)
                } else {
                    Found::Hit(e.value.clone(), age)
                }
            }
            Phase::Expired { usable_on_error } => Found::Miss(usable_on_error.then_some(e)),
        }
    }

    /// Makes an entry for a value just produced.
    pub(crate) fn entry(
        &self,
        value: V,
        life: Lifetimes,
        stored_at: Instant,
        delta: Duration,
        weight: u32,
        now: Instant,
    ) -> Entry<V> {
        let end = stored_at + life.total();
        let keep_for = end.saturating_duration_since(now);
        Entry::new(
            value,
            stored_at,
            life,
            delta,
            weight,
            self.now_ms(now),
            keep_for,
        )
    }

    /// Stores `entry` in L2 and this thread's L1 (and L3 when `remote`), unless the key was
    /// invalidated since `epoch` was read.
    pub(crate) fn store(
        &self,
        hash: u64,
        key: &K,
        entry: Entry<V>,
        now: Instant,
        epoch: u64,
        remote: bool,
    ) {
        if entry.keep_for.is_zero() || self.epoch(hash) != epoch {
            return;
        }
        let entry = Arc::new(entry);
        if remote && let Some(r) = &self.remote {
            r.set(key, &entry);
        }
        self.l2.insert(key.clone(), entry.clone());
        if self.epoch(hash) != epoch {
            // An invalidation raced with this insert; it may have run before it.
            self.l2.invalidate(key);
            return;
        }
        if now < entry.fresh_until() {
            self.l1_fill(hash, key, &entry, now, epoch);
        }
    }

    /// Starts a remote read if there is a remote tier.
    pub(crate) fn remote_get(&self, key: &K) -> Option<RemoteGet<V>> {
        self.remote.as_ref()?.get(key)
    }

    /// Drops `key` here and, through L3, on every other instance.
    pub(crate) fn invalidate(&self, key: &K) {
        self.invalidate_local(key);
        if let Some(r) = &self.remote {
            r.invalidate(key);
        }
    }

    /// Whether there is a remote tier and it is connected.
    pub(crate) fn remote_connected(&self) -> bool {
        self.remote.as_ref().is_some_and(|r| r.connected())
    }

    /// The counters, with L1's hits summed over its tables.
    pub(crate) fn stats(&self) -> crate::stats::CacheSnapshot {
        self.stats.snapshot(self.l1.as_ref().map_or(0, L1::hits))
    }

    /// Entries in L2 (approximate: moka applies writes lazily).
    pub(crate) fn l2_entries(&self) -> u64 {
        self.l2.run_pending_tasks();
        self.l2.entry_count()
    }
}

impl<K, V> LocalTiers<K> for Tiers<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn invalidate_local(&self, key: &K) {
        let hash = crate::l1::hash_of(key);
        // SeqCst: pairs with the loads in `epoch` (see the module's ground rules); the bump comes
        // before the removals below.
        self.epoch_cell(hash).fetch_add(1, Ordering::SeqCst);
        self.stats.invalidations.incr();
        tracing::trace!(hash, "cache: invalidated");
        // L1 copies of the key stop answering with the bump above.
        self.l2.invalidate(key);
        self.flights.detach(hash, key);
    }

    fn clear_local(&self) {
        for e in &self.epochs {
            // SeqCst: as in `invalidate_local`.
            e.fetch_add(1, Ordering::SeqCst);
        }
        // Every L1 copy stops answering with the bumps above.
        self.l2.invalidate_all();
    }
}
