//! Retry and hedging tower layer: a retry budget shared by all clones, backoff with full
//! jitter, pushback, replayable request bodies, hedged requests.
//!
//! [`RetryLayer`] sends a request again when an attempt fails in a way its [`Policy`] calls
//! retryable, and (with [`HedgeConfig`]) sends a second attempt when the first is slower than
//! most, taking whichever answers first and dropping the other:
//!
//! - **A budget, not a count.** Every request deposits into a [`Budget`] shared by every
//!   service the layer builds and all their clones; every retry and every hedge withdraws.
//!   Over a sliding window the extra attempts are at most
//!   [`ratio`](BudgetConfig::ratio) of the requests, or a [floor per
//!   second](BudgetConfig::min_per_second) if that is more (the floor is a minimum for quiet
//!   services, not added on top), so an outage raises the load on a busy service by that
//!   fraction instead of multiplying it by the attempt count (the retry budget of
//!   [Finagle](https://twitter.github.io/finagle/guide/Clients.html#retries) and Linkerd, and
//!   the token bucket of gRPC's [A6 retry design](https://github.com/grpc/proposal/blob/master/A6-client-retries.md)).
//!   The window is a ring of atomic buckets keyed by tokio time, with deposits sharded per
//!   core: no lock on any path (see the [`Budget`] docs for how that compares with tower's
//!   `TpsBudget`).
//! - **Stacked layers do not multiply.** A layer that gives up on a failure it retried
//!   answers [`RetriesExhausted`]; layers further out never retry that failure again, so three
//!   stacked layers in a failure storm cost about one layer's budget, not three.
//! - **Backoff with full jitter** ([`BackoffConfig`]): a uniformly random wait up to an
//!   exponentially growing cap, from a seeded sequence ([`RetryConfig::seed`]) so tests are
//!   reproducible. A pushback from the service ([`Action::RetryAfter`]: `Retry-After`,
//!   `grpc-retry-pushback-ms`) replaces it; a negative gRPC pushback stops the retries.
//! - **Hedging** ([`HedgeConfig`], after Dean and Barroso,
//!   [*The Tail at Scale*](https://research.google/pubs/the-tail-at-scale/), CACM 2013): when
//!   an attempt is still unanswered after a high percentile (p95 by default) of recent
//!   latencies, learned in a lock-free histogram, a second attempt is sent, drawn from the
//!   same budget; the first good answer wins and the loser is dropped at once.
//! - **Policies** decide what is retried and copy requests: [`RetryErrors`] (every error, for
//!   clonable requests, like tower's retry), [`policy_fn`], or your own [`Policy`]. With
//!   feature `http`, `HttpPolicy` knows idempotent methods, retryable status codes and gRPC
//!   statuses, connection errors, `Retry-After` and `grpc-retry-pushback-ms`, and `ReplayBody`
//!   buffers request bodies up to 64 KiB so they can be sent again (larger ones are sent once).
//! - **Endpoint hints.** A policy can mark each attempt with a
//!   [`tollgate_core::attempt::Attempt`] (the HTTP policy puts it in the request's
//!   extensions; [`MarkAttempts`] does it for any request type that implements
//!   [`Attempts`]); all attempts of a request share its [`TriedEndpoints`] set, so a balancer
//!   that records the endpoint it picks can skip it for the retry or the hedge.
//!
//! # Stacked on axum and tonic clients
//!
//! Two runnable examples in the facade crate put the layer on real clients:
//!
//! - `cargo run -p tollgate --example axum-stack --features full,http` (part 5): a hyper client
//!   with `RetryLayer` and [`HttpPolicy`](http::HttpPolicy) in front of an axum route that
//!   answers 503 to every third request: every request gets its 200, and the budget shows the
//!   retries spent.
//! - `cargo run -p tollgate --example tonic-stack --features full,grpc` (part 3): a tonic client
//!   whose channel stack is request bodies buffered into a [`ReplayBody`](http::ReplayBody), the
//!   retry layer with hedging, and a tollgate-balance balancer with `avoid_tried` over three
//!   servers, one of them always `UNAVAILABLE` and two that take 300 ms on every 25th call:
//!   every call succeeds, and no call waits for a slow attempt, each one hedged on the other
//!   server.
//!
//! # When to use it, and when not
//!
//! Use it in front of a service whose failures are often transient (a replica restarting, a
//! connection reset, an overloaded instance shedding) and whose requests are safe to repeat,
//! and hedging where a tail of slow answers comes from the server side (GC pauses, a busy
//! replica) and a second replica can answer instead. Put it outside the balancer, so a retry
//! or hedge can go to another endpoint, and outside the breaker only if a fast-failing breaker
//! should consume retries (usually it should sit inside: an open breaker's `Open` is a fast
//! failure that the budget caps).
//!
//! Do not retry requests that are not idempotent unless the service deduplicates them, and do
//! not hedge calls that are expensive on the server: a hedge is extra work, and while the
//! budget caps it, the winner's loser still ran. Neither helps when the service is simply at
//! capacity: the budget keeps retries from making that worse, admission control fixes it.
//!
//! # Cost
//!
//! Per request: one `Arc` clone (as in tower's retry), one clock read and one `fetch_add` on
//! this core's bucket of the budget (the budget takes no lock and writes no cache line that
//! another core writes), and no allocation unless the request is retried, hedged or marked
//! (the state of retries and hedges is allocated by the first of them). A retry or hedge reads
//! the window (a few dozen atomic loads) and spends with one compare-and-swap. Measured on a
//! shared, busy 2-core machine (`benches/retry.rs`, both in the same run, against tower's
//! `Retry` with its `TpsBudget`): a call that succeeds took about 70 ns against tower's 36 ns on
//! one thread, and 78 ns against 141 ns a call per thread with two threads on one shared
//! layer, where tower's budget mutex is contended; a call whose first attempt fails and whose
//! immediate retry succeeds took 190 ns against 76 ns on one thread and about the same as
//! tower's with two.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_retry::{BudgetConfig, HedgeConfig, RetryConfig, RetryLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = RetryLayer::new(RetryConfig {
//!     max_attempts: 3,
//!     budget: BudgetConfig { ratio: 0.2, ..BudgetConfig::default() },
//!     hedge: Some(HedgeConfig::default()),
//!     seed: Some(7), // reproducible jitter
//!     ..RetryConfig::default()
//! })
//! .expect("valid config");
//! let budget = layer.budget().clone();
//!
//! // A backend whose first two answers to each request fail.
//! let calls = Arc::new(AtomicU32::new(0));
//! let backend = {
//!     let calls = calls.clone();
//!     service_fn(move |req: u32| {
//!         let n = calls.fetch_add(1, Ordering::Relaxed);
//!         async move { if n % 3 < 2 { Err("transient") } else { Ok(req * 2) } }
//!     })
//! };
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer) // retries and hedges, within the budget
//!     .service(backend);
//!
//! assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
//! assert_eq!(calls.load(Ordering::Relaxed), 3);
//! assert_eq!(budget.snapshot().spent, 2);
//! # }
//! ```
//!
//! With feature `serde`, [`RetryConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
mod config;
mod error;
mod future;
mod latency;
mod layer;
mod policy;
mod service;
mod shared;
mod sync;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use budget::{Budget, BudgetSnapshot};
pub use config::{BackoffConfig, BudgetConfig, HedgeConfig, MAX_ATTEMPTS, RetryConfig};
pub use error::RetriesExhausted;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{Action, MarkAttempts, Policy, PolicyFn, RetryErrors, policy_fn};
pub use service::Retry;
pub use tollgate_core::attempt::{Attempt, Attempts, TriedEndpoints};
