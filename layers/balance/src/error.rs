//! The balancer's own rejection.
//!
//! [`NoEndpoints`] lives in tollgate-core so that every layer above the balancer can tell it
//! from an upstream failure ([`tollgate_core::error::is_rejection`]); it is the same type as
//! `tollgate_core::error::NoEndpoints`.

pub use tollgate_core::error::NoEndpoints;

/// Whether `err` is a refusal by the endpoint's own breaker (core's `Refused`, behind its
/// `Open`): a rejection to the layers above the balancer, but the endpoint's failure to the
/// balancer itself (it has been failing, and its quick refusals would make it look cheapest).
pub(crate) fn refused_by_endpoint(err: &(dyn std::error::Error + 'static)) -> bool {
    tollgate_core::error::is_caused_by::<tollgate_core::error::Refused>(err)
}
