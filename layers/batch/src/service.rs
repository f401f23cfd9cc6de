//! [`Batcher`]: the `Service<Req>` callers see.

use crate::config::Overflow;
use crate::error::QueueFull;
use crate::future::ResponseFuture;
use crate::handle::BatchHandle;
use crate::queue::Shared;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::PollSemaphore;
use tollgate_core::BoxError;
use tollgate_core::error::Closed;
use tower_service::Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reservation {
    /// Nothing reserved: `call` panics.
    None,
    /// One queue place taken (its permit forgotten): `call` spends it, drop gives it back.
    Place,
    /// The queue was full in [`Overflow::Reject`] mode: `call` fails with `QueueFull`.
    Full,
}

/// Turns single requests into batch calls of the inner batch service. Built by
/// [`BatchLayer`](crate::layer::BatchLayer); see the [crate docs](crate).
///
/// `poll_ready` reserves a place in the bounded queue (waiting for one, or noting that the
/// queue is full in [`Overflow::Reject`] mode); `call` queues the request in that place.
/// Dropping a readied service gives its place back, and a clone starts with none.
///
/// The inner batch service lives with the layer's flusher tasks, not in this handle, so there
/// is no `get_ref`/`get_mut`/`into_inner`.
pub struct Batcher<Req, T, K = ()> {
    shared: Arc<Shared<Req, T, K>>,
    waiter: PollSemaphore,
    reservation: Reservation,
}

impl<Req, T, K> Batcher<Req, T, K> {
    pub(crate) fn from_shared(shared: Arc<Shared<Req, T, K>>) -> Self {
        let waiter = PollSemaphore::new(shared.queue.clone());
        Self {
            shared,
            waiter,
            reservation: Reservation::None,
        }
    }

    /// The handle of this layer instance (shared by every clone): statistics and shutdown.
    pub fn handle(&self) -> BatchHandle<Req, T, K> {
        BatchHandle {
            shared: self.shared.clone(),
        }
    }

    fn give_back(&mut self) {
        if std::mem::replace(&mut self.reservation, Reservation::None) == Reservation::Place {
            self.shared.queue.add_permits(1);
        }
    }
}

impl<Req, T, K> Clone for Batcher<Req, T, K> {
    /// A clone shares the queue and batches but starts with no reservation.
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl<Req, T, K> Drop for Batcher<Req, T, K> {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl<Req, T, K> fmt::Debug for Batcher<Req, T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.shared.config)
            .field("reservation", &self.reservation)
            .finish_non_exhaustive()
    }
}

struct PlaceGuard<'a>(&'a tokio::sync::Semaphore);

impl Drop for PlaceGuard<'_> {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

impl<Req, T, K> Service<Req> for Batcher<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<T>;

    /// # Errors
    ///
    /// [`Closed`] after [`BatchHandle::shutdown`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.is_closed() {
            self.give_back();
            return Poll::Ready(Err(Box::new(Closed::new())));
        }
        match self.reservation {
            Reservation::Place => return Poll::Ready(Ok(())),
            Reservation::Full | Reservation::None => {}
        }
        // Fast path without cloning the semaphore's `Arc`: take a place and forget the
        // permit; `call` or `drop` accounts for it.
        if let Ok(permit) = self.shared.queue.try_acquire() {
            permit.forget();
            self.reservation = Reservation::Place;
            return Poll::Ready(Ok(()));
        }
        match self.shared.config.overflow {
            Overflow::Reject => {
                self.reservation = Reservation::Full;
                Poll::Ready(Ok(()))
            }
            Overflow::Wait => match self.waiter.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => {
                    permit.forget();
                    self.reservation = Reservation::Place;
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(None) => Poll::Ready(Err(Box::new(Closed::new()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// # Panics
    ///
    /// If `poll_ready` did not return `Ready(Ok(()))` first, or (when the request is queued)
    /// outside a tokio runtime.
    fn call(&mut self, req: Req) -> ResponseFuture<T> {
        match std::mem::replace(&mut self.reservation, Reservation::None) {
            Reservation::None => panic!("Batcher::call without a successful poll_ready"),
            Reservation::Full => {
                self.shared.stats.rejected();
                ResponseFuture::failed(Box::new(QueueFull::new()))
            }
            Reservation::Place => {
                if self.shared.is_closed() {
                    self.shared.queue.add_permits(1);
                    return ResponseFuture::failed(Box::new(Closed::new()));
                }
                // Gives the place back if a user hook (key, weigher, deadline) panics.
                let place = PlaceGuard(&self.shared.queue);
                let rx = self.shared.submit(req);
                std::mem::forget(place);
                ResponseFuture::waiting(rx)
            }
        }
    }
}
