//! Which attempt of a request this is, and which endpoints earlier attempts went to.
//!
//! A retry layer sends one request several times; a balancer below it should not pick the
//! endpoint that just failed it. The retry layer marks every attempt with an [`Attempt`]; all
//! attempts of one request share one [`TriedEndpoints`] set, so an endpoint recorded by the
//! balancer for the first attempt is visible when it picks for the second:
//!
//! ```
//! use tollgate_core::attempt::Attempt;
//!
//! // The retry layer marks the first attempt...
//! let first = Attempt::first();
//! // ...the balancer picks endpoint 7 for it and records it...
//! first.tried().record(7);
//! // ...and the retry's marker shares the set, so the balancer skips 7 if it can.
//! let second = first.next(false);
//! assert_eq!(second.number(), 1);
//! assert!(second.tried().contains(7));
//! ```
//!
//! For `http::Request` the marker lives in the extensions (feature `http`); another request type
//! implements [`Attempts`] itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most endpoints a [`TriedEndpoints`] remembers; later ones are not recorded.
pub const MAX_TRIED: usize = 8;

/// One attempt of a request: its number (0 for the first), whether it is a hedge, and the
/// endpoints the request's attempts have gone to so far.
#[derive(Debug, Clone)]
pub struct Attempt {
    number: u32,
    hedge: bool,
    tried: TriedEndpoints,
}

impl Attempt {
    /// The first attempt of a request, with an empty [`TriedEndpoints`] set (one allocation).
    pub fn first() -> Self {
        Self {
            number: 0,
            hedge: false,
            tried: TriedEndpoints::new(),
        }
    }

    /// The attempt after this one (a hedge when `hedge`), sharing its tried set.
    pub fn next(&self, hedge: bool) -> Self {
        Self {
            number: self.number.saturating_add(1),
            hedge,
            tried: self.tried.clone(),
        }
    }

    /// 0 for the first attempt, 1 for the second, and so on.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether this attempt is a hedge sent while an earlier one is still in flight.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The endpoints this request's attempts went to, shared by all of them.
    pub fn tried(&self) -> &TriedEndpoints {
        &self.tried
    }
}

/// The endpoints the attempts of one request went to, as keys the balancer chooses (a hash of
/// the endpoint's address, an index). Clones share the set. Lock-free; remembers at most
/// [`MAX_TRIED`] endpoints.
#[derive(Clone, Default)]
pub struct TriedEndpoints(Arc<Tried>);

#[derive(Default)]
struct Tried {
    /// Slots handed out (may run past `MAX_TRIED` for a moment while a full set refuses).
    len: AtomicUsize,
    /// Bit `i` is set once `keys[i]` holds its key.
    written: AtomicUsize,
    keys: [AtomicU64; MAX_TRIED],
}

impl TriedEndpoints {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that an attempt went to `endpoint`. Returns `false` when the set was full.
    pub fn record(&self, endpoint: u64) -> bool {
        if self.contains(endpoint) {
            return true;
        }
        // Relaxed: only hands out distinct slots; the key is published through `written`.
        let slot = self.0.len.fetch_add(1, Ordering::Relaxed);
        if slot >= MAX_TRIED {
            self.0.len.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        // Relaxed: published by the Release below.
        self.0.keys[slot].store(endpoint, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `keys`; whoever sees the bit sees the key.
        self.0.written.fetch_or(1 << slot, Ordering::Release);
        true
    }

    /// Whether an attempt went to `endpoint`.
    pub fn contains(&self, endpoint: u64) -> bool {
        self.keys().any(|k| k == endpoint)
    }

    /// How many endpoints are recorded.
    pub fn len(&self) -> usize {
        self.keys().count()
    }

    /// Whether no endpoint is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The recorded endpoints, in the order they were recorded.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        // Acquire: pairs with the Release in `record`.
        let written = self.0.written.load(Ordering::Acquire);
        self.0
            .keys
            .iter()
            .enumerate()
            .filter(move |(i, _)| written & (1 << i) != 0)
            .map(|(_, k)| k.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for TriedEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys()).finish()
    }
}

/// A request that can carry an [`Attempt`] marker.
pub trait Attempts {
    /// The marker, if a retry layer set one.
    fn attempt(&self) -> Option<&Attempt>;
    /// Sets (replaces) the marker.
    fn set_attempt(&mut self, attempt: Attempt);
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Attempts for http::Request<B> {
    fn attempt(&self) -> Option<&Attempt> {
        self.extensions().get::<Attempt>()
    }

    fn set_attempt(&mut self, attempt: Attempt) {
        self.extensions_mut().insert(attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_share_the_tried_set() {
        let first = Attempt::first();
        assert_eq!(first.number(), 0);
        assert!(!first.is_hedge());
        assert!(first.tried().is_empty());
        assert!(first.tried().record(0));
        assert!(first.tried().record(u64::MAX));
        let hedge = first.next(true);
        assert_eq!(hedge.number(), 1);
        assert!(hedge.is_hedge());
        assert!(hedge.tried().contains(0) && hedge.tried().contains(u64::MAX));
        assert!(!hedge.tried().contains(1));
        assert_eq!(hedge.tried().keys().collect::<Vec<_>>(), [0, u64::MAX]);
    }

    #[test]
    fn the_set_is_bounded_and_ignores_repeats() {
        let tried = TriedEndpoints::new();
        for k in 0..MAX_TRIED as u64 {
            assert!(tried.record(k));
            assert!(tried.record(k), "a repeat is already there");
        }
        assert_eq!(tried.len(), MAX_TRIED);
        assert!(!tried.record(100));
        assert!(!tried.contains(100));
        assert_eq!(tried.len(), MAX_TRIED);
    }
}
