//! [`RetryLayer`]: builds [`Retry`] services that share one budget.

use crate::budget::Budget;
use crate::config::RetryConfig;
use crate::policy::RetryErrors;
use crate::service::Retry;
use crate::shared::{Core, Shared};
use std::fmt;
use std::sync::Arc;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Builds [`Retry`] services. Every service it builds, and every clone of them, shares one
/// retry budget, one jitter sequence and one latency estimate.
#[derive(Clone)]
pub struct RetryLayer<P = RetryErrors> {
    core: Arc<Core>,
    policy: P,
}

impl<P> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// A layer configured by `config` that retries every error of clonable requests
    /// ([`RetryErrors`]); change the policy with [`with_policy`](RetryLayer::with_policy).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field (see [`RetryConfig::validate`]).
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            core: Arc::new(Core::new(config)),
            policy: RetryErrors,
        })
    }
}

impl<P> RetryLayer<P> {
    /// The same layer (and budget) deciding with `policy`.
    pub fn with_policy<Q>(self, policy: Q) -> RetryLayer<Q> {
        RetryLayer {
            core: self.core,
            policy,
        }
    }

    /// The budget shared by every service this layer builds (for snapshots).
    pub fn budget(&self) -> &Budget {
        &self.core.budget
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.core.config
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            Arc::new(Shared {
                core: self.core.clone(),
                policy: self.policy.clone(),
            }),
        )
    }
}
