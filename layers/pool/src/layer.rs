//! The layers: [`PoolSizerLayer`] and [`DeferredPoolSizerLayer`].

use crate::config::PoolConfig;
use crate::deferred::DeferredPoolSizer;
use crate::limiter::Limiter;
use crate::service::PoolSizer;
use tollgate_core::ErrorsAreFailures;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Wraps services in a [`PoolSizer`]; every service it builds shares one [`Limiter`].
#[derive(Debug, Clone)]
pub struct PoolSizerLayer<C = ErrorsAreFailures> {
    limiter: Limiter,
    classify: C,
}

impl PoolSizerLayer {
    /// A layer around `limiter` that counts every inner error as a failure.
    pub fn new(limiter: Limiter) -> Self {
        Self {
            limiter,
            classify: ErrorsAreFailures,
        }
    }

    /// A layer with a new limiter built from `config`.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`PoolConfig::validate`].
    pub fn from_config(config: PoolConfig) -> Result<Self, ConfigError> {
        Ok(Self::new(Limiter::new(config)?))
    }
}

impl<C> PoolSizerLayer<C> {
    /// Classifies results with `classify` (a [`Classify`](tollgate_core::Classify)) instead.
    pub fn classify<C2>(self, classify: C2) -> PoolSizerLayer<C2> {
        PoolSizerLayer {
            limiter: self.limiter,
            classify,
        }
    }

    /// Takes permits in the response future instead of `poll_ready`.
    pub fn deferred(self) -> DeferredPoolSizerLayer<C> {
        DeferredPoolSizerLayer {
            limiter: self.limiter,
            classify: self.classify,
        }
    }

    /// The shared limiter (for snapshots, or to acquire permits directly).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// A handle on the shared limiter, like every layer's: watch it with
    /// [`snapshot`](Limiter::snapshot).
    pub fn handle(&self) -> crate::PoolHandle {
        self.limiter.clone()
    }

    /// For `http::Response`s: holds each permit until the response body ends, not just the
    /// headers (feature `http-body`).
    #[cfg(feature = "http-body")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http-body")))]
    pub fn hold_until_body_ends(self) -> crate::body::BodyPoolSizerLayer<C> {
        crate::body::BodyPoolSizerLayer {
            limiter: self.limiter,
            classify: self.classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for PoolSizerLayer<C> {
    type Service = PoolSizer<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolSizer::new(inner, self.limiter.clone(), self.classify.clone())
    }
}

/// Wraps services in a [`DeferredPoolSizer`]; from [`PoolSizerLayer::deferred`].
#[derive(Debug, Clone)]
pub struct DeferredPoolSizerLayer<C = ErrorsAreFailures> {
    limiter: Limiter,
    classify: C,
}

impl<C> DeferredPoolSizerLayer<C> {
    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// A handle on the shared limiter, like every layer's: watch it with
    /// [`snapshot`](Limiter::snapshot).
    pub fn handle(&self) -> crate::PoolHandle {
        self.limiter.clone()
    }
}

impl<S, C: Clone> Layer<S> for DeferredPoolSizerLayer<C> {
    type Service = DeferredPoolSizer<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        DeferredPoolSizer::new(inner, self.limiter.clone(), self.classify.clone())
    }
}
