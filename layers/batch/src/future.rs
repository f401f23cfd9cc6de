//! [`ResponseFuture`]: one caller's answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tollgate_core::BoxError;
use tollgate_core::error::Closed;

/// The answer to one request sent through a [`Batcher`](crate::service::Batcher).
///
/// Dropping it before its batch is sent takes the request out of the batch; dropping it later
/// discards the answer. It resolves exactly once, with the request's own result, its batch's
/// failure ([`BatchFailed`](crate::error::BatchFailed),
/// [`Panicked`](tollgate_core::error::Panicked)), or a rejection
/// ([`QueueFull`](crate::error::QueueFull), [`Closed`]).
pub struct ResponseFuture<T> {
    state: State<T>,
}

enum State<T> {
    Waiting(oneshot::Receiver<Result<T, BoxError>>),
    Failed(Option<BoxError>),
}

impl<T> ResponseFuture<T> {
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<T, BoxError>>) -> Self {
        Self {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting(_) => "waiting",
            State::Failed(Some(_)) => "failed",
            State::Failed(None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`, so the future is too.
        let this = self.get_mut();
        match &mut this.state {
            State::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                // The batch went away unanswered (its task dropped at runtime shutdown).
                Poll::Ready(Err(_)) => Poll::Ready(Err(Box::new(Closed::new()))),
                Poll::Pending => Poll::Pending,
            },
            State::Failed(error) => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
