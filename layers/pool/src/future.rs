//! The response future of [`PoolSizer`](crate::PoolSizer).

use crate::permit::Permit;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_core::classify::classify_upstream;
use tollgate_core::error::Overloaded;
use tollgate_core::{BoxError, Classify};

/// The answer of a [`PoolSizer`](crate::PoolSizer): the inner future, holding the permit until
/// it finishes (or fails at once with [`Overloaded`] when the request was refused).
///
/// On completion the result is classified and the permit finished with the RTT since `call`;
/// dropped early, the permit is given back and counted as cancelled.
#[pin_project::pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, C> {
    #[pin]
    inner: Option<F>,
    permit: Option<Permit>,
    classify: C,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, permit: Permit, classify: C) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            classify,
        }
    }

    pub(crate) fn rejected(classify: C) -> Self {
        Self {
            inner: None,
            permit: None,
            classify,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Box::new(Overloaded::new(None))));
        };
        let res = ready!(inner.poll(cx));
        // Drop the inner future before giving the permit back: whatever it holds (a
        // connection, a buffer) is part of the request's concurrency.
        this.inner.set(None);
        let Some(permit) = this.permit.as_mut() else {
            return Poll::Ready(res.map_err(Into::into));
        };
        // A rejection by a tollgate layer below (admission shedding, no endpoints) says
        // nothing about the backend's capacity: not a failure, and not an RTT sample either.
        let (outcome, res) = classify_upstream(this.classify, res);
        // Finished where it lies (the permit is not moved out first: it was written moments
        // ago by `call`, and reading it back whole would stall on those stores).
        permit.finish_in_place(outcome);
        *this.permit = None;
        Poll::Ready(res)
    }
}
