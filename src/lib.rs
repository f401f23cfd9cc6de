//! # tollgate
//!
//! Composable [tower](https://docs.rs/tower) layers that keep services alive under load and
//! failure. Each layer is its own crate, re-exported here behind a feature of the same name:
//!
//! | feature | module | what it does |
//! |---|---|---|
//! | `breaker` | `breaker` | circuit breaking over count and time windows, half-open probes, per-key breakers |
//! | `pool` | `pool` | a concurrency limit learned from latency and failures (AIMD, Vegas, Gradient2) |
//! | `batch` | `batch` | single requests become one batch call, each caller gets its own result |
//! | `admission` | `admission` | priority admission: highest first, lowest shed first, deadlines, rate limits |
//! | `cache` | `cache` | read-through caching over a per-core L1, a shared L2 and an optional Redis L3 |
//! | `balance` | `balance` | power-of-two-choices balancing over peak-EWMA latency, ejection, health checks |
//! | `retry` | `retry` | retries within a budget shared by every clone, backoff, pushback, hedging after a learned p95 |
//!
//! Default features are empty; `full` enables every layer. [`core`] (always present) holds what
//! the layers share: failure classification, errors and test probes.
//!
//! Feature `serde` derives `Serialize` and `Deserialize` on the chosen layers' configuration
//! types, so a service reads them from its own config file: durations are written `"250ms"`,
//! `"5s"`, `"1m"`, a field left out keeps its default, and an unknown field is refused (the
//! reference gateway's `[clusters.breaker]`, `[clusters.pool]` and `[clusters.balance]` sections
//! are these types). With `breaker` and `serde`:
//!
//! ```toml
//! minimum_calls = 20
//! failure_rate_threshold = 0.5
//! wait_in_open = "5s"
//! sliding_window = { type = "time", length = "30s", buckets = 10 }
//! ```
//!
//! The reference gateway (the `tollgate` binary) is its own crate, `tollgate-gateway`: none of
//! its dependencies (hyper, rustls, clap, toml, ...) reach this one.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tollgate_core as core;

/// Circuit breaking: see the `tollgate-breaker` crate.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub use tollgate_breaker as breaker;

/// Adaptive concurrency limits: see the `tollgate-pool` crate.
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
pub use tollgate_pool as pool;

/// Request batching: see the `tollgate-batch` crate.
#[cfg(feature = "batch")]
#[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
pub use tollgate_batch as batch;

/// Priority admission: see the `tollgate-admission` crate.
#[cfg(feature = "admission")]
#[cfg_attr(docsrs, doc(cfg(feature = "admission")))]
pub use tollgate_admission as admission;

/// Multi-level caching: see the `tollgate-cache` crate.
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use tollgate_cache as cache;

/// Latency-aware balancing: see the `tollgate-balance` crate.
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use tollgate_balance as balance;

/// Budgeted retries and hedging: see the `tollgate-retry` crate.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub use tollgate_retry as retry;

pub mod ext;
pub use ext::ServiceBuilderExt;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
