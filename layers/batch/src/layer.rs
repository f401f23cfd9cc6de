//! [`BatchLayer`]: builds a [`Batcher`] around a batch service.

use crate::backend::ServiceBackend;
use crate::config::BatchConfig;
use crate::execute::{fold_duplicates, unique_prefix};
use crate::queue::{Folder, Hooks, Shared};
use crate::results::BatchResults;
use crate::service::Batcher;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;
use tower_service::Service;

/// Wraps a batch service (`Service<Vec<Req>>` answering [`BatchResults`]) into a
/// `Service<Req>`, one [`Batcher`] instance per call of [`Layer::layer`].
///
/// `Req` is the single request, `T` the single response and `K` the batch key (`()` unless
/// [`with_key`](Self::with_key) is used).
pub struct BatchLayer<Req, T, K = ()> {
    config: BatchConfig,
    hooks: Hooks<Req, T, K>,
}

impl<Req, T, K> Clone for BatchLayer<Req, T, K> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            hooks: self.hooks.clone(),
        }
    }
}

impl<Req, T, K> fmt::Debug for BatchLayer<Req, T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .field("keyed", &self.hooks.key.is_some())
            .field("weighed", &self.hooks.weigher.is_some())
            .field("deadlines", &self.hooks.deadline.is_some())
            .field("folding", &self.hooks.folder.is_some())
            .finish()
    }
}

impl<Req, T> BatchLayer<Req, T, ()> {
    /// A layer with `config`, one batch queue for all requests, no weigher, no deadlines and
    /// no folding.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`BatchConfig::validate`].
    pub fn new(config: BatchConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            hooks: Hooks {
                key: None,
                weigher: None,
                deadline: None,
                folder: None,
            },
        })
    }
}

impl<Req, T, K> BatchLayer<Req, T, K> {
    /// Batches requests by key: requests with different keys (shard, tenant) never share a
    /// batch, and each key has its own flusher and `max_in_flight` batch calls.
    pub fn with_key<K2, F>(self, key: F) -> BatchLayer<Req, T, K2>
    where
        F: Fn(&Req) -> K2 + Send + Sync + 'static,
        K2: Hash + Eq + Clone + Send + Sync + 'static,
    {
        let Hooks {
            weigher,
            deadline,
            folder,
            ..
        } = self.hooks;
        BatchLayer {
            config: self.config,
            hooks: Hooks {
                key: Some(Arc::new(key)),
                weigher,
                deadline,
                folder,
            },
        }
    }

    /// Measures each request for [`BatchConfig::max_weight`] (bytes, rows, tokens...).
    /// Without a weigher every request weighs 0.
    pub fn with_weigher<F>(mut self, weigher: F) -> Self
    where
        F: Fn(&Req) -> u64 + Send + Sync + 'static,
    {
        self.hooks.weigher = Some(Arc::new(weigher));
        self
    }

    /// Reads each request's deadline. A batch holding a request whose deadline would pass
    /// before the linger ends (allowing for the mean batch call time) is sent early, and a
    /// request whose deadline has passed before its batch is sent fails with
    /// [`DeadlineExceeded`](tollgate_core::error::DeadlineExceeded) instead.
    pub fn with_deadline<F>(mut self, deadline: F) -> Self
    where
        F: Fn(&Req) -> Option<Instant> + Send + Sync + 'static,
    {
        self.hooks.deadline = Some(Arc::new(deadline));
        self
    }

    /// Folds equal requests of one batch into one item (DataLoader style): the batch service
    /// sees each distinct request once and every caller gets the result, cloned. An error
    /// shared by several callers reaches each as [`ItemFailed`](crate::error::ItemFailed)
    /// with the original as its source. `max_items` then counts distinct requests (a batch
    /// takes every caller of the ones it holds, as DataLoader's `maxBatchSize` counts keys);
    /// `max_weight` still weighs every caller, and the flush trigger still counts callers.
    pub fn with_folding(mut self) -> Self
    where
        Req: Hash + Eq,
        T: Clone,
    {
        self.hooks.folder = Some(Folder {
            fold: fold_duplicates::<Req>,
            clone: T::clone,
            unique_prefix: unique_prefix::<Req>,
        });
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }
}

impl<S, Req, T, K> Layer<S> for BatchLayer<Req, T, K>
where
    S: Service<Vec<Req>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: BatchResults<Req, Item = T>,
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Service = Batcher<Req, T, K>;

    fn layer(&self, inner: S) -> Batcher<Req, T, K> {
        let backend = Box::new(ServiceBackend(inner));
        let shared = Shared::new(self.config.clone(), self.hooks.clone(), backend);
        Batcher::from_shared(Arc::new(shared))
    }
}
