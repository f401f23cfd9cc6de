//! A deterministic overload simulator for testing tollgate layers.
//!
//! Everything runs on tokio's clock, so under paused time (`#[tokio::test(start_paused = true)]`)
//! a simulated minute takes milliseconds and every run with the same seeds gives the same
//! numbers.
//!
//! - [`SimBackend`]: a backend with `workers` servers behind a FIFO queue (an M/G/k queue),
//!   a service-time distribution, an optional failure rate, and changes scheduled at a time
//!   (workers, service time, failure rate). It is a `tower::Service<SimRequest>`, so layers wrap
//!   it; clones share the same workers.
//! - [`LoadGen`]: an open-loop load generator (constant, step, ramp or piecewise profiles;
//!   Poisson or uniform arrivals; a seeded class mix; optional deadlines and client timeouts)
//!   that drives any `Service<SimRequest>`.
//! - [`Recorder`]: per-window and per-class counts: goodput, errors, rejections by kind, latency
//!   percentiles (p50, p99, p99.9), and the ledger `issued = ok + errors + rejected`; plus
//!   gauges a test samples (a limit, requests in flight).
//! - [`Timeline`]: a run's offered load, goodput, rejections, limit, in flight and p99 per
//!   window, written as CSV and as an SVG chart ([`Timeline::write`]).
//!
//! The model's capacity is `workers / mean service time` requests per second; the concurrency
//! that saturates it without queueing is `workers` (Little's law).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_sim::{LoadGen, Profile, Recorder, SimBackend};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // 10 workers x 10 ms: 1000 requests per second; half the workers leave after 2 s.
//! let backend = SimBackend::builder().workers(10).service_time(Duration::from_millis(10)).seed(1).build();
//! backend.set_capacity_at(Duration::from_secs(2), 5);
//!
//! // Any layer goes between the generator and the backend.
//! let service = tower::ServiceBuilder::new().concurrency_limit(10).service(backend.clone());
//!
//! let recorder = Recorder::new();
//! let load = LoadGen::new(Profile::Constant(800.0), Duration::from_secs(4)).seed(7);
//! load.run(service, &recorder).await;
//!
//! let before = recorder.summary(Duration::from_secs(1), Duration::from_secs(2));
//! assert!(before.goodput_rps() > 700.0);
//! assert!(before.p99.unwrap() < Duration::from_millis(30));
//! let after = recorder.summary(Duration::from_secs(3), Duration::from_secs(4));
//! assert!(after.goodput_rps() < 520.0); // half the capacity
//! assert!(recorder.total().ledger_balanced());
//! # }
//! ```
#![forbid(unsafe_code)]

mod backend;
mod load;
mod recorder;
mod request;
pub mod timeline;

pub use backend::{BackendStats, Change, ServiceTime, SimBackend, SimBackendBuilder, SimFuture};
pub use load::{Arrivals, LoadGen, Profile, RunStats};
pub use recorder::{Completion, Recorder, Summary};
pub use request::{SimError, SimRequest, SimResponse};
pub use timeline::{Timeline, TimelineRow};
