//! The per-endpoint health signal a balancer consults on every pick, so that a layer that
//! knows an endpoint's health (a circuit breaker's handle) and a balancer can meet here without
//! depending on each other: tollgate-breaker implements [`EndpointSignal`] for its
//! `BreakerHandle`, and tollgate-balance takes any `EndpointSignal`.

use crate::Outcome;
use std::fmt;
use std::time::Duration;

/// An outside view of one endpoint's health that the balancer consults on every pick: a
/// circuit breaker, a service mesh's status, an operator's drain switch.
///
/// An endpoint whose signal is not available is left out like an ejected one (and counts as
/// not admitted for panic mode). Attach one with
/// `BalanceHandle::insert_with_signal` (tollgate-balance).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use tollgate_core::signal::EndpointSignal;
///
/// /// An operator's switch.
/// #[derive(Debug, Default)]
/// struct Drain(AtomicBool);
///
/// impl EndpointSignal for Drain {
///     fn is_available(&self) -> bool {
///         // Relaxed: a switch; a pick may see the old value a moment longer.
///         !self.0.load(Ordering::Relaxed)
///     }
/// }
/// ```
pub trait EndpointSignal: fmt::Debug + Send + Sync + 'static {
    /// Whether the endpoint may get new requests now. Called for both candidates of every
    /// pick: keep it to an atomic load.
    fn is_available(&self) -> bool;

    /// Told how each request the balancer sent to the endpoint ended, and how long it took.
    /// The default does nothing (a breaker wrapping the endpoint's service already sees them).
    fn outcome(&self, outcome: Outcome, latency: Duration) {
        let _ = (outcome, latency);
    }
}
