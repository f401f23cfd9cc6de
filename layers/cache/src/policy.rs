//! What is cached, under which key, and for how long.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

/// How long a stored response stays usable. `None` fields take the layer's
/// [`CacheConfig`](crate::config::CacheConfig) defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freshness {
    /// How long the response is fresh (served without asking the inner service).
    pub ttl: Option<Duration>,
    /// After it stops being fresh, how long it may still be served while one background
    /// request refreshes it (RFC 5861 `stale-while-revalidate`).
    pub stale_while_revalidate: Option<Duration>,
    /// After it stops being fresh, how long it may be served instead of a failure of the inner
    /// service (RFC 5861 `stale-if-error`).
    pub stale_if_error: Option<Duration>,
}

impl Freshness {
    /// Fresh for `ttl`, other windows from the config.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::default()
        }
    }
}

/// What the policy decides about one response of the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    /// Store it with this freshness.
    Store(Freshness),
    /// A negative answer ("not found"): store it for the config's `negative_ttl`.
    Negative,
    /// Pass it on without storing it.
    Pass,
    /// A failure told by the response (an HTTP 5xx): not stored, and a stale entry still within
    /// its `stale_if_error` window is served instead.
    Error,
}

/// The types a cache stores: its key and its shared value. The request-specific half is
/// [`CachePolicyFor`].
///
/// A hit costs one [`CachePolicyFor::to_response`], so make `Value` cheap to clone (a `u64`,
/// an `Arc`, a `Bytes`).
pub trait CachePolicy: Send + Sync + 'static {
    /// The cache key.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// What is stored and shared between callers.
    type Value: Clone + Send + Sync + 'static;

    /// Whether [`weight`](CachePolicy::weight) is meaningful. When false (the default) L2
    /// counts entries and skips moka's weighted admission, which keeps more of the hottest
    /// keys for equal-sized entries.
    const WEIGHTED: bool = false;

    /// The weight of an entry against [`CacheConfig::l2_capacity`](crate::config::CacheConfig::l2_capacity)
    /// (bytes, say), used when [`WEIGHTED`](CachePolicy::WEIGHTED) is true. Default 1.
    fn weight(&self, _key: &Self::Key, _value: &Self::Value) -> u32 {
        1
    }
}

/// Decides what is cached for one request and response type: the key of a request, whether and
/// how long a response is kept, and how a response becomes a shareable value and back.
pub trait CachePolicyFor<Req, Res>: CachePolicy {
    /// The key of `req`, or `None` to pass it to the inner service untouched.
    fn key(&self, req: &Req) -> Option<Self::Key>;

    /// Whether and how long `res` may be kept.
    fn classify(&self, res: &Res) -> Cacheability;

    /// Turns a response into the stored value.
    fn to_value(&self, res: Res) -> Self::Value;

    /// Rebuilds a response from a stored value (once per hit).
    fn to_response(&self, value: &Self::Value) -> Res;

    /// Rebuilds a response from a value that has been stored for `age` (the HTTP policy adds it
    /// to the `Age` header, RFC 9111 §5.1). Defaults to [`to_response`](Self::to_response).
    fn to_response_aged(&self, value: &Self::Value, age: Duration) -> Res {
        let _ = age;
        self.to_response(value)
    }
}

/// A policy from two closures, for responses that are `Clone`: `key(&req)` and
/// `classify(&res)`.
///
/// ```
/// use std::time::Duration;
/// use tollgate_cache::{Cacheability, FnPolicy, Freshness};
/// let policy = FnPolicy::new(
///     |req: &u64| Some(*req),
///     |res: &String| {
///         if res.is_empty() { Cacheability::Negative } else { Cacheability::Store(Freshness::ttl(Duration::from_secs(30))) }
///     },
/// );
/// # let _ = policy;
/// ```
pub struct FnPolicy<K, V, KF, CF> {
    key: KF,
    classify: CF,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, KF, CF> std::fmt::Debug for FnPolicy<K, V, KF, CF> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnPolicy").finish_non_exhaustive()
    }
}

impl<K, V, KF, CF> FnPolicy<K, V, KF, CF> {
    /// A policy keyed by `key` that stores what `classify` says.
    pub fn new<Req>(key: KF, classify: CF) -> Self
    where
        KF: Fn(&Req) -> Option<K>,
        CF: Fn(&V) -> Cacheability,
    {
        Self {
            key,
            classify,
            _types: PhantomData,
        }
    }
}

impl<K, V, KF, CF> CachePolicy for FnPolicy<K, V, KF, CF>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    KF: Send + Sync + 'static,
    CF: Send + Sync + 'static,
{
    type Key = K;
    type Value = V;
}

impl<Req, K, V, KF, CF> CachePolicyFor<Req, V> for FnPolicy<K, V, KF, CF>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    KF: Fn(&Req) -> Option<K> + Send + Sync + 'static,
    CF: Fn(&V) -> Cacheability + Send + Sync + 'static,
{
    fn key(&self, req: &Req) -> Option<K> {
        (self.key)(req)
    }

    fn classify(&self, res: &V) -> Cacheability {
        (self.classify)(res)
    }

    fn to_value(&self, res: V) -> V {
        res
    }

    fn to_response(&self, value: &V) -> V {
        value.clone()
    }
}
