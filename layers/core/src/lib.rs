//! Shared building blocks for the tollgate layers.
//!
//! Only what at least two layers need lives here:
//!
//! - [`attempt`]: the marker a retry layer puts on each attempt of a request, so a balancer
//!   can skip the endpoints its earlier attempts went to.
//! - [`capacity`]: a concurrency limit another layer defers to (an adaptive pool's, under an
//!   admission layer's classes and queues).
//! - [`classify`]: decide whether a call was a success, a failure or neither, looking at the
//!   response as well as the error (so an HTTP 5xx can count as a failure and a 4xx not).
//! - [`ewma`]: exponentially weighted moving averages, plain and lock-free.
//! - [`counter`]: striped atomic counters and per-thread shard indices for many-core hot paths.
//! - [`error`]: the common rejection errors and helpers that walk an error's `source()` chain.
//! - [`outage`]: the guard that keeps a layer away from a failing shared store (Redis) for a
//!   cooldown, then probes it once.
//! - [`redis`]: one shape for the Redis settings of every layer that keeps state there (plain
//!   data; each layer brings its own client).
//! - [`signal`]: the per-endpoint health signal a balancer consults (a breaker's handle is one).
//! - [`sync`]: atomics that switch to `loom` under `--cfg loom`, for the layers' loom models.
//! - `testing` (feature `testing`): probe services and the contract test every layer runs.
//!
//! Time is always read from [`tokio::time::Instant`](https://docs.rs/tokio/latest/tokio/time/struct.Instant.html),
//! so `#[tokio::test(start_paused = true)]` tests and simulations are deterministic.
// `deny`, not `forbid`: only `testing::alloc` (a counting global allocator for tests, behind
// feature `testing`) allows it.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attempt;
pub mod capacity;
pub mod classify;
pub mod counter;
pub mod error;
pub mod ewma;
pub mod outage;
pub mod redis;
pub mod signal;
pub mod sync;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use classify::{Classify, ErrorsAreFailures, Outcome};
pub use error::BoxError;
