//! The layer and the handle that observes and invalidates its cache.

use crate::config::CacheConfig;
use crate::policy::CachePolicy;
use crate::service::Cache;
use crate::stats::CacheSnapshot;
use crate::tiers::{LocalTiers, Remote, Tiers};
use std::fmt;
use std::sync::Arc;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Builds [`Cache`] services that all share one set of tiers (L1, L2, optional L3).
pub struct CacheLayer<P: CachePolicy> {
    policy: Arc<P>,
    tiers: Arc<Tiers<P::Key, P::Value>>,
}

impl<P: CachePolicy> fmt::Debug for CacheLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl<P: CachePolicy> Clone for CacheLayer<P> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            tiers: self.tiers.clone(),
        }
    }
}

impl<P: CachePolicy> CacheLayer<P> {
    /// An in-process cache (L1 and L2) deciding with `policy`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(config: CacheConfig, policy: P) -> Result<Self, ConfigError> {
        Self::build(config, policy, None)
    }

    /// A cache with a Redis L3 shared with other instances (see [`crate::redis`]).
    ///
    /// Builds its connections in the background: call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config` or of the tier's config.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis<C>(
        config: CacheConfig,
        policy: P,
        redis: crate::redis::RedisTier<C>,
    ) -> Result<Self, ConfigError>
    where
        C: crate::redis::Codec<P::Key, P::Value>,
    {
        let remote = redis.into_remote()?;
        Self::build(config, policy, Some(remote))
    }

    pub(crate) fn build(
        config: CacheConfig,
        policy: P,
        remote: Option<Arc<dyn Remote<P::Key, P::Value>>>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            policy: Arc::new(policy),
            tiers: Tiers::new(config, P::WEIGHTED, remote),
        })
    }

    /// A handle on the shared tiers: statistics and invalidation.
    pub fn handle(&self) -> CacheHandle<P::Key, P::Value> {
        CacheHandle {
            tiers: self.tiers.clone(),
        }
    }
}

impl<S, P: CachePolicy> Layer<S> for CacheLayer<P> {
    type Service = Cache<S, P>;

    fn layer(&self, inner: S) -> Cache<S, P> {
        Cache::new(inner, self.policy.clone(), self.tiers.clone())
    }
}

/// Observes and invalidates one layer's cache. Cheap to clone.
pub struct CacheHandle<K, V> {
    tiers: Arc<Tiers<K, V>>,
}

impl<K, V> fmt::Debug for CacheHandle<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl<K, V> Clone for CacheHandle<K, V> {
    fn clone(&self) -> Self {
        Self {
            tiers: self.tiers.clone(),
        }
    }
}

impl<K, V> CacheHandle<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The counters so far: hits per tier, coalesced waits, stale served, L3 errors, ...
    pub fn snapshot(&self) -> CacheSnapshot {
        self.tiers.stats()
    }

    /// The same as [`snapshot`](Self::snapshot), its name before every layer's handle had a
    /// `snapshot()`.
    pub fn stats(&self) -> CacheSnapshot {
        self.snapshot()
    }

    /// Drops `key` from L1 and L2 here and, when there is an L3, from Redis and (through
    /// pub/sub) from every other instance sharing it. A fetch already in flight still answers
    /// its callers but does not store its result.
    pub fn invalidate(&self, key: &K) {
        self.tiers.invalidate(key);
    }

    /// Drops every entry from this instance's L1 and L2 (not from L3, and not on other
    /// instances).
    pub fn clear_local(&self) {
        self.tiers.clear_local();
    }

    /// Whether the L3 tier is connected to Redis and subscribed to invalidations (false
    /// without an L3). For health checks and tests; requests never wait for it.
    pub fn l3_connected(&self) -> bool {
        self.tiers.remote_connected()
    }

    /// Entries held in L2 now.
    pub fn l2_entries(&self) -> u64 {
        self.tiers.l2_entries()
    }
}
