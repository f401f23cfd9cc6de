//! Latency-aware load balancing: power of two choices over peak-EWMA cost.
//!
//! [`Balance`] spreads requests over a changing set of endpoints, away from slow and failing
//! ones:
//!
//! - **Power of two choices** ([Mitzenmacher, 2001](https://www.eecs.harvard.edu/~michaelm/postscripts/tpds2001.pdf)):
//!   each request draws two endpoints at random and goes to the cheaper one. The cost is the
//!   **peak-EWMA latency** × (requests in flight + 1) ÷ weight, as in
//!   [Finagle](https://twitter.github.io/finagle/guide/Clients.html#power-of-two-choices-p2c-peak-ewma)
//!   and [Linkerd](https://linkerd.io/2016/03/16/beyond-round-robin-load-balancing-for-latency/):
//!   a slow sample replaces the estimate at once, fast ones pull it down gradually, and an idle
//!   endpoint's estimate decays so it is tried again.
//! - A **failure penalty**: the cost is divided by (1 − failure rate)^`failure_penalty`, and
//!   failures never lower the latency estimate, so an endpoint that fails fast looks expensive
//!   rather than cheap.
//! - **Outlier ejection**: after `consecutive_failures` failures in a row, or a success rate far
//!   below the fleet's, an endpoint leaves rotation for `base_ejection_time` × the number of
//!   times in a row it was ejected, at most `max_ejection_time`; never more than
//!   `max_ejection_share` of the endpoints at once.
//! - **Active health checks** with your probe ([`HealthCheck`]), run by a task you spawn
//!   ([`BalanceHandle::health_checks`]) or the balancer spawns
//!   ([`Balance::spawn_health_checks`]); it stops when the balancer is dropped.
//! - **External signals**: an [`EndpointSignal`] per endpoint (a circuit breaker's handle: it
//!   implements the trait, which lives in tollgate-core) takes it out of rotation while it says so.
//! - **Panic mode**: when fewer than `panic_threshold` of the endpoints are admitted (healthy,
//!   not ejected and available by their signal), picks spread over all of them rather than
//!   overload the few.
//! - **Slow start**: a new or recovered endpoint's weight ramps up over `slow_start`.
//! - **Draining**: an endpoint removed from the set finishes its requests and gets no new ones.
//! - **No endpoints** is a [`NoEndpoints`] error at once, never a hang.
//! - **Back-off signals**: an answer that asks for fewer requests (per the classifier's
//!   [`back_off`](tollgate_core::Classify::back_off): with feature `http`,
//!   `ServerErrorsAreFailures` reads a 429 or 503 with `Retry-After`) makes its endpoint look 16
//!   times dearer for that long (at most 5 minutes), so it gets a far lower share without
//!   leaving rotation.
//! - **Retries avoid tried endpoints** ([`Balance::avoid_tried`]): a retry or hedge marked by
//!   tollgate-retry goes to an endpoint the request has not tried yet while an admitted one
//!   exists, so a retry does not return to the endpoint that just failed it.
//! - **Consistent hashing with bounded load** ([`Balance::hash_by`], [`HashConfig`];
//!   [Mirrokni, Thorup and Zadimoghaddam, 2018](https://arxiv.org/abs/1608.01350)): requests
//!   with the same key (a user, a session, a path: `HttpKey` with feature `http`) go to the
//!   same endpoint, for its caches, while its in-flight load stays within `load_factor` times
//!   its fair share; past that, the key spills to the next endpoint on the ring, so one hot key
//!   cannot sink one endpoint. Requests without a key are picked by power of two choices.
//! - [`BalanceHandle::endpoints`] reports cost, latency, in flight, state and share per
//!   endpoint.
//!
//! # Sharing without a worker
//!
//! `Balance` is `Clone`, and clones share everything, with no worker task and no `Buffer`:
//! the endpoint set is an [`arc-swap`](https://docs.rs/arc-swap) snapshot read without a lock
//! and replaced copy-on-write by discovery ([`BalanceHandle::discover`] over a
//! [`tower::discover::Discover`] stream), a static list ([`Balance::new`]) or the
//! [`BalanceHandle`]. Each endpoint's statistics are atomics. A request takes no lock and
//! allocates nothing (a clone of the endpoint's service aside, which is cheap for the usual
//! `Arc`-backed clients).
//!
//! # Readiness
//!
//! Endpoint services must be `Clone`. `poll_ready` picks an endpoint among those admitted,
//! reserves a slot on it (counted as in flight) and polls a **clone of its service** ready;
//! `call` sends the request to that very clone. While the clone is not ready the choice
//! stands (the task is woken by that service), unless the endpoint is removed, in which case
//! another is picked. Dropping a readied balancer gives the slot back. An endpoint's readiness
//! therefore does not steer the choice: cost does. Services that are always ready (HTTP
//! clients, channels) suit this best. When the clone was ready at once, the request's latency
//! is timed from the pick (saving a clock read), so call soon after `poll_ready`, as tower
//! callers do. On a busy thread (picks less than 20 µs apart) only one successful request in 8
//! reads the clock again at its end to sample the latency, which saves a clock read on the
//! others; the load factor of the cost still counts every request, and failures,
//! cancellations and endpoints with an [`EndpointSignal`] are always timed.
//!
//! # Outcomes
//!
//! A [`Classify`](tollgate_core::Classify) (by default every error is a failure) decides which
//! answers count against an endpoint. A request dropped unfinished after
//! `cancel_failure_after` (default 1 s) counts as a failure too: that is how a caller's
//! timeout looks from inside the stack.
//!
//! # When to use it, and when not
//!
//! Use it in front of several interchangeable replicas whose latency varies, with hashing
//! when a key's requests gain from landing on the same replica (its caches). Hashing is not
//! stickiness: a key moves when its endpoint is at its bound, leaves or is ejected, so state
//! that must not move (sessions held only in memory) needs something else. For one upstream,
//! or for very small or idle fleets, round robin is simpler and as good.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_balance::{Balance, BalanceConfig, EndpointState};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! // Three replicas; the third is slow.
//! let replica = |ms: u64| service_fn(move |req: u32| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, std::io::Error>(req * 2)
//! });
//! let balance = Balance::new(
//!     [("a", replica(1)), ("b", replica(2)), ("c", replica(50))],
//!     BalanceConfig { seed: Some(7), ..Default::default() },
//! )?;
//! let handle = balance.handle();
//! let svc = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .service(balance);
//! for i in 0..200 {
//!     assert_eq!(svc.clone().oneshot(i).await?, i * 2);
//! }
//! let stats = handle.endpoints();
//! let slow = stats.iter().find(|e| e.key == "c").unwrap();
//! assert!(slow.share < 0.1, "the slow replica got {:.0}%", slow.share * 100.0);
//! assert_eq!(slow.state, EndpointState::Healthy);
//! # Ok(())
//! # }
//! ```
//!
//! With feature `serde`, [`BalanceConfig`] and the types inside it implement `Serialize` and
//! `Deserialize`: durations read and write as `"250ms"`, `"5s"`, `"1m"`, a field left out keeps its
//! default, and an unknown field is an error that names it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod common;
mod config;
mod endpoint;
mod error;
mod fleet;
mod future;
mod handle;
mod hash;
#[cfg(feature = "http")]
mod hash_http;
mod health;
mod layer;
mod pick;
mod ring;
mod service;
mod signal;
mod sync;
mod tried;

#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing;

#[cfg(all(test, loom))]
mod tests;

pub use config::{BalanceConfig, HashConfig, HealthConfig, OutlierConfig};
pub use error::NoEndpoints;
pub use future::ResponseFuture;
pub use handle::{BalanceHandle, EndpointState, EndpointStats};
pub use hash::{KeyFn, NoKey, RequestKey, hash_bytes};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use hash_http::HttpKey;
pub use health::HealthCheck;
pub use layer::BalanceLayer;
pub use service::Balance;
pub use signal::EndpointSignal;
pub use tried::{AvoidTried, IgnoreTried, TriedHint};
