//! Circuit breaking tower layer: count and time windows, failure-rate and slow-call trips,
//! half-open probes, per-key breakers.
//!
//! A circuit breaker stops sending requests to a service that keeps failing, so the caller fails
//! fast instead of queueing behind timeouts and the service gets room to recover (Michael
//! Nygard, [*Release It!*](https://pragprog.com/titles/mnee2/release-it-second-edition/),
//! "Circuit Breaker"; this layer follows the state machine of
//! [resilience4j's CircuitBreaker](https://resilience4j.readme.io/docs/circuitbreaker)):
//!
//! - **Closed**: calls pass; their outcomes go into a sliding window, either the exact last N
//!   calls ([`SlidingWindow::Count`]) or the calls of the last T split into buckets
//!   ([`SlidingWindow::Time`], memory independent of the request rate). Once the window holds
//!   [`minimum_calls`](BreakerConfig::minimum_calls), a failure rate at or above
//!   [`failure_rate_threshold`](BreakerConfig::failure_rate_threshold), or a slow-call rate at
//!   or above [`slow_call_rate_threshold`](BreakerConfig::slow_call_rate_threshold), opens the
//!   breaker; so can [`consecutive_failures`](BreakerConfig::consecutive_failures) in a row.
//! - **Open**: calls are rejected with [`Open`], whose [`retry_after`](Open::retry_after) is the
//!   time until the next probe (for a `Retry-After` header). The wait is
//!   [`wait_in_open`](BreakerConfig::wait_in_open), growing with an optional [`Backoff`]
//!   (exponential, capped, with jitter) while probes keep failing.
//! - **Half-open**: at most [`permitted_calls_in_half_open`](BreakerConfig::permitted_calls_in_half_open)
//!   probes pass at once, across every clone of the service; when that many have finished their
//!   rates decide between closing (with an empty window) and opening again.
//! - **Forced open** and **disabled**, set from a [`BreakerHandle`], which also gives a
//!   [`Snapshot`] of the state, the window's counts and the rates.
//!
//! What counts as a failure is a [`Classify`](tollgate_core::Classify) from `tollgate-core`: it
//! sees the response as well as the error, so an HTTP 5xx can be a failure and a 4xx not.
//! State changes are logged through `tracing` and given to callbacks
//! ([`BreakerLayer::on_state_change`]). [`KeyedBreakerLayer`] keeps one breaker per key (say,
//! per upstream host), with a bounded number of keys and idle keys evicted.
//!
//! # When to use it, and when not
//!
//! Use it in front of a dependency that can fail as a whole (a backend, a host, a database), so
//! that its outage costs callers a fast error rather than a timeout each. It does not help with
//! load a healthy service cannot take (use admission control or a concurrency limit), and a
//! breaker over many unrelated backends trips for all of them when one fails (key it instead).
//!
//! # Cost
//!
//! The closed path is lock-free: one load of the state word to admit, and to record a success
//! in a count window one `fetch_add` on this thread's cell of a sharded call counter, so
//! successes on different cores write no shared cache line (a failure also reads the total and
//! pushes its position onto a ring). No allocation (cloning the service, as servers do per
//! request, included), no boxed future, and no clock read unless slow-call detection is on or
//! the window is time-based. Measured on a shared 2-core machine
//! (`benches/breaker.rs`): 35 to 60 ns a call on one thread and 60 to 120 ns a call per thread
//! with two threads sharing one breaker, depending on the machine's load; tower-resilience's
//! circuit breaker took 5 to 9 times as long on one thread and 7 to 14 times as long on two, in
//! the same runs.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_breaker::{BreakerConfig, BreakerLayer, Open};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = BreakerLayer::new(BreakerConfig {
//!     minimum_calls: 10,
//!     wait_in_open: Duration::from_secs(5),
//!     ..BreakerConfig::default()
//! })
//! .expect("valid config");
//! let handle = layer.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer) // fail fast while the backend is down
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err("backend down") } else { Ok("ok") }
//!     }));
//!
//! for _ in 0..10 {
//!     let _ = svc.ready().await.unwrap().call(true).await;
//! }
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let open = err.downcast_ref::<Open>().expect("rejected by the breaker");
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//! assert_eq!(handle.snapshot().failure_rate, Some(1.0));
//! # }
//! ```
//!
//! With feature `serde`, [`BreakerConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
mod machine;
mod service;
mod settings;
mod state;
mod sync;
mod window;
mod word;

#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use config::{
    Backoff, BreakerConfig, KeyLimits, MAX_HALF_OPEN_CALLS, MAX_WINDOW_CALLS, SlidingWindow,
};
pub use error::Open;
pub use future::ResponseFuture;
pub use handle::BreakerHandle;
pub use keyed::{KeyedBreaker, KeyedBreakerHandle};
pub use layer::{BreakerLayer, KeyedBreakerLayer};
pub use service::Breaker;
pub use state::{Snapshot, State, StateChange};
