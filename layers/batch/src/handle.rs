//! [`BatchHandle`]: statistics and graceful shutdown.

use crate::queue::Shared;
use crate::stats::BatchSnapshot;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Observes and shuts down one batch layer instance; get it from
/// [`Batcher::handle`](crate::service::Batcher::handle). Cheap to clone.
pub struct BatchHandle<Req, T, K = ()> {
    pub(crate) shared: Arc<Shared<Req, T, K>>,
}

impl<Req, T, K> Clone for BatchHandle<Req, T, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Req, T, K> fmt::Debug for BatchHandle<Req, T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchHandle").finish_non_exhaustive()
    }
}

impl<Req, T, K> BatchHandle<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Batch sizes, linger, queue depth, flush reasons and rejections so far.
    pub fn snapshot(&self) -> BatchSnapshot {
        self.shared
            .stats
            .snapshot(self.shared.depth(), self.shared.keyed.len())
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Stops taking requests and flushes what is queued at once, without lingering.
    ///
    /// New requests fail with [`Closed`](tollgate_core::error::Closed) (and `poll_ready`
    /// returns it). The returned future resolves when every queued request has been sent and
    /// every batch call has finished; awaiting it is optional.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.close();
        let shared = self.shared.clone();
        async move {
            loop {
                let notified = shared.drained.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if shared.depth() == 0 && shared.stats.snapshot(0, 0).in_flight == 0 {
                    return;
                }
                notified.await;
            }
        }
    }
}
