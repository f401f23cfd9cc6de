//! Where a balancer finds a request's [`Attempt`] marker, so that a retry or a hedge avoids the
//! endpoints the request already went to.
//!
//! A [`Balance`](crate::Balance) accepts any request type, so it reads no marker by default
//! ([`IgnoreTried`]); [`Balance::avoid_tried`](crate::Balance::avoid_tried) switches it to
//! [`AvoidTried`], which reads the marker of a request that implements [`Attempts`] (an
//! `http::Request` carries it in its extensions; tollgate-retry sets it).

use tollgate_core::attempt::{Attempt, Attempts};

/// Finds the [`Attempt`] marker of a request of type `R`, if it has one.
pub trait TriedHint<R> {
    /// The request's marker, or `None` to pick as for any request.
    fn attempt<'a>(&self, req: &'a R) -> Option<&'a Attempt>;
}

/// Reads no marker: every request is picked for as if it were a first attempt, and nothing is
/// recorded. The default, for request types that carry no [`Attempt`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreTried;

impl<R> TriedHint<R> for IgnoreTried {
    fn attempt<'a>(&self, _: &'a R) -> Option<&'a Attempt> {
        None
    }
}

/// Reads the marker through [`Attempts`]: the balancer records each attempt's endpoint in the
/// request's tried set and sends a retry or a hedge elsewhere while another admitted endpoint
/// exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct AvoidTried;

impl<R: Attempts> TriedHint<R> for AvoidTried {
    fn attempt<'a>(&self, req: &'a R) -> Option<&'a Attempt> {
        req.attempt()
    }
}
