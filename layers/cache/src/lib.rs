//! Multi-level read-through caching tower layer: per-core L1, shared L2, optional Redis L3.
//!
//! [`CacheLayer`] puts a cache in front of any service. A [`CachePolicy`] decides what is cached:
//! the key of a request (or `None` to pass it through), whether and how long a response is kept,
//! and how a response becomes a shared value. Look-ups go through three tiers and fill upward:
//!
//! - **L1**: a small table per worker thread (two-way set-associative, frequency-biased), so
//!   hits on many cores write no shared cache line. A hit costs a hash, a clock read and a clone
//!   of the value: no lock, no atomic read-modify-write, no allocation.
//! - **L2**: a shared [`moka`](https://docs.rs/moka) cache bounded by entries or by weight
//!   (bytes), with per-entry lifetimes and time-to-idle.
//! - **L3** (feature `redis`): Redis, shared by every instance of the gateway; see the `redis` module.
//!   Redis down, slow or answering garbage never fails a request.
//!
//! Then the inner service, with:
//!
//! - **single-flight**: concurrent misses for one key make one call; the others wait (at most
//!   `coalesce_timeout`), and if the leader fails or is dropped a waiter takes over;
//! - **freshness per entry** from the policy or the response, **negative caching** with its own
//!   TTL, **stale-while-revalidate** (serve stale, refresh once in the background) and
//!   **stale-if-error** (serve stale when the inner service fails), after
//!   [RFC 5861](https://www.rfc-editor.org/rfc/rfc5861);
//! - **probabilistic early refresh** for hot keys, *XFetch* from Vattani, Chierichetti and
//!   Lowenstein, [*Optimal Probabilistic Cache Stampede Prevention*](https://www.vldb.org/pvldb/vol8/p886-vattani.pdf)
//!   (VLDB 2015), with a seeded generator;
//! - **invalidation** by key through a [`CacheHandle`], reaching other instances through L3's
//!   pub/sub; the handle also reports [`CacheSnapshot`]: hit ratio per tier, coalesced waits, stale
//!   answers, L3 errors.
//!
//! The `http` module's policy (feature `http`) caches `GET`/`HEAD` responses as a shared
//! cache should under [RFC 9111](https://www.rfc-editor.org/rfc/rfc9111): it honours
//! `Cache-Control` (`no-store`, `private`, `max-age`, `s-maxage`, `stale-while-revalidate`,
//! `stale-if-error`) and `Vary`, and hits share the body's `Bytes`.
//!
//! # When to use it, and when not
//!
//! Use it for idempotent reads whose answers may be a little old: lookups, rendered pages,
//! configuration, responses that say they may be cached. Do not use it for requests with side
//! effects, for per-user answers unless the key includes the user, or where every answer must be
//! current (it serves values up to their TTL, and stale ones within the windows you allow).
//! Freshness is decided on [`tokio::time::Instant`], so paused-time tests and simulations are
//! deterministic; memory reclamation inside moka runs on its own clock.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_cache::{CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! // Cache answers by user id for 30 s; empty answers ("no such user") for the negative TTL.
//! let policy = FnPolicy::new(
//!     |id: &u64| Some(*id),
//!     |name: &String| {
//!         if name.is_empty() { Cacheability::Negative } else { Cacheability::Store(Freshness::ttl(Duration::from_secs(30))) }
//!     },
//! );
//! let config = CacheConfig { stale_if_error: Duration::from_secs(300), ..CacheConfig::default() };
//! let cache = CacheLayer::new(config, policy)?;
//! let handle = cache.handle();
//!
//! let users = ServiceBuilder::new()
//!     .layer(cache) // in front of the slow lookup
//!     .service_fn(|id: u64| async move { Ok::<_, tollgate_core::BoxError>(format!("user {id}")) });
//!
//! assert_eq!(users.clone().oneshot(7).await?, "user 7"); // a miss: asks the service
//! assert_eq!(users.clone().oneshot(7).await?, "user 7"); // a hit
//! assert_eq!(handle.stats().hit_ratio(), 0.5);
//! handle.invalidate(&7); // the next request for 7 asks the service again
//! # Ok(())
//! # }
//! ```
//!
//! With Redis, build the layer with `CacheLayer::with_redis` (feature `redis`) inside a tokio runtime; see
//! `examples/cache.rs` (`cargo run -p tollgate-cache --features redis --example cache`).
//!
//! With feature `serde`, [`CacheConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache_control;
mod config;
mod entry;
mod flight;
pub mod future;
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod l1;
mod layer;
mod policy;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod service;
mod stats;
mod tiers;

pub use config::CacheConfig;
pub use layer::{CacheHandle, CacheLayer};
pub use policy::{CachePolicy, CachePolicyFor, Cacheability, FnPolicy, Freshness};
pub use service::Cache;
pub use stats::CacheSnapshot;

/// The old name of [`CacheSnapshot`].
pub type CacheStats = CacheSnapshot;
