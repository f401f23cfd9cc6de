//! Priority admission: under overload, serve what matters most and turn the rest away quickly,
//! with a clear answer.
//!
//! Each request gets a [`Ticket`] from a [`Prioritize`] function: a priority class (0 is the
//! highest; at least one class, four by default, names configurable), an optional deadline
//! and an optional rate-limit key. Then:
//!
//! - **Capacity** is a limit on requests in flight, fixed ([`AdmissionConfig::limit`]), from
//!   any [`Capacity`], such as tollgate-pool's adaptive `Limiter`
//!   ([`AdmissionLayer::with_capacity`]: each admitted request holds a pool permit, so the
//!   pool times it and learns; the trait lives in tollgate-core, so neither crate depends on
//!   the other). When nobody waits, a request takes a slot with one
//!   compare-and-swap and no allocation.
//! - **Priority**: when a slot frees, the highest class with waiters gets it. A class may
//!   *reserve* slots ([`ClassConfig::reserved`]): while it has waiters, freed slots go to it
//!   first and others cannot take the slots it is owed; while it has none, lower classes
//!   borrow them. A class may also keep *headroom* ([`ClassConfig::headroom`]): slots that
//!   lower classes never take, so its requests start at once instead of waiting for one to
//!   free (at the cost of that capacity while unused).
//! - **Shedding**: queues are bounded per class ([`ClassConfig::queue_capacity`]) and overall
//!   ([`AdmissionConfig::max_queued`]). A full class queue rejects at once; at the overall
//!   bound a request sheds the newest waiter of the lowest class below it, so classes are shed
//!   strictly from the bottom.
//! - **Queue discipline** ([`CodelConfig`]): oldest first normally, and a waiter gives up
//!   after 100 ms; once a class's queue has not emptied for 100 ms (or dropped a waiter in the
//!   last 100 ms), newest first (adaptive LIFO) and waiters older than 5 ms are dropped
//!   (CoDel) while enough fresher ones wait to keep every slot busy, so served requests wait
//!   about the target under sustained overload and no slot idles in a lull. With an adaptive
//!   [`Capacity`], which keeps a small queue at the backend of its own, a queue that receives
//!   requests at least 1.15x as fast as it hands out slots (averaged over about 500 ms) drops
//!   waiters older than three slot gaps (the time three slots take to free) or 3.5 ms (70% of
//!   the target), whichever is sooner, even without fresher ones to cover them, so the wait
//!   adds little to the backend's own; where the latency varies little (standard deviation
//!   under half the mean), proportionally less. It starts where three of the queue's gaps are under
//!   twice the target, and holds while three gaps of all admissions (the queue's grants and
//!   the requests admitted without waiting) are.
//! - **Deadlines**: a request that cannot finish by its deadline (given the measured service
//!   time) is rejected before it takes capacity, or leaves the queue when it no longer can.
//!   With feature `http`, deadlines come from the `grpc-timeout` header or a
//!   `http::Deadline` extension.
//! - **Rate limits** per key with `governor`'s GCRA ([`RateLimitConfig`]), the number of keys
//!   bounded. With feature `redis`, the quota can live in Redis and be shared by several
//!   gateway instances, falling back to the local limit when Redis cannot be reached. A
//!   request that passes learns what its key has left ([`RateLimitState`]: the requests it
//!   may still make at once and the time until one more frees) through
//!   [`Prioritize::rate_checked`], written into the request itself: no lock, no allocation.
//! - **Client-side throttling** ([`ThrottleConfig`]), the SRE book's adaptive formula.
//! - **Typed rejections**: [`Rejected`] carries the class, a [`Reason`] and a suggested
//!   retry-after; its `source()` is `tollgate-core`'s `Overloaded`, `RateLimited` or
//!   `DeadlineExceeded`.
//! - **Observability**: [`AdmissionHandle::snapshot`] gives per-class admitted, queued,
//!   rejections by reason and queue-wait percentiles.
//!
//! Admission needs the request, so it is decided in `call` (the fast path) or in the response
//! future (the queue); `poll_ready` only forwards the inner service's readiness. With
//! [`ReadyMode::Always`], `poll_ready` is always ready and the response future readies a clone
//! of the inner service after admission: use it under servers that call without waiting on
//! `poll_ready` (axum).
//!
//! # Features
//!
//! - `http`: `http::HttpPrioritizer` (class from an extension or header, deadline from
//!   `grpc-timeout`, rate-limit key from a header).
//! - `redis`: the per-key quota kept in Redis (`RateLimitConfig::redis`).
//! - `fuzzing`: the `fuzzing` module behind the `admission_ops` fuzz target.
//!
//! # When to use it, and when not
//!
//! Use it at the front of a service that can be overloaded and whose requests are not all
//! equally important: it keeps the important ones fast and answers the rest quickly. It is not
//! a fair scheduler (a higher class can starve lower ones unless they reserve capacity), and
//! it does not find the right limit by itself: give it a measured fixed limit or an adaptive
//! [`Capacity`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_admission::{AdmissionConfig, AdmissionLayer, Reason, Rejected, Ticket};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! #[derive(Debug)]
//! struct Req { critical: bool }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! let config = AdmissionConfig { limit: 1, ..AdmissionConfig::default() };
//! let layer = AdmissionLayer::new(config)?
//!     // class 0 (`critical_plus`) for critical requests, class 3 (`sheddable`) for the rest
//!     .prioritize(|r: &Req| if r.critical { 0 } else { 3 });
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|_r: Req| async {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     Ok::<_, tollgate_core::BoxError>("done")
//! });
//!
//! // One request holds the only slot; a sheddable one waits, then a critical one arrives.
//! let first = svc.ready().await?.call(Req { critical: false });
//! let low = svc.ready().await?.call(Req { critical: false });
//! let high = svc.ready().await?.call(Req { critical: true });
//! let (a, b, c) = tokio::join!(first, low, high);
//! assert_eq!(a?, "done");
//! assert_eq!(c?, "done"); // served second, ahead of the older sheddable request
//! // The sheddable request waited more than 5 ms behind it, but its queue was not standing
//! // (100 ms), so it was served third.
//! assert_eq!(b?, "done");
//! assert_eq!(handle.snapshot().class("critical_plus").unwrap().admitted, 1);
//! # let _ = (Reason::QueueFull, Ticket::new(0), std::any::type_name::<Rejected>());
//! # Ok(())
//! # }
//! ```
//!
//! # Speed
//!
//! With nobody queued, a request costs one compare-and-swap to take a slot, one atomic
//! subtraction to give it back, and a reference-count increment on a per-thread shard of the
//! shared state; it does not allocate or read the clock (unless it carries a deadline, or the
//! capacity wants latencies). The queues sit behind one short-held mutex, taken only when
//! somebody waits. `benches/admission.rs` compares it with tower's `ConcurrencyLimit`.
//!
//! # References
//!
//! - Zhou et al., [Overload Control for Scaling WeChat Microservices](https://arxiv.org/abs/1806.04075)
//!   (DAGOR, SoCC 2018): priority-based admission and shedding.
//! - Nichols and Jacobson, [Controlling Queue Delay](https://queue.acm.org/detail.cfm?id=2209336)
//!   (CoDel), and Meta's adaptive LIFO with CoDel in
//!   [Fail at Scale](https://queue.acm.org/detail.cfm?id=2839461).
//! - Google SRE book, [Handling Overload](https://sre.google/sre-book/handling-overload/):
//!   criticalities and client-side adaptive throttling.
//!
//! With feature `serde`, [`AdmissionConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod capacity;
mod classify;
mod config;
mod controller;
mod error;
mod future;
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;
mod handle;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod layer;
mod pressure;
mod queue;
mod ratelimit;
#[cfg(feature = "redis")]
mod remote;
mod service;
mod stats;
mod sync;
#[cfg(all(test, loom))]
mod tests;
mod throttle;
mod waiter;

pub use capacity::{Capacity, FixedLimit, Slot};
pub use classify::{Key, OneClass, Prioritize, Ticket};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use config::RedisConfig;
pub use config::{
    AdmissionConfig, ClassConfig, CodelConfig, MAX_CLASSES, RateLimitConfig, ReadyMode,
    ThrottleConfig,
};
pub use error::{Reason, Rejected};
pub use future::ResponseFuture;
pub use handle::AdmissionHandle;
pub use layer::AdmissionLayer;
pub use ratelimit::RateLimitState;
pub use service::Admission;
pub use stats::{ClassSnapshot, QueueWait, Snapshot};
