//! Where a balancer finds a request's hash key, for consistent hashing with bounded load (see
//! [`Balance::hash_by`](crate::Balance::hash_by)).
//!
//! A [`Balance`](crate::Balance) reads no key by default ([`NoKey`]): every request goes to the
//! power-of-two-choices pick. [`hash_by`](crate::Balance::hash_by) takes a closure
//! ([`KeyFn`]); [`hash_with`](crate::Balance::hash_with) an `Option` of any [`RequestKey`],
//! such as [`HttpKey`](crate::HttpKey) (feature `http`), `None` meaning no key.

use std::hash::Hasher;

/// Finds the hash key of a request of type `R`, if it has one.
pub trait RequestKey<R> {
    /// The request's key, or `None` to pick as for any request (power of two choices). Keys
    /// need not be well spread: the balancer mixes them before placing them on the ring.
    fn key(&self, req: &R) -> Option<u64>;
}

/// Reads no key: every request is picked by power of two choices. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<R> RequestKey<R> for NoKey {
    fn key(&self, _: &R) -> Option<u64> {
        None
    }
}

/// A closure `Fn(&R) -> Option<u64>` as a [`RequestKey`] (made by
/// [`Balance::hash_by`](crate::Balance::hash_by)).
#[derive(Clone, Copy)]
pub struct KeyFn<F>(pub(crate) F);

impl<F> std::fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<R, F: Fn(&R) -> Option<u64>> RequestKey<R> for KeyFn<F> {
    fn key(&self, req: &R) -> Option<u64> {
        (self.0)(req)
    }
}

/// `None` reads no key; `Some` reads what it holds.
impl<R, T: RequestKey<R>> RequestKey<R> for Option<T> {
    fn key(&self, req: &R) -> Option<u64> {
        self.as_ref().and_then(|k| k.key(req))
    }
}

/// A fixed 64-bit hash of `bytes` (FNV-1a, then mixed), the same in every process and run:
/// a key for [`Balance::hash_by`](crate::Balance::hash_by) made from a string or bytes.
///
/// ```
/// assert_eq!(tollgate_balance::hash_bytes(b"user-7"), tollgate_balance::hash_bytes(b"user-7"));
/// assert_ne!(tollgate_balance::hash_bytes(b"user-7"), tollgate_balance::hash_bytes(b"user-8"));
/// ```
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = crate::ring::Fnv::default();
    h.write(bytes);
    h.finish()
}
