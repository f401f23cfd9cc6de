//! `[tracing]`: W3C trace context and OTLP span export. Absent (the default), the gateway
//! reads and writes no `traceparent` and makes no spans.

use super::error::ConfigError;
use serde::{Deserialize, Serialize};

/// `[tracing]`: where spans go and how many requests get them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/HTTP collector's base URL (`http://host:port`); spans are posted as protobuf
    /// to its `/v1/traces`. Plain `http://` only. Required.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute of every span. Default `tollgate`.
    pub service_name: String,
    /// The share of new traces that are sampled (exported and marked sampled upstream), 0.0
    /// to 1.0. A continued trace follows the client's sampled flag. Default 1.0.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "tollgate".into(),
            sample_ratio: 1.0,
        }
    }
}

impl TracingConfig {
    /// The URL spans are posted to: the endpoint's `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first bad field, named `tracing.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.otlp_endpoint.as_str();
        let uri = url.parse::<http::Uri>().ok();
        let ok = url.starts_with("http://")
            && uri.as_ref().is_some_and(|u| u.authority().is_some())
            && uri.as_ref().is_none_or(|u| u.query().is_none());
        if !ok {
            return Err(ConfigError::new(
                "tracing.otlp_endpoint",
                "must be a plain http:// URL such as \"http://127.0.0.1:4318\"",
            ));
        }
        if self.service_name.is_empty() || self.service_name.len() > 255 {
            return Err(ConfigError::new(
                "tracing.service_name",
                "must be 1 to 255 bytes",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::new(
                "tracing.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }
}
