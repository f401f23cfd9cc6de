//! What a breaker reports: its state, state changes and snapshots.

use std::sync::Arc;
use std::time::Duration;

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and are recorded in the sliding window.
    Closed,
    /// Calls are rejected with [`Open`](crate::Open) until the wait ends.
    Open,
    /// A few probes pass; their results decide between closing and opening again.
    HalfOpen,
    /// Opened by [`BreakerHandle::force_open`](crate::BreakerHandle::force_open): every call is
    /// rejected until [`reset`](crate::BreakerHandle::reset).
    ForcedOpen,
    /// Turned off by [`BreakerHandle::disable`](crate::BreakerHandle::disable): every call passes
    /// and nothing is recorded until [`reset`](crate::BreakerHandle::reset).
    Disabled,
}

/// One state change, given to the callbacks registered with
/// [`BreakerLayer::on_state_change`](crate::BreakerLayer::on_state_change) (and logged through
/// `tracing` at `info`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The breaker's name (with the key, for a keyed breaker: `name[key]`).
    pub name: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When the change is to [`State::Open`], how long it will stay open.
    pub open_for: Option<Duration>,
}

/// A point-in-time view of a breaker, from [`BreakerHandle::snapshot`](crate::BreakerHandle::snapshot).
///
/// Counters are read one by one without stopping the breaker, so under load they may disagree
/// by a call or two.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The current state.
    pub state: State,
    /// Calls recorded in the sliding window.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls (successful or not).
    pub slow_calls: u64,
    /// `failures / calls`, `None` when the window is empty.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, `None` when the window is empty.
    pub slow_call_rate: Option<f64>,
    /// Failures in a row (counted only when `consecutive_failures` is set).
    pub consecutive_failures: u32,
    /// Half-open only: probes admitted in this half-open period (in flight or finished).
    pub probes_admitted: u32,
    /// Half-open only: probes that finished.
    pub probe_results: u32,
    /// Open only: the time until the next probe is let through.
    pub retry_after: Option<Duration>,
    /// Opens since the breaker last closed after a successful probe round (drives backoff).
    pub opens_in_a_row: u32,
}
