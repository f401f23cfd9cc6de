//! HTTP caching on routes (owned by the cache engineer).

use crate::gateway::config::ConfigError;
use serde::{Deserialize, Serialize};

/// A route's cache (`[routes.cache]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Freshness of responses without `Cache-Control`, ms.
    pub default_ttl_ms: u64,
}

impl CacheSection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let _ = at;
        Ok(())
    }
}

/// A route's built cache, kept across reloads while the route and its section are unchanged.
#[derive(Debug)]
pub struct RouteCache {
    section: CacheSection,
}

impl RouteCache {
    /// Builds `section` for the route named `route`, or keeps `old` when built from an equal
    /// section. Never blocks (a Redis L3 connects in the background).
    ///
    /// # Errors
    /// The layer refused the configuration.
    pub fn build(
        section: &CacheSection,
        route: &str,
        old: Option<&std::sync::Arc<RouteCache>>,
    ) -> Result<std::sync::Arc<Self>, ConfigError> {
        let _ = route;
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        Ok(std::sync::Arc::new(Self {
            section: section.clone(),
        }))
    }

    /// Serves `req` from the cache or through `inner`.
    pub async fn call(
        &self,
        inner: super::route::RouteService,
        req: super::UpRequest,
    ) -> Result<http::Response<crate::gateway::proxy::RespBody>, tollgate_core::BoxError> {
        let resp = tower::ServiceExt::oneshot(inner, req).await?;
        Ok(resp.map(http_body_util::Either::Left))
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
