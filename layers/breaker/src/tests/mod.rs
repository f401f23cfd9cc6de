//! Unit-level models of the state machine: a property test against a reference model, and loom
//! models of the lock-free half-open admission.

#[cfg(loom)]
mod loom_probes;
#[cfg(not(loom))]
mod model;
#[cfg(not(loom))]
mod threads;
