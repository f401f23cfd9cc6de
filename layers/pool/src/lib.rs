//! An adaptive concurrency limit: the pool of in-flight requests grows while the backend
//! keeps up and shrinks when it queues or fails.
//!
//! A static limit is either too low (wasting a fast backend) or too high (letting a slow one
//! queue until every request times out). [`PoolSizer`] learns the limit instead, from the
//! round-trip time of each call (call to completion) and from failures, as decided by a
//! tollgate-core [`Classify`](tollgate_core::Classify). Requests whose future is dropped are
//! counted as *cancelled*, never as fast successes.
//!
//! # When to use it, and when not
//!
//! Use it in front of a backend whose capacity you do not know or that changes (autoscaling,
//! noisy neighbours, degraded replicas), so that overload turns into fast rejections or short
//! waits instead of queueing and timeouts. Do not use it where the limit is a hard fact (a
//! connection pool of fixed size: use `tower::limit::ConcurrencyLimit`), or where requests
//! differ in cost by orders of magnitude (RTT then says little about queueing).
//!
//! # Algorithms
//!
//! Behind one trait, [`LimitAlgorithm`], run once per window of a few RTTs:
//! [`Knee`] (the default: Little's law, `throughput × baseline RTT`, against a baseline
//! measured only on requests that cannot have queued, so service-time jitter does not fool
//! it; see its docs for the design), [`Vegas`] ([Brakmo & Peterson, "TCP Vegas: end to end
//! congestion avoidance on a global Internet", 1995](https://doi.org/10.1109/49.464716)) with
//! a re-probed baseline, [`Aimd`], and [`Gradient2`] (after Netflix's
//! [concurrency-limits](https://github.com/Netflix/concurrency-limits)). See [`algorithm`]
//! for what each can and cannot do.
//!
//! # Many cores
//!
//! No semaphore or mutex on the request path. Permits are tokens sharded per core, each shard
//! on its own cache line, with borrowing between shards when a core runs dry and a debt that
//! later releases pay when the limit shrinks (the design, its invariant and its memory orderings
//! are in the `tokens` and `limiter` module docs in the source). A permit holds a per-shard
//! handle, so even its reference count stays on the core's own line. Window statistics are
//! per-shard counters; at high rates only a sample of requests is timed (so most requests read
//! no clock); and the algorithm runs once per window under a `try_lock` that no request ever
//! waits for.
//!
//! At the limit a request is rejected at once or waits, bounded by `max_wait`, with a real
//! waker ([`AtLimit`]); a waiting task raises a flag bit in every token shard, so a release
//! learns whether to wake anyone from the same `fetch_add` that frees its token. With the
//! `http-body` feature,
//! `PoolSizerLayer::hold_until_body_ends` keeps the permit until the response body ends: the
//! peers release at the headers, so streaming responses escape their limits.
//!
//! # Measured
//!
//! `tests/matrix` runs the default through a matrix on tollgate-sim, the workspace's
//! simulator (seeded, paused time): six service-time distributions (constant, uniform ±20% and
//! ±50%, exponential, log-normal, bimodal) on five backends (10 ms with 4, 10 and 100 workers;
//! 2 ms and 100 ms with 10), each through a step to 1.4x capacity, a halving and a restoring
//! of capacity, light load, a shift of the backend's own latency, ten minutes of overload and
//! ten minutes application-limited, with the default `PoolConfig`. An oracle shows a fixed
//! limit that meets each bar. `cargo test -p tollgate-pool --test matrix -- --nocapture`
//! prints the table; the cells the default does not meet yet are listed in the test. Every run
//! writes its timeline (CSV and SVG) under `target/sim/`. `layers/pool/docs/limit.svg` is the
//! default on a jittery backend through a step, a halving and a restore (`tests/chart.rs`).
//! `tests/scenarios.rs` keeps the older scenarios for Vegas, AIMD and Gradient2.
//!
//! Per request, `benches/pool.rs` runs tower's static `ConcurrencyLimit` and
//! tower-resilience's adaptive limiter in the same run and prints the ratios: on the 2-core
//! development machine, 23–25 ns single-threaded (1.4x the static limit's 17–18 ns), and with
//! 2 threads sharing one limiter 0.26–0.32x the static limit's cost and 13–24x less than
//! tower-resilience's. `tests/no_alloc.rs` checks that a warm request allocates nothing.

//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_pool::{AtLimit, PoolConfig, PoolSizerLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! let layer = PoolSizerLayer::from_config(PoolConfig {
//!     initial_limit: 10,
//!     at_limit: AtLimit::Wait { max_wait: Duration::from_millis(50) },
//!     ..PoolConfig::default()
//! })?;
//! let limiter = layer.limiter().clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
//!
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! let snap = limiter.snapshot();
//! assert_eq!((snap.limit, snap.in_flight), (10.0, 0));
//! assert_eq!(snap.algorithm, "knee");
//! # Ok(())
//! # }
//! ```
//!
//! For servers that call services without waiting on `poll_ready` for capacity, use
//! [`PoolSizerLayer::deferred`]. To take permits outside a service (an admission layer),
//! use [`Limiter::try_acquire`] and [`Permit`] directly.
//!
//! With feature `serde`, [`PoolConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod algorithm;
#[cfg(feature = "http-body")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-body")))]
pub mod body;
mod capacity;
mod config;
mod deferred;
mod future;
mod layer;
mod limiter;
mod permit;
mod reserved;
mod service;
mod tokens;

#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;

#[cfg(all(test, loom))]
mod tests;

pub use algorithm::{
    Aimd, AimdConfig, AlgorithmConfig, Gradient2, Gradient2Config, Knee, KneeConfig,
    LimitAlgorithm, RttEstimates, Vegas, VegasConfig, Window,
};
pub use config::{AtLimit, PoolConfig};
pub use deferred::{DeferredFuture, DeferredPoolSizer};
pub use future::ResponseFuture;
pub use layer::{DeferredPoolSizerLayer, PoolSizerLayer};
pub use limiter::{Limiter, Snapshot};

/// The pool's handle, named like the other layers' (`BreakerHandle`, `AdmissionHandle`, ...): a
/// [`Limiter`] is already a cheap clone of the shared limit, with a
/// [`snapshot`](Limiter::snapshot).
///
/// ```
/// use tollgate_pool::{Limiter, PoolConfig, PoolSizerLayer};
///
/// let layer = PoolSizerLayer::new(Limiter::new(PoolConfig::default()).unwrap());
/// let handle = layer.handle();
/// assert_eq!(handle.snapshot().limit, 20.0);
/// assert_eq!(handle.snapshot().in_flight, 0);
/// ```
pub type PoolHandle = Limiter;
pub use permit::Permit;
pub use service::PoolSizer;
/// The pool's rejection: a request refused at the limit (at once in
/// [`AtLimit::Reject`] mode, after `max_wait` in [`AtLimit::Wait`] mode) fails with this, boxed;
/// test with `err.is::<Overloaded>()`. Re-exported from tollgate-core, so it is the same type
/// admission sheds with.
pub use tollgate_core::error::Overloaded;
