//! Putting a request in a class: the [`Prioritize`] trait and what it returns, a [`Ticket`].

use crate::ratelimit::RateLimitState;
use std::fmt;
use tokio::time::Instant;

/// A rate-limit key (a tenant, an API key, a client address), kept as a 64-bit hash.
///
/// [`Key::from_bytes`] (and `Key::from(&str)`) use FNV-1a, which is stable across builds and machines, so
/// several gateway instances sharing a quota in Redis agree on a key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u64);

impl Key {
    /// The key of some bytes (FNV-1a 64).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Key(h)
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the layer needs to know about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The class index, 0 being the highest priority. An index past the last class counts as
    /// the last (lowest) class.
    pub class: usize,
    /// When the answer stops being useful. A request that cannot finish by then is rejected
    /// before it takes capacity. `None`: no deadline.
    pub deadline: Option<Instant>,
    /// The key whose rate limit the request spends. `None`: not rate limited.
    pub key: Option<Key>,
}

impl Ticket {
    /// A ticket for `class`, without deadline or key.
    pub fn new(class: usize) -> Self {
        Self {
            class,
            deadline: None,
            key: None,
        }
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the rate-limit key.
    pub fn with_key(mut self, key: impl Into<Key>) -> Self {
        self.key = Some(key.into());
        self
    }
}

impl From<usize> for Ticket {
    fn from(class: usize) -> Self {
        Ticket::new(class)
    }
}

/// Decides a request's [`Ticket`].
///
/// Implemented for every `Fn(&R) -> T` where `T: Into<Ticket>`, so a closure returning a class
/// index (`|req: &Req| req.priority as usize`) is a prioritizer. With the `http` feature,
/// `http::HttpPrioritizer` reads headers and extensions.
pub trait Prioritize<R> {
    /// The request's ticket. Called once per request, on the request path: keep it cheap.
    fn prioritize(&self, req: &R) -> Ticket;

    /// Called once a request with a rate-limit key passed its rate limit (local or shared),
    /// before it is admitted or queued, with what its key has left: a way to hand the count
    /// to the response (the `RateLimit` field of an HTTP answer) without a lock or an
    /// allocation. Does nothing by default.
    fn rate_checked(_req: &mut R, _state: RateLimitState)
    where
        Self: Sized,
    {
    }
}

impl<R, F, T> Prioritize<R> for F
where
    F: Fn(&R) -> T,
    T: Into<Ticket>,
{
    #[inline]
    fn prioritize(&self, req: &R) -> Ticket {
        self(req).into()
    }
}

/// Puts every request in one class. The layer's default prioritizer (class 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct OneClass(pub usize);

impl<R> Prioritize<R> for OneClass {
    #[inline]
    fn prioritize(&self, _: &R) -> Ticket {
        Ticket::new(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable() {
        // FNV-1a test vectors.
        assert_eq!(Key::from(""), Key(0xcbf2_9ce4_8422_2325));
        assert_eq!(Key::from("a"), Key(0xaf63_dc4c_8601_ec8c));
        assert_eq!(Key(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn closures_and_one_class_prioritize() {
        let f = |r: &u32| *r as usize;
        assert_eq!(f.prioritize(&3).class, 3);
        let g = |_: &u32| Ticket::new(1).with_key("t");
        assert_eq!(g.prioritize(&0).key, Some(Key::from("t")));
        assert_eq!(Prioritize::<u32>::prioritize(&OneClass(2), &0).class, 2);
    }
}
