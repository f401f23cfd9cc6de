//! `[dns]`: where `srv:` endpoints are looked up.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The resolver for `srv:` endpoints (`HOST:PORT` endpoints use the system's resolver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers to ask, `IP` or `IP:PORT` (port 53 when left out), over UDP (TCP when an
    /// answer is truncated). Default empty: the system's configuration (`/etc/resolv.conf`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// How long one query waits for an answer, ms; a query is tried twice. Default 2000;
    /// 1 to 60000.
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout_ms: 2_000,
        }
    }
}

impl DnsConfig {
    /// The name servers as socket addresses.
    ///
    /// # Errors
    /// The index of the first entry that is not `IP` or `IP:PORT`, and the problem.
    pub(crate) fn servers(&self) -> Result<Vec<SocketAddr>, (usize, String)> {
        self.nameservers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.trim();
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| (i, format!("\"{s}\" is not IP or IP:PORT")))
            })
            .collect()
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first bad field, named `dns.field`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.servers()
            .map_err(|(i, p)| ConfigError::new(format!("dns.nameservers[{i}]"), p))?;
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::new(
                "dns.timeout_ms",
                "must be between 1 and 60000 ms",
            ));
        }
        Ok(())
    }
}
