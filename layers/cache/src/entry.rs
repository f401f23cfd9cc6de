//! A stored response with its freshness windows, and the XFetch test.
//!
//! An entry is *fresh* until `fresh_until`; then it may be served while one background request
//! refreshes it until `swr_until` (stale-while-revalidate), and served in place of a failure until
//! `sie_until` (stale-if-error). XFetch (Vattani, Chierichetti, Lowenstein: *Optimal
//! Probabilistic Cache Stampede Prevention*, VLDB 2015) refreshes a fresh entry early with a
//! probability that grows as expiry nears and with `delta`, the time the inner service took to
//! produce it: a request refreshes when `now - delta * beta * ln(u) >= fresh_until`, `u` uniform
//! in (0, 1].

use crate::config::CacheConfig;
use crate::policy::Cacheability;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long an entry stays in each state, measured from when it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Lifetimes {
    pub(crate) fresh: Duration,
    /// Stale-while-revalidate window, after `fresh`.
    pub(crate) swr: Duration,
    /// Stale-if-error window, after `fresh`.
    pub(crate) sie: Duration,
}

impl Lifetimes {
    /// The lifetimes the config gives a response the policy classified as `c`, or `None` when it
    /// is not to be stored.
    pub(crate) fn of(c: Cacheability, cfg: &CacheConfig) -> Option<Self> {
        let cap = |d: Duration| d.min(cfg.max_ttl);
        let l = match c {
            Cacheability::Store(f) => Lifetimes {
                fresh: cap(f.ttl.unwrap_or(cfg.default_ttl)),
                swr: cap(f
                    .stale_while_revalidate
                    .unwrap_or(cfg.stale_while_revalidate)),
                sie: cap(f.stale_if_error.unwrap_or(cfg.stale_if_error)),
            },
            Cacheability::Negative => Lifetimes {
                fresh: cfg.negative_ttl,
                ..Lifetimes::default()
            },
            Cacheability::Pass | Cacheability::Error => return None,
        };
        (!l.total().is_zero()).then_some(l)
    }

    /// From storing to the end of the last window.
    pub(crate) fn total(&self) -> Duration {
        self.fresh + self.swr.max(self.sie)
    }
}

/// Where an entry stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serve it; `early` asks for an XFetch refresh.
    Fresh { early: bool },
    /// Serve it and refresh it in the background.
    Revalidate,
    /// Do not serve it, except in place of a failure (`usable_on_error`).
    Expired { usable_on_error: bool },
}

/// One stored value.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) stored_at: Instant,
    pub(crate) life: Lifetimes,
    /// How long the inner service took to produce it (XFetch's delta).
    pub(crate) delta: Duration,
    pub(crate) weight: u32,
    /// How long L2 keeps it: to the end of its last window.
    pub(crate) keep_for: Duration,
    /// Set by the one request that starts a background refresh of this entry.
    refreshing: AtomicBool,
    /// Last read, in milliseconds since the cache's base instant (time-to-idle).
    last_read_ms: AtomicU64,
}

impl<V> Entry<V> {
    pub(crate) fn new(
        value: V,
        stored_at: Instant,
        life: Lifetimes,
        delta: Duration,
        weight: u32,
        now_ms: u64,
        keep_for: Duration,
    ) -> Self {
        Self {
            value,
            stored_at,
            life,
            delta,
            weight,
            keep_for,
            refreshing: AtomicBool::new(false),
            last_read_ms: AtomicU64::new(now_ms),
        }
    }

    pub(crate) fn fresh_until(&self) -> Instant {
        self.stored_at + self.life.fresh
    }

    /// Where the entry stands at `now`; `u` in (0, 1] is XFetch's uniform draw.
    pub(crate) fn phase(&self, now: Instant, beta: f64, u: impl FnOnce() -> f64) -> Phase {
        let fresh_until = self.fresh_until();
        if now < fresh_until {
            let early = beta > 0.0 && !self.delta.is_zero() && {
                let gap = self.delta.as_secs_f64() * beta * -u().ln();
                now + Duration::from_secs_f64(gap.min(1e9)) >= fresh_until
            };
            return Phase::Fresh { early };
        }
        let age = now - fresh_until;
        if age < self.life.swr {
            Phase::Revalidate
        } else {
            Phase::Expired {
                usable_on_error: age < self.life.sie,
            }
        }
    }

    /// Whether `now` is still inside the stale-if-error window.
    pub(crate) fn usable_on_error(&self, now: Instant) -> bool {
        now < self.fresh_until() + self.life.sie
    }

    /// True for exactly one caller per entry: the one that refreshes it.
    pub(crate) fn claim_refresh(&self) -> bool {
        // Relaxed: the flag only elects one refresher; the entry's data is immutable and was
        // published by the cache that handed out this `Arc`.
        !self.refreshing.swap(true, Ordering::Relaxed)
    }

    /// Whether it was read within `tti` of `now_ms`; records the read.
    pub(crate) fn touch(&self, now_ms: u64, tti: Option<Duration>) -> bool {
        // Relaxed: an approximate idle clock; a lost update only shortens the idle time by a ms.
        let last = self.last_read_ms.load(Ordering::Relaxed);
        if let Some(tti) = tti
            && now_ms.saturating_sub(last) > tti.as_millis() as u64
        {
            return false;
        }
        if last != now_ms {
            // Relaxed: see above; written at most once per millisecond so hot keys stay cheap.
            self.last_read_ms.store(now_ms, Ordering::Relaxed);
        }
        true
    }
}

/// A seeded generator shared by every thread: splitmix64 over an atomic counter.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        // Relaxed: only needs distinct counter values; nothing is published through it.
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub(crate) fn unit(&self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fresh: u64, swr: u64, sie: u64, delta_ms: u64) -> (Entry<u8>, Instant) {
        let t0 = Instant::now();
        let life = Lifetimes {
            fresh: Duration::from_secs(fresh),
            swr: Duration::from_secs(swr),
            sie: Duration::from_secs(sie),
        };
        (
            Entry::new(
                0,
                t0,
                life,
                Duration::from_millis(delta_ms),
                1,
                0,
                life.total(),
            ),
            t0,
        )
    }

    #[test]
    fn phases_follow_the_windows() {
        let (e, t0) = entry(10, 5, 20, 0);
        let s = Duration::from_secs;
        assert_eq!(
            e.phase(t0 + s(9), 1.0, || 0.5),
            Phase::Fresh { early: false }
        );
        assert_eq!(e.phase(t0 + s(10), 1.0, || 0.5), Phase::Revalidate);
        assert_eq!(
            e.phase(t0 + s(16), 1.0, || 0.5),
            Phase::Expired {
                usable_on_error: true
            }
        );
        assert_eq!(
            e.phase(t0 + s(30), 1.0, || 0.5),
            Phase::Expired {
                usable_on_error: false
            }
        );
        assert!(e.claim_refresh());
        assert!(!e.claim_refresh());
    }

    #[test]
    fn xfetch_refreshes_early_only_near_expiry() {
        let (e, t0) = entry(10, 0, 0, 1000);
        // gap = 1 s * -ln(u): with u = e^-2 the gap is 2 s.
        let u = (-2.0f64).exp();
        assert_eq!(
            e.phase(t0 + Duration::from_secs(7), 1.0, || u),
            Phase::Fresh { early: false }
        );
        assert_eq!(
            e.phase(t0 + Duration::from_millis(8100), 1.0, || u),
            Phase::Fresh { early: true }
        );
        assert_eq!(
            e.phase(t0 + Duration::from_secs(9), 0.0, || u),
            Phase::Fresh { early: false }
        );
    }

    #[test]
    fn lifetimes_apply_defaults_and_caps() {
        let cfg = CacheConfig {
            max_ttl: Duration::from_secs(100),
            ..CacheConfig::default()
        };
        let l = Lifetimes::of(
            Cacheability::Store(crate::policy::Freshness {
                ttl: Some(Duration::from_secs(1000)),
                ..Default::default()
            }),
            &cfg,
        )
        .unwrap();
        assert_eq!(l.fresh, Duration::from_secs(100));
        assert_eq!(
            Lifetimes::of(Cacheability::Negative, &cfg).unwrap().fresh,
            cfg.negative_ttl
        );
        assert_eq!(Lifetimes::of(Cacheability::Pass, &cfg), None);
        let no_neg = CacheConfig {
            negative_ttl: Duration::ZERO,
            ..cfg
        };
        assert_eq!(Lifetimes::of(Cacheability::Negative, &no_neg), None);
    }

    #[test]
    fn rng_is_uniform_enough_and_seeded() {
        let (a, b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<f64> = (0..1000).map(|_| a.unit()).collect();
        assert!(xs.iter().all(|&x| x > 0.0 && x <= 1.0));
        assert!(
            xs.iter()
                .zip((0..1000).map(|_| b.unit()))
                .all(|(x, y)| *x == y)
        );
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
