//! `[routes.retry]`: a route's own retries over one of its clusters, in place of the
//! cluster's `[clusters.retry]`.
//!
//! Precedence: the route's section, else the cluster's. A route section with `attempts = 0`
//! turns retries off for that route: its requests go straight to the cluster's breaker, pool
//! and balancer, with no retry layer (nothing buffered, nothing counted in any budget).
//!
//! **Budget.** Where the cluster retries too and the override sizes its budget the same way
//! (the same `budget_percent` and `budget_min_per_s`, as when it leaves both at their
//! defaults), the override draws on the cluster's own budget: every request of the cluster,
//! through the override or not, earns retries for both, and together they stay within the
//! cluster's bound, as with a per-cluster retry budget and per-route retry policies. An
//! override that sizes its budget differently, or one over a cluster without retries, has its
//! own budget (tollgate-retry keeps one per layer unless told to share). Each request deposits
//! into exactly one budget, so the retries and hedges a cluster receives then stay within the
//! largest `budget_percent` of its requests plus the sum of the `budget_min_per_s` reserves.
//! Every override has its own latency estimate for hedging.
//!
//! **Reloads.** An override whose section is unchanged keeps its budget and latency estimate:
//! the kept policy wraps the cluster's new stack when the cluster's layers were rebuilt, unless
//! it shared the cluster's budget and the cluster's retries were rebuilt too (or it should now
//! share and did not): then it is built again, on the budget it should draw on.

use super::UpRequest;
use super::cluster::{ClusterCall, ClusterLayers, ClusterSvc, send_through};
use super::retry::{Retried, RetryPolicy};
use crate::config::ConfigError;
use crate::config::cluster::layer_error;
use crate::config::retry::RetrySection;
use std::sync::Arc;

/// A route's retries over one cluster's stack.
#[derive(Debug)]
pub(crate) struct RouteRetry {
    section: RetrySection,
    layers: Arc<ClusterLayers>,
    /// The policy and the cluster's stack under it; `None`: retries off (`attempts = 0`).
    retry: Option<(RetryPolicy, Retried<ClusterSvc>)>,
}

impl RouteRetry {
    /// The override `section` (validated) over `layers`, keeping `old`'s budget and latency
    /// estimate when it was built from an equal section. `at` names the section in errors.
    ///
    /// # Errors
    /// tollgate-retry refused the section (validation should have caught it first).
    pub(crate) fn build(
        section: &RetrySection,
        layers: &Arc<ClusterLayers>,
        old: Option<&Arc<RouteRetry>>,
        at: &str,
    ) -> Result<Arc<Self>, ConfigError> {
        let old = old.filter(|o| o.section == *section);
        if let Some(o) = old.filter(|o| Arc::ptr_eq(&o.layers, layers)) {
            return Ok(o.clone());
        }
        let retry = if section.attempts == 0 {
            None
        } else {
            // The cluster's policy when its budget is the one to draw on.
            let cluster = layers
                .retry()
                .filter(|(s, _)| s.same_budget(section))
                .map(|(_, p)| p);
            let kept = old
                .and_then(|o| o.retry.as_ref())
                .map(|(p, _)| p)
                .filter(|p| {
                    // Kept only while it draws on the right budget.
                    cluster.map_or(!p.shares_a_budget(), |c| p.shares_budget_with(c))
                });
            let policy = match (kept, cluster) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(c)) => RetryPolicy::sharing_budget(section, c),
                (None, None) => RetryPolicy::new(section),
            }
            .map_err(|e| layer_error(at, &e))?;
            let retried = policy.wrap(layers.stack().clone());
            Some((policy, retried))
        };
        Ok(Arc::new(Self {
            section: section.clone(),
            layers: layers.clone(),
            retry,
        }))
    }

    /// Sends `req` with the route's retries (or none), past the cluster's own retry layer.
    pub(crate) fn send(&self, req: UpRequest) -> ClusterCall {
        send_through(self.retry.as_ref(), self.layers.stack(), req)
    }

    /// Records the override's counters, labelled `route` and `cluster` (nothing when it turns
    /// retries off).
    pub(crate) fn record_metrics(&self, route: &str, cluster: &str) {
        if let Some((p, _)) = &self.retry {
            p.record_route_metrics(route, cluster);
        }
    }

    /// The override's retry state for `/state` (`None` when it turns retries off).
    pub(crate) fn state(&self) -> Option<serde_json::Value> {
        self.retry.as_ref().map(|(p, _)| {
            let mut state = p.state();
            state["budget_shared_with_cluster"] = p.shares_a_budget().into();
            state
        })
    }
}
