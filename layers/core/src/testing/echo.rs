//! [`Echo`]: the cheapest inner service, for benches and no-allocation tests.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower_service::Service;

/// An inner service that is always ready and answers each request with the request itself,
/// at once and without allocating; `Copy`, so clones cost nothing.
///
/// ```
/// use tollgate_core::testing::Echo;
/// use tower_service::Service;
///
/// let mut svc = Echo;
/// assert_eq!(svc.call(7u64).into_inner(), Ok(7));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl<T> Service<T> for Echo {
    type Response = T;
    type Error = Infallible;
    type Future = Ready<Result<T, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: T) -> Self::Future {
        ready(Ok(req))
    }
}
