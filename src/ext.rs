//! [`ServiceBuilderExt`]: the tollgate layers as `tower::ServiceBuilder` methods.
//!
//! ```
//! # #[cfg(all(feature = "admission", feature = "breaker"))] {
//! use tollgate::ServiceBuilderExt;
//! use tollgate::admission::{AdmissionConfig, AdmissionLayer};
//! use tollgate::breaker::{BreakerConfig, BreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let admission = AdmissionLayer::new(AdmissionConfig::default()).unwrap();
//! let breaker = BreakerLayer::new(BreakerConfig::default()).unwrap();
//! let stack = ServiceBuilder::new()
//!     .admission(admission) // shed low priority before any work
//!     .breaker(breaker); // fail fast on a sick upstream
//! let _svc = stack.service(tower::service_fn(|req: u32| async move {
//!     Ok::<_, std::io::Error>(req)
//! }));
//! # }
//! ```
//!
//! Each method is `.layer(..)` with a name, listed outermost first, and takes a layer you built
//! (so you can take its handle first: `layer.handle()` for snapshots, forcing a breaker open,
//! invalidating the cache).
//!
//! # Shared state, by design
//!
//! A breaker, pool, admission or cache layer holds its state behind an `Arc`: every service it
//! builds, and every clone of those, uses **the same** breaker, limit, queues or cache. Applying
//! one layer value (or clones of it) to many routes therefore shares one state across them: one
//! breaker trips for every route it wraps, one admission limit counts the requests of all of
//! them. This is what you want in front of one shared upstream or one machine's capacity, and it
//! is what per-`layer()` state in some other libraries gets wrong (a breaker created per route
//! clone never sees enough calls to trip).
//!
//! When you want **per-route state** instead, build one layer per route:
//!
//! ```
//! # #[cfg(feature = "breaker")] {
//! use tollgate::breaker::{BreakerConfig, BreakerLayer, KeyLimits, KeyedBreakerLayer};
//!
//! let config = BreakerConfig::default();
//! // One breaker per route: two layers, two states.
//! let users = BreakerLayer::new(BreakerConfig { name: "users".into(), ..config.clone() }).unwrap();
//! let orders = BreakerLayer::new(BreakerConfig { name: "orders".into(), ..config.clone() }).unwrap();
//! // Or one layer keeping one breaker per key (say the path), bounded in number.
//! let per_path = KeyedBreakerLayer::new(config, KeyLimits::default(), |req: &http::Request<()>| {
//!     req.uri().path().to_owned()
//! })
//! .unwrap();
//! # let _ = (users, orders, per_path);
//! # }
//! ```
//!
//! Two layers are different by nature:
//!
//! - **batch**: each `layer()` call wraps a different batch backend, so it gets its own queue
//!   and flusher (the config and hooks are shared, not the queue).
//! - **balance**: a balancer is a service over many endpoints, not a wrapper. `.balance(layer)`
//!   makes the inner service endpoint `0` of a **new** balancer per `layer()` call; add more
//!   endpoints through `Balance::handle`. To stack layers
//!   over a balancer you built from an endpoint list, end the builder with it:
//!   `ServiceBuilder::new().breaker(b).service(balance)`, and share the balancer itself (its
//!   clones share the endpoint set).

use tower::ServiceBuilder;
#[cfg(any(
    feature = "breaker",
    feature = "pool",
    feature = "admission",
    feature = "batch",
    feature = "cache",
    feature = "balance"
))]
use tower::layer::util::Stack;

mod sealed {
    /// Only `tower::ServiceBuilder` gets the extension methods.
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}

    /// Only the tollgate layers are accepted by the methods.
    #[cfg(any(
        feature = "breaker",
        feature = "pool",
        feature = "admission",
        feature = "batch",
        feature = "cache",
        feature = "balance",
        feature = "retry"
    ))]
    pub trait SealedLayer {}
}

/// Layers accepted by [`ServiceBuilderExt::breaker`]: `BreakerLayer` and `KeyedBreakerLayer`.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub trait BreakerKind: sealed::SealedLayer {}

#[cfg(feature = "breaker")]
mod breaker_kinds {
    use super::{BreakerKind, sealed::SealedLayer};
    use tollgate_breaker::{BreakerLayer, KeyedBreakerLayer};

    impl<C> SealedLayer for BreakerLayer<C> {}
    impl<C> BreakerKind for BreakerLayer<C> {}
    impl<K, F, C> SealedLayer for KeyedBreakerLayer<K, F, C> {}
    impl<K, F, C> BreakerKind for KeyedBreakerLayer<K, F, C> {}
}

/// Layers accepted by [`ServiceBuilderExt::pool`]: `PoolSizerLayer` and its deferred form.
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
pub trait PoolKind: sealed::SealedLayer {}

#[cfg(feature = "pool")]
mod pool_kinds {
    use super::{PoolKind, sealed::SealedLayer};
    use tollgate_pool::{DeferredPoolSizerLayer, PoolSizerLayer};

    impl<C> SealedLayer for PoolSizerLayer<C> {}
    impl<C> PoolKind for PoolSizerLayer<C> {}
    impl<C> SealedLayer for DeferredPoolSizerLayer<C> {}
    impl<C> PoolKind for DeferredPoolSizerLayer<C> {}
}

/// Layers accepted by [`ServiceBuilderExt::admission`]: `AdmissionLayer`.
#[cfg(feature = "admission")]
#[cfg_attr(docsrs, doc(cfg(feature = "admission")))]
pub trait AdmissionKind: sealed::SealedLayer {}

#[cfg(feature = "admission")]
mod admission_kinds {
    use super::{AdmissionKind, sealed::SealedLayer};
    use tollgate_admission::AdmissionLayer;

    impl<P> SealedLayer for AdmissionLayer<P> {}
    impl<P> AdmissionKind for AdmissionLayer<P> {}
}

/// Layers accepted by [`ServiceBuilderExt::batch`]: `BatchLayer`.
#[cfg(feature = "batch")]
#[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
pub trait BatchKind: sealed::SealedLayer {}

#[cfg(feature = "batch")]
mod batch_kinds {
    use super::{BatchKind, sealed::SealedLayer};
    use tollgate_batch::BatchLayer;

    impl<Req, T, K> SealedLayer for BatchLayer<Req, T, K> {}
    impl<Req, T, K> BatchKind for BatchLayer<Req, T, K> {}
}

/// Layers accepted by [`ServiceBuilderExt::cache`]: `CacheLayer`.
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub trait CacheKind: sealed::SealedLayer {}

#[cfg(feature = "cache")]
mod cache_kinds {
    use super::{CacheKind, sealed::SealedLayer};
    use tollgate_cache::{CacheLayer, CachePolicy};

    impl<P: CachePolicy> SealedLayer for CacheLayer<P> {}
    impl<P: CachePolicy> CacheKind for CacheLayer<P> {}
}

/// Layers accepted by [`ServiceBuilderExt::balance`]: `BalanceLayer`.
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub trait BalanceKind: sealed::SealedLayer {}

#[cfg(feature = "balance")]
mod balance_kinds {
    use super::{BalanceKind, sealed::SealedLayer};
    use tollgate_balance::BalanceLayer;

    impl SealedLayer for BalanceLayer {}
    impl BalanceKind for BalanceLayer {}
}

/// Layers accepted by [`ServiceBuilderExt::retry`]: `RetryLayer` with any policy.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub trait RetryKind: sealed::SealedLayer {}

#[cfg(feature = "retry")]
mod retry_kinds {
    use super::{RetryKind, sealed::SealedLayer};
    use tollgate_retry::RetryLayer;

    impl<P> SealedLayer for RetryLayer<P> {}
    impl<P> RetryKind for RetryLayer<P> {}
}

/// The tollgate layers as [`ServiceBuilder`] methods, each behind the feature of its layer.
///
/// Sealed: implemented for `tower::ServiceBuilder` only. Each method is `self.layer(layer)`;
/// the layer's state is shared by every service it builds (see the [module docs](self) for
/// per-route state).
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a circuit breaker (`BreakerLayer` or `KeyedBreakerLayer`): fail fast with
    /// `Open` while the service behind keeps failing.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn breaker<T: BreakerKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Adds an adaptive concurrency limit (`PoolSizerLayer`, or its `deferred()` form for
    /// servers that do not wait on `poll_ready`): reject or wait with `Overloaded` at the limit.
    #[cfg(feature = "pool")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
    fn pool<T: PoolKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Adds priority admission (`AdmissionLayer`): highest class first, lowest shed first,
    /// deadlines and rate limits, rejecting with `Rejected`.
    #[cfg(feature = "admission")]
    #[cfg_attr(docsrs, doc(cfg(feature = "admission")))]
    fn admission<T: AdmissionKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Adds request batching (`BatchLayer`): the inner service takes `Vec<Req>`; each
    /// `layer()` call gets its own queue (it wraps its own backend).
    #[cfg(feature = "batch")]
    #[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
    fn batch<T: BatchKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Adds a read-through cache (`CacheLayer`) shared by every service it builds.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    fn cache<T: CacheKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Makes the inner service endpoint `0` of a new balancer (`BalanceLayer`), to which more
    /// endpoints are added through its handle. Unlike the other layers, each `layer()` call
    /// builds a new balancer; to stack layers over a balancer built from an endpoint list, pass
    /// it to [`ServiceBuilder::service`] instead.
    #[cfg(feature = "balance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
    fn balance<T: BalanceKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;

    /// Adds budgeted retries and hedging (`RetryLayer`): outside the balancer, so that each
    /// attempt is balanced (and counted by breakers and pools) like a first one.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn retry<T: RetryKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "breaker")]
    fn breaker<T: BreakerKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "pool")]
    fn pool<T: PoolKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "admission")]
    fn admission<T: AdmissionKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "batch")]
    fn batch<T: BatchKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "cache")]
    fn cache<T: CacheKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "balance")]
    fn balance<T: BalanceKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn retry<T: RetryKind>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        self.layer(layer)
    }
}

#[cfg(all(test, feature = "balance", feature = "batch", feature = "breaker"))]
mod tests {
    use super::ServiceBuilderExt;
    use std::convert::Infallible;
    use tollgate_balance::{BalanceConfig, BalanceLayer};
    use tollgate_batch::{BatchConfig, BatchLayer};
    use tollgate_breaker::{BreakerConfig, BreakerLayer, Open};
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn the_methods_stack_their_layers_outermost_first() {
        let breaker = BreakerLayer::new(BreakerConfig::default()).unwrap();
        let handle = breaker.handle();
        let stack = ServiceBuilder::new()
            .breaker(breaker) // outermost
            .balance(BalanceLayer::new(BalanceConfig::default()).unwrap())
            .batch(BatchLayer::new(BatchConfig::default()).unwrap());
        // The batch backend answers a whole batch at once.
        let backend = tower::service_fn(|ids: Vec<u64>| async move {
            Ok::<_, Infallible>(
                ids.into_iter()
                    .map(|id| Ok::<_, Infallible>(id * 2))
                    .collect::<Vec<_>>(),
            )
        });
        let a = stack.service(backend);
        let b = stack.service(backend);
        assert_eq!(a.clone().oneshot(21).await.unwrap(), 42);
        assert_eq!(b.clone().oneshot(4).await.unwrap(), 8);

        // One breaker layer, two services built from it: one state.
        handle.force_open();
        for svc in [a, b] {
            let err = svc.oneshot(1).await.unwrap_err();
            assert!(err.is::<Open>(), "{err}");
        }
    }
}
