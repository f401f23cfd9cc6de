//! Priority admission on routes and listeners (owned by the admission engineer).

use crate::gateway::config::ConfigError;
use serde::{Deserialize, Serialize};

/// A named priority-admission policy (`[[admission]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    /// Name that routes and listeners refer to. Required, unique.
    pub name: String,
}

impl AdmissionSection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
        }
        Ok(())
    }
}

/// What admission knows of a request besides the request itself.
#[derive(Debug, Clone)]
pub struct AdmitCtx {
    /// The client's address.
    pub client: std::net::IpAddr,
    /// The route's `priority` class name, if it sets one.
    pub route_class: Option<std::sync::Arc<str>>,
}

/// A built admission policy, shared by every route and listener that names it, and kept
/// across reloads while its section is unchanged.
#[derive(Debug)]
pub struct AdmissionPolicy {
    section: AdmissionSection,
}

impl AdmissionPolicy {
    /// Builds `section`, or keeps `old` when it was built from an equal section.
    ///
    /// # Errors
    /// The layer refused the configuration.
    pub fn build(
        section: &AdmissionSection,
        old: Option<&std::sync::Arc<AdmissionPolicy>>,
    ) -> Result<std::sync::Arc<Self>, ConfigError> {
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        Ok(std::sync::Arc::new(Self {
            section: section.clone(),
        }))
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.section.name
    }

    /// Admits `req` into `inner` (or rejects it with a tollgate rejection error).
    pub fn call<S: super::UpstreamService>(
        &self,
        inner: S,
        req: super::UpRequest,
        ctx: &AdmitCtx,
    ) -> impl std::future::Future<Output = Result<super::UpResponse, tollgate_core::BoxError>>
    + Send
    + 'static {
        let _ = ctx;
        tower::ServiceExt::oneshot(inner, req)
    }

    /// The policy's state for `/state`.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.section.name })
    }

    /// Records the policy's metrics into the current `metrics` recorder.
    pub fn record_metrics(&self) {}
}
