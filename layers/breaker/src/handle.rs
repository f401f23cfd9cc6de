//! A handle to watch and steer a breaker from outside the request path.

use crate::future::now_ns;
use crate::machine::Core;
use crate::state::{Snapshot, State};
use crate::sync::Arc;

/// Watches and steers one breaker: every service built from the same layer shares it.
///
/// ```
/// use tollgate_breaker::{BreakerConfig, BreakerLayer, State};
///
/// let layer = BreakerLayer::new(BreakerConfig::default()).unwrap();
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.snapshot().state, State::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    core: Arc<Core>,
}

impl BreakerHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.core.state()
    }

    /// Whether a call made now would be let through, without taking anything: false while
    /// open and still waiting, forced open, or half-open with every probe slot taken; true once
    /// an open breaker's wait is over, although [`state`](Self::state) still says
    /// [`State::Open`] until the next call moves it to half-open. This is what a balancer asks
    /// before sending an endpoint traffic: an open endpoint whose wait has ended must get its
    /// probe, or it would stay open for ever.
    ///
    /// ```
    /// use tollgate_breaker::{BreakerConfig, BreakerLayer};
    ///
    /// let layer = BreakerLayer::new(BreakerConfig::default()).unwrap();
    /// let handle = layer.handle();
    /// assert!(handle.admits_now());
    /// handle.force_open();
    /// assert!(!handle.admits_now());
    /// ```
    pub fn admits_now(&self) -> bool {
        self.core.admits_now(|| now_ns(&self.core))
    }

    /// State, window counts and rates, probe counts, and time until the next probe.
    pub fn snapshot(&self) -> Snapshot {
        self.core.snapshot(now_ns(&self.core))
    }

    /// Rejects every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.core.move_to(None, State::ForcedOpen);
    }

    /// Lets every call through unrecorded until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.core.move_to(None, State::Disabled);
    }

    /// Closes the breaker with an empty window and no backoff, from any state.
    pub fn reset(&self) {
        self.core.move_to(None, State::Closed);
    }
}

/// The breaker as a balancer's per-endpoint signal (tollgate-balance's
/// `BalanceHandle::insert_with_signal`): the endpoint is left out while its breaker would
/// reject a call ([`admits_now`](BreakerHandle::admits_now)): open and waiting, forced open, or
/// half-open with every probe slot taken. Once an open breaker's wait is over the endpoint is
/// picked again, so that its probe is sent.
impl tollgate_core::signal::EndpointSignal for BreakerHandle {
    #[inline]
    fn is_available(&self) -> bool {
        self.admits_now()
    }
}
