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

    /// A layer configured by `config` that draws its retries and hedges from `budget`, shared
    /// with the layers it came from, instead of a budget of its own: several retry policies
    /// over one backend (a route that retries differently from the rest of its cluster) then
    /// stay within one bound. `config.budget` is not used; the shared budget's settings apply.
    ///
    /// ```
    /// use tollgate_retry::{RetryConfig, RetryLayer};
    ///
    /// let cluster = RetryLayer::new(RetryConfig::default()).unwrap();
    /// let eager = RetryConfig { max_attempts: 4, ..RetryConfig::default() };
    /// let route = RetryLayer::with_budget(eager, cluster.budget().clone()).unwrap();
    /// assert!(route.budget().is_shared_with(cluster.budget()));
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field (see [`RetryConfig::validate`]).
    pub fn with_budget(config: RetryConfig, budget: Budget) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            core: Arc::new(Core::with_budget(config, budget)),
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
