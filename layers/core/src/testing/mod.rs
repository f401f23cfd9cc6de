//! Probe services and the contract test every layer runs.
//!
//! [`Probe`] is an inner service whose readiness and answers the test controls through a
//! [`ProbeHandle`]. Its clones start unready, and calling an instance that was not readied
//! panics, so a layer that calls a different clone than the one it polled is caught.
//! [`contract::check`] runs the checks every layer must pass: readiness propagates, clones start
//! without a reservation, dropped futures and dropped readied services give capacity back, inner
//! errors pass through, and a panicking inner service leaves the layer working.
//! [`fuzz::replay`] runs a fuzz target's committed corpus as a normal test, and
//! [`redis::RedisServer`] starts a throwaway Redis for integration tests, and
//! [`tools::find_or_install`] finds (or installs) the other programs tests drive.

pub mod alloc;
pub mod contract;
mod echo;
pub mod fuzz;
mod probe;
pub mod redis;
pub mod tools;

pub use echo::Echo;
pub use probe::{Probe, ProbeError, ProbeFuture, ProbeHandle, ProbeRequest};
