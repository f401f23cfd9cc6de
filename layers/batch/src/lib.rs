//! Request batching tower layer: single requests become one batch call.
//!
//! Many backends answer one call of 100 items far faster than 100 calls of one: databases
//! (`WHERE id IN (...)`), model servers, bulk APIs. [`BatchLayer`] wraps such a *batch
//! service* — a `Service<Vec<Req>>` answering one result per request ([`BatchResults`]: a
//! `Vec` in order, or a `HashMap` keyed by request) — into a `Service<Req>` that callers use
//! one request at a time. Every caller gets exactly one answer: its own result, its own
//! failure, or the failure of its batch.
//!
//! # When a batch is sent
//!
//! Whichever comes first ([`FlushReason`]):
//!
//! - it holds [`max_items`](BatchConfig::max_items) requests, or weighs
//!   [`max_weight`](BatchConfig::max_weight) by the [weigher](BatchLayer::with_weigher);
//! - its oldest request has waited the linger: at most
//!   [`max_linger`](BatchConfig::max_linger), less when the measured arrival rate says the
//!   batch will fill sooner (twice the predicted fill time);
//! - a request's [deadline](BatchLayer::with_deadline) would pass before the linger ends;
//! - nothing of its key is in flight and arrivals are sparse (fewer than two expected within
//!   `max_linger`): it goes at once, so light load pays no added latency; or nothing is in
//!   flight and the burst is over (no arrival for three mean gaps);
//! - [shutdown](BatchHandle::shutdown) flushes everything queued.
//!
//! Up to [`max_in_flight`](BatchConfig::max_in_flight) batch calls run at once per key; while
//! they are busy requests keep gathering, so batches grow with load. The queue holds at most
//! [`queue_capacity`](BatchConfig::queue_capacity) requests: `poll_ready` waits for room
//! ([`Overflow::Wait`]) or the request fails with [`QueueFull`] ([`Overflow::Reject`]).
//!
//! # Failures
//!
//! A per-item error fails only that request. A failed batch call fails each of its requests
//! with [`BatchFailed`] (the batch error as `source()`); a panic in the batch service (in
//! `poll_ready`, `call` or its future) with [`Panicked`](tollgate_core::error::Panicked); a
//! batch whose task is dropped (runtime shutdown) with [`Closed`](tollgate_core::error::Closed).
//! In every case the layer keeps serving: there is no long-lived worker that can die. A caller
//! that drops its future before the flush is left out of the batch; later, its answer is
//! discarded.
//!
//! # Design: many cores, no worker
//!
//! - **Submitting** a request takes a queue place from a semaphore (one CAS, no `Arc` clone),
//!   pushes the request onto *this core's* lock-free `crossbeam` queue of its key (one shard
//!   per core, cache-padded), and bumps the key's `queued` counter. No mutex, no channel with
//!   a single consumer per request, and no clock read (the flusher stamps what it drains). The
//!   answer comes back through a `oneshot`.
//! - **Flushing** is done by a short-lived flusher task per busy key, started by the request
//!   that finds none running (a CAS on a flag) and exiting when the key's queue is empty. It
//!   sleeps on a tokio timer armed for the oldest request's linger and is woken only on
//!   transitions (first request, every `max_items`-th, weight crossing, deadlines, a batch
//!   finishing), not per request. It drains all shards, orders by arrival, cuts a batch and
//!   spawns a task for the batch call. Timers follow tokio's clock, so paused-time tests are
//!   exact.
//! - **Surviving**: user code runs under `catch_unwind`; the flusher owns only what it can
//!   give back (a dropped or panicking flusher answers its requests and hands over to a fresh
//!   one), and the backend is re-cloned after it panics.
//!
//! # When not to use it
//!
//! When the backend has no batch API, or a single call is already cheap: batching then only
//! adds a hop. For strictly ordered streams, note that requests of one key are sent in arrival
//! order but batches may complete out of order when `max_in_flight > 1`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tollgate_batch::{BatchConfig, BatchLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! // A backend that looks up many ids in one call and answers in order.
//! let backend = service_fn(|ids: Vec<u64>| async move {
//!     Ok::<_, Infallible>(ids.into_iter().map(|id| Ok::<_, Infallible>(id * 10)).collect::<Vec<_>>())
//! });
//! let config = BatchConfig { max_items: 32, max_linger: Duration::from_millis(2), ..Default::default() };
//! let svc = ServiceBuilder::new()
//!     .layer(BatchLayer::new(config)?) // gather single lookups into batch calls
//!     .service(backend);
//!
//! let lookups = (0..100u64).map(|id| svc.clone().oneshot(id));
//! let answers = futures_util::future::join_all(lookups).await;
//! assert_eq!(answers[7].as_ref().unwrap(), &70);
//! let stats = svc.handle().snapshot();
//! assert!(stats.batches < 100, "{stats:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # Prior art
//!
//! TF-Serving's [batching scheduler](https://github.com/tensorflow/serving/blob/master/tensorflow_serving/batching/README.md)
//! (max batch size, batch timeout, batches in flight, bounded queue), Facebook's
//! [DataLoader](https://github.com/graphql/dataloader) (folding duplicate keys, keyed
//! results), and Zebra's [`tower-batch-control`](https://docs.rs/tower-batch-control) (a single
//! worker task per layer).
//!
//! With feature `serde`, [`BatchConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
pub mod error;
mod execute;
mod flush;
pub mod future;
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;
mod gate;
mod handle;
mod layer;
mod queue;
mod results;
mod service;
mod stats;
mod sync;
#[cfg(all(test, loom))]
mod tests;

pub use config::{BatchConfig, Overflow};
pub use error::{BatchFailed, ItemFailed, MissingResult, QueueFull};
pub use future::ResponseFuture;
pub use handle::BatchHandle;
pub use layer::BatchLayer;
pub use results::BatchResults;
pub use service::Batcher;
pub use stats::{BatchSnapshot, FlushCounts, FlushReason};
