//! External per-endpoint health signals, such as a circuit breaker's state: the trait lives in
//! tollgate-core, so that the layers that implement it need not depend on this one.

pub use tollgate_core::signal::EndpointSignal;
