//! The balancer's own rejection.
//!
//! [`NoEndpoints`] lives in tollgate-core so that every layer above the balancer can tell it
//! from an upstream failure ([`tollgate_core::error::is_rejection`]); it is the same type as
//! `tollgate_core::error::NoEndpoints`.

pub use tollgate_core::error::NoEndpoints;
