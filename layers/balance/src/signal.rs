//! External per-endpoint health signals, such as a circuit breaker's state.

use std::fmt;
use std::time::Duration;
use tollgate_core::Outcome;

/// An outside view of one endpoint's health that the balancer consults on every pick: a
/// circuit breaker, a service mesh's status, an operator's drain switch.
///
/// An endpoint whose signal is not available is left out like an ejected one (and counts as
/// not admitted for panic mode). Attach one with
/// [`BalanceHandle::insert_with_signal`](crate::BalanceHandle::insert_with_signal).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use tollgate_balance::EndpointSignal;
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

/// A [`tollgate_breaker::BreakerHandle`] as a signal: the endpoint is left out while its
/// breaker would reject a call ([`admits_now`](tollgate_breaker::BreakerHandle::admits_now)):
/// open and waiting, forced open, or half-open with every probe slot taken. Once an open
/// breaker's wait is over the endpoint is picked again, so that its probe is sent.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
impl EndpointSignal for tollgate_breaker::BreakerHandle {
    fn is_available(&self) -> bool {
        self.admits_now()
    }
}
