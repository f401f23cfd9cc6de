//! The admission layer.

use crate::capacity::Capacity;
use crate::classify::OneClass;
use crate::config::{AdmissionConfig, ReadyMode};
use crate::controller::{Controller, LimitSource, Shards};
use crate::handle::AdmissionHandle;
use crate::service::{Admission, Parts};
use std::fmt;
use std::sync::Arc;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Wraps services in [`Admission`]. Every service made by one layer (and its clones) shares one
/// set of queues and one limit, so a server that builds a service per connection still admits
/// against a single capacity.
pub struct AdmissionLayer<P = OneClass> {
    /// What every service this layer makes shares: built once, so that `layer` allocates
    /// nothing (a server may wrap a fresh inner service per request).
    parts: Arc<Parts<P>>,
    mode: ReadyMode,
}

impl AdmissionLayer<OneClass> {
    /// A layer with a fixed limit (`config.limit`), putting every request in class 0 until
    /// [`prioritize`](Self::prioritize) says otherwise.
    ///
    /// # Errors
    ///
    /// The config's first invalid field, from [`AdmissionConfig::validate`].
    pub fn new(config: AdmissionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let limit = LimitSource::Fixed(config.limit);
        Ok(Self::build(&config, limit))
    }

    /// A layer whose limit comes from `capacity` (an adaptive limit); `config.limit` is unused
    /// except to check reservations against. tollgate-pool's `Limiter` is a [`Capacity`]: each
    /// admitted request then holds one of its permits, so the pool times it and learns.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate_admission::{AdmissionConfig, AdmissionLayer};
    /// use tollgate_pool::{Limiter, PoolConfig};
    ///
    /// let limiter = Limiter::new(PoolConfig::default()).unwrap();
    /// let layer = AdmissionLayer::with_capacity(AdmissionConfig::default(), Arc::new(limiter))
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    ///
    /// # Errors
    ///
    /// The config's first invalid field, from [`AdmissionConfig::validate`].
    pub fn with_capacity(
        config: AdmissionConfig,
        capacity: Arc<dyn Capacity>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(&config, LimitSource::Dynamic(capacity)))
    }

    fn build(config: &AdmissionConfig, limit: LimitSource) -> Self {
        Self {
            parts: Arc::new(Parts {
                shards: Arc::new(Shards::new(Controller::new(config, limit))),
                prioritizer: Arc::new(OneClass(0)),
            }),
            mode: config.ready_mode,
        }
    }
}

impl<P> AdmissionLayer<P> {
    /// Uses `prioritizer` to put requests in classes (a closure `Fn(&Req) -> usize` or
    /// `-> Ticket`, or a [`Prioritize`](crate::Prioritize) type).
    pub fn prioritize<Q>(self, prioritizer: Q) -> AdmissionLayer<Q> {
        AdmissionLayer {
            parts: Arc::new(Parts {
                shards: self.parts.shards.clone(),
                prioritizer: Arc::new(prioritizer),
            }),
            mode: self.mode,
        }
    }

    /// A handle to observe the layer and change its limit.
    pub fn handle(&self) -> AdmissionHandle {
        AdmissionHandle::new(self.parts.shards.clone())
    }
}

impl<P> Clone for AdmissionLayer<P> {
    fn clone(&self) -> Self {
        Self {
            parts: self.parts.clone(),
            mode: self.mode,
        }
    }
}

impl<P> fmt::Debug for AdmissionLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, P> Layer<S> for AdmissionLayer<P> {
    type Service = Admission<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission::new(inner, self.parts.clone(), self.mode)
    }
}
