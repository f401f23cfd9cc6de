//! Batch routes (owned by the batch engineer).

use crate::gateway::config::ConfigError;
use serde::{Deserialize, Serialize};

/// A batch route's settings (`[routes.batch]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Path of the upstream's batch endpoint.
    pub upstream_path: String,
}

impl BatchSection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let _ = at;
        Ok(())
    }
}

/// A batch route, built once per route and kept across reloads while unchanged.
#[derive(Debug)]
pub struct BatchRoute {
    section: BatchSection,
}

impl BatchRoute {
    /// Builds the batcher of `section` over `inner` (the route's cluster).
    ///
    /// # Errors
    /// The layer refused the configuration.
    pub fn build(
        section: &BatchSection,
        route: &str,
        inner: super::route::ClusterService,
        old: Option<&std::sync::Arc<BatchRoute>>,
    ) -> Result<std::sync::Arc<Self>, ConfigError> {
        let _ = (route, inner);
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        Ok(std::sync::Arc::new(Self {
            section: section.clone(),
        }))
    }

    /// Answers one client request: its JSON body joins a batch, its answer is its element of
    /// the upstream's array.
    pub async fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<crate::gateway::proxy::RespBody> {
        let _ = req;
        crate::gateway::proxy::local_response(
            http::StatusCode::NOT_IMPLEMENTED,
            "batch routes are being built\n",
        )
    }

    /// State for `/state`.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    /// Records metrics labelled `route` into the current `metrics` recorder.
    pub fn record_metrics(&self, route: &str) {
        let _ = route;
    }
}
