//! What every service built by one layer shares: the budget, the jitter, the latency estimator.

use crate::backoff::Jitter;
use crate::budget::Budget;
use crate::config::RetryConfig;
use crate::latency::LatencyEstimator;
use std::sync::Arc;

/// Shared by every service of one layer.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) config: RetryConfig,
    pub(crate) budget: Budget,
    pub(crate) jitter: Jitter,
    pub(crate) estimator: Option<LatencyEstimator>,
}

impl Core {
    pub(crate) fn new(config: RetryConfig) -> Self {
        let budget = Budget::new(&config.budget);
        Self::with_budget(config, budget)
    }

    /// With `budget` (shared with other layers) instead of one sized by `config.budget`.
    pub(crate) fn with_budget(config: RetryConfig, budget: Budget) -> Self {
        Self {
            budget,
            jitter: Jitter::new(config.seed),
            estimator: config.hedge.as_ref().map(LatencyEstimator::new),
            config,
        }
    }
}

/// Shared by one service and its clones (and their response futures): one `Arc` clone per call.
#[derive(Debug)]
pub(crate) struct Shared<P> {
    pub(crate) core: Arc<Core>,
    pub(crate) policy: P,
}
