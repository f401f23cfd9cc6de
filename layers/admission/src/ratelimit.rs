//! Per-key rate limits: `governor`'s GCRA over a bounded, sharded key store.
//!
//! `governor` keeps one number per key, its theoretical arrival time (TAT). A key whose TAT
//! has passed is indistinguishable from a key never seen, so forgetting it changes nothing.
//! [`BoundedStore`] keeps at most `max_keys` keys: when a shard is full it first forgets every
//! idle key (TAT passed), and if that is not enough, the quarter of the shard closest to idle
//! (a lenient choice: such a key gets a fresh burst early, and memory stays bounded).
//!
//! Time comes from tokio's clock ([`TokioClock`]), so paused-time tests are deterministic.
//!
//! An admitted request learns what its key has left ([`RateLimitState`]): the requests it may
//! still make at once (`governor`'s `StateInformationMiddleware`) and the time until one more
//! frees, from the TAT the store just wrote. `governor` does not hand the TAT out, so the store
//! leaves it in a thread-local cell that the same (synchronous) check reads back: no lock and
//! no allocation beyond the check's own.

use crate::classify::Key;
use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::cell::Cell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const SHARDS: usize = 16;

thread_local! {
    /// The TAT this thread's last check stored, nanoseconds on the limiter's clock.
    static LAST_TAT: Cell<u64> = const { Cell::new(0) };
}

/// What a key has left after an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    /// Requests the key may still make at once, 0 to `burst - 1`.
    pub remaining: u32,
    /// The time until the key may make one request more than `remaining` (`Duration::ZERO`
    /// when its whole burst is left).
    pub reset: Duration,
}

impl RateLimitState {
    /// The state of a key `room` short of an empty bucket after this request
    /// (`now + tolerance + interval - TAT`), for requests `interval` apart with `tolerance`
    /// (`interval * (burst - 1)`), all counted in `unit_nanos` nanoseconds.
    pub(crate) fn from_room(room: u64, interval: u64, tolerance: u64, unit_nanos: u64) -> Self {
        let interval = interval.max(1);
        let full = tolerance.saturating_add(interval);
        let remaining = (room.min(full) / interval).min(u64::from(u32::MAX)) as u32;
        let reset = if room >= full {
            0
        } else {
            interval - room % interval
        };
        Self {
            remaining,
            reset: Duration::from_nanos(reset.saturating_mul(unit_nanos)),
        }
    }
}

/// A `governor` clock that reads tokio's (possibly paused) clock, as the time since it was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    base: Instant,
}

impl TokioClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.base)
    }
}

/// A sharded key store holding at most about `max_keys` keys. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct BoundedStore {
    shards: Box<[Mutex<HashMap<Key, u64>>]>,
    per_shard: usize,
    clock: TokioClock,
}

impl BoundedStore {
    fn new(max_keys: usize, clock: TokioClock) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            clock,
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, u64>> {
        // The key is already a hash; its top bits pick the shard, HashMap uses the rest.
        &self.shards[(key.0 >> 60) as usize % SHARDS]
    }

    /// Makes room for one key in a full shard.
    fn evict(map: &mut HashMap<Key, u64>, now: u64, per_shard: usize) {
        map.retain(|_, tat| *tat > now);
        if map.len() >= per_shard {
            let mut tats: Vec<u64> = map.values().copied().collect();
            let cut = (tats.len() / 4).max(1) - 1;
            let (_, bound, _) = tats.select_nth_unstable(cut);
            let bound = *bound;
            map.retain(|_, tat| *tat > bound);
        }
    }
}

impl StateStore for BoundedStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // A poisoned shard holds plain numbers that are always consistent: keep using it.
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let prev = map.get(key).map(|t| Nanos::new(*t));
        let (out, next) = f(prev)?;
        if prev.is_none() && map.len() >= self.per_shard {
            let now = self.clock.now().as_nanos() as u64;
            Self::evict(&mut map, now, self.per_shard);
        }
        map.insert(*key, next.as_u64());
        LAST_TAT.with(|t| t.set(next.as_u64()));
        Ok(out)
    }
}

/// The local, in-process per-key limiter.
#[derive(Debug)]
pub(crate) struct LocalLimiter {
    limiter: RateLimiter<Key, BoundedStore, TokioClock, StateInformationMiddleware>,
    clock: TokioClock,
    /// The limiter's origin on `clock`: TATs count from it.
    start: Duration,
    /// Nanoseconds between requests and the burst's tolerance, as the GCRA counts them.
    interval: u64,
    tolerance: u64,
}

impl LocalLimiter {
    /// `burst` requests per `period` per key; `burst` and `period` were validated non-zero.
    pub(crate) fn new(burst: u32, period: Duration, max_keys: usize) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let per_cell = (period / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(per_cell).map_or_else(
            || Quota::per_second(NonZeroU32::MAX),
            |q| q.allow_burst(burst),
        );
        let clock = TokioClock::new();
        let interval = quota.replenish_interval().as_nanos() as u64;
        // governor counts TATs from the clock's reading when the limiter is made.
        let start = clock.now();
        Self {
            limiter: RateLimiter::<_, _, _, NoOpMiddleware<Duration>>::new(
                quota,
                BoundedStore::new(max_keys, clock),
                clock,
            )
            .with_middleware::<StateInformationMiddleware>(),
            clock,
            start,
            interval,
            tolerance: interval.saturating_mul(u64::from(quota.burst_size().get() - 1)),
        }
    }

    /// What `key` has left if it may go now, else how long until it may.
    pub(crate) fn check(&self, key: Key) -> Result<RateLimitState, Duration> {
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let now = self.clock.now().saturating_sub(self.start).as_nanos() as u64;
                let tat = LAST_TAT.with(Cell::get);
                let room = (now + self.tolerance + self.interval).saturating_sub(tat);
                let mut state = RateLimitState::from_room(room, self.interval, self.tolerance, 1);
                // governor's count, from its own reading of the clock.
                state.remaining = snapshot.remaining_burst_capacity();
                Ok(state)
            }
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Keys tracked now.
    pub(crate) fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets every idle key (one whose bucket has refilled).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

impl ShrinkableKeyedStateStore<Key> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = drop_below.as_u64();
        for s in self.shards.iter() {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, tat| *tat >= below);
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
