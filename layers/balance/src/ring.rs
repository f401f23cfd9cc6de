//! The consistent-hash ring and the bounded-load walk over it.
//!
//! Each endpoint owns `vnodes` points (scaled by its weight) on a ring of `u64`s, placed by the
//! hash of its key, so the ring depends only on which endpoints are in the set: adding or
//! removing one of N moves about 1/N of the keys. The ring is built when the set changes and
//! published with it in the same snapshot ([`crate::fleet`]), so a request's lookup is a binary
//! search over a sorted slice: no lock, no allocation.
//!
//! Bounded load ([Mirrokni, Thorup and Zadimoghaddam, 2018](https://arxiv.org/abs/1608.01350)):
//! walking clockwise from the key's point, the first admitted endpoint whose in-flight load,
//! with this request, stays within `ceil(load_factor × total in flight × weight ÷ total
//! weight)` takes the request (with equal weights: `ceil(c × (in flight + 1) ÷ endpoints)`).
//! Since `load_factor > 1`, some endpoint is always under its bound.

use crate::endpoint::Endpoint;
use crate::sync::Arc;
use std::hash::{Hash, Hasher};

/// The finalizer of splitmix64: spreads nearby inputs over the whole `u64` range.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a fixed hash (no random keys, the same across runs and Rust versions), so that
/// every process places the same endpoints and keys at the same points.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// The ring position of an endpoint key.
pub(crate) fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut h = Fnv::default();
    key.hash(&mut h);
    h.finish()
}

/// Points of the ring, sorted, each with the index of its endpoint in the snapshot.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Box<[(u64, u32)]>,
}

impl Ring {
    /// A ring over `endpoints`: `vnodes` points for an endpoint of average weight, more or
    /// fewer in proportion to its weight (at least 1, at most 16 × `vnodes`).
    pub(crate) fn build<K, S>(
        endpoints: &[Arc<Endpoint<K, S>>],
        key_hash: fn(&K) -> u64,
        vnodes: u32,
    ) -> Self {
        if endpoints.is_empty() {
            return Self::default();
        }
        let weights: f64 = endpoints.iter().map(|e| e.core.weight()).sum();
        let mean = weights / endpoints.len() as f64;
        let most = u64::from(vnodes) * 16;
        let mut points = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let share = f64::from(vnodes) * ep.core.weight() / mean;
            let count = (share.round() as u64).clamp(1, most);
            let base = key_hash(&ep.key);
            for r in 1..=count {
                let point = mix(base.wrapping_add(r.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Self {
            points: points.into_boxed_slice(),
        }
    }

    /// The endpoint indices met walking clockwise from `key`'s point, each run of points of the
    /// same endpoint given once; one lap at most.
    pub(crate) fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let h = mix(key);
        let n = self.points.len();
        let start = self.points.partition_point(|p| p.0 < h);
        let mut last = u32::MAX;
        (0..n).filter_map(move |s| {
            let idx = self.points[(start + s) % n].1;
            (idx != last).then(|| {
                last = idx;
                idx as usize
            })
        })
    }

    /// Whether the ring has no point.
    pub(crate) fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// The endpoints a request with `key` may go to, in the order it should try them: clockwise
/// from its point, admitted at `now`, and under their load bound with this request on them.
/// `own` is the id of the endpoint holding the request's reservation (already counted in its
/// in-flight load and in the total).
pub(crate) fn bounded<'a, K, S>(
    endpoints: &'a [Arc<Endpoint<K, S>>],
    ring: &'a Ring,
    key: u64,
    own: u64,
    now: u64,
    load_factor: f64,
) -> impl Iterator<Item = &'a Arc<Endpoint<K, S>>> + 'a {
    let (mut total, mut weights, mut own_counted) = (0usize, 0.0f64, false);
    for ep in endpoints.iter().filter(|e| e.core.admitted(now)) {
        total += ep.core.in_flight();
        weights += ep.core.weight();
        own_counted |= ep.core.id == own;
    }
    if !own_counted {
        // The reservation sits on an endpoint out of rotation (a panic-mode pick) or gone.
        total += 1;
    }
    let per_weight = load_factor * total as f64 / weights;
    ring.walk(key)
        .map(move |i| &endpoints[i])
        .filter(move |ep| {
            let core = &ep.core;
            if weights <= 0.0 || !core.admitted(now) {
                return false;
            }
            // A hair below the product so that an exact bound is not rounded up by float error.
            let bound = (per_weight * core.weight() - 1e-9).ceil().max(1.0) as usize;
            let with_this = core.in_flight() + usize::from(core.id != own);
            with_this <= bound
        })
}
