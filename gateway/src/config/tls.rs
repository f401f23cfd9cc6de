//! The TLS sections: `listeners[].tls` (certificates, chosen by the client's SNI name) and
//! `[clusters.tls]` (how the gateway checks an `https://` upstream and who it says it is).
//!
//! Only the settings are checked here; the files are read, and their problems named with the
//! field, when a snapshot is built (at start and on every reload).

use super::error::ConfigError;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

/// A TLS listener's certificates.
///
/// `cert`/`key` is the listener's one certificate (and, with `certs`, its default). Each entry
/// of `certs` serves the names in its `server_names`, or, when those are empty, the DNS names of
/// its certificate's subject alternative names (wildcards included). A client that sends no
/// SNI name, or one no certificate covers, gets the default: `cert`/`key` if set, else
/// `certs[0]`. The files are read again on every reload; a reload with a file that cannot be
/// used is rejected and the running certificates stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain path, relative to the working directory. Default empty (then
    /// `certs` must name at least one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert: String,
    /// PEM private key path (PKCS#8, PKCS#1 or SEC1) of `cert`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// More certificates, chosen by SNI name. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertConfig>,
}

/// One certificate of a TLS listener (`listeners[].tls.certs[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM certificate chain path.
    pub cert: String,
    /// PEM private key path.
    pub key: String,
    /// The SNI names it serves (`api.example.com`, `*.example.com`). Default: the DNS names
    /// in the certificate's subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
}

/// One certificate to load, with the field that names it in errors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CertEntry<'a> {
    /// `listeners[0].tls` or `listeners[0].tls.certs[1]`.
    pub field: String,
    pub cert: &'a str,
    pub key: &'a str,
    pub server_names: &'a [String],
}

impl TlsConfig {
    /// The certificates in order, the default first; `at` is the section's path.
    pub(crate) fn entries(&self, at: &str) -> Vec<CertEntry<'_>> {
        let single = (!self.cert.is_empty() || !self.key.is_empty()).then(|| CertEntry {
            field: at.to_owned(),
            cert: &self.cert,
            key: &self.key,
            server_names: &[],
        });
        single
            .into_iter()
            .chain(self.certs.iter().enumerate().map(|(j, c)| CertEntry {
                field: format!("{at}.certs[{j}]"),
                cert: &c.cert,
                key: &c.key,
                server_names: &c.server_names,
            }))
            .collect()
    }

    /// Checks the settings; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: String, p: &str| Err(ConfigError::new(f, p));
        if self.cert.is_empty() && self.key.is_empty() && self.certs.is_empty() {
            return e(
                format!("{at}.cert"),
                "must name a PEM certificate file (or list them in certs)",
            );
        }
        if self.cert.is_empty() != self.key.is_empty() {
            let f = if self.cert.is_empty() { "cert" } else { "key" };
            return e(
                format!("{at}.{f}"),
                "cert and key go together: name both files or neither",
            );
        }
        for (j, c) in self.certs.iter().enumerate() {
            if c.cert.is_empty() {
                return e(
                    format!("{at}.certs[{j}].cert"),
                    "must name a PEM certificate file",
                );
            }
            if c.key.is_empty() {
                return e(format!("{at}.certs[{j}].key"), "must name a PEM key file");
            }
            for (k, name) in c.server_names.iter().enumerate() {
                check_sni_pattern(name).map_err(|p| {
                    ConfigError::new(format!("{at}.certs[{j}].server_names[{k}]"), p)
                })?;
            }
        }
        Ok(())
    }
}

/// A listener's SNI name pattern: a DNS name, or `*.` and one.
fn check_sni_pattern(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    match ServerName::try_from(bare) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        _ => Err(format!(
            "\"{name}\" is not a DNS name or \"*.\" and a DNS name"
        )),
    }
}

/// `[clusters.tls]`: how the gateway speaks TLS to a cluster's `https://` endpoints.
///
/// Without this section an `https://` cluster checks its endpoints against the operating
/// system's trust store and the endpoint's host name (or IP address), and presents no client
/// certificate. There is no setting that turns certificate checks off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsSection {
    /// PEM file of the CA certificates the endpoints' certificates must chain to, instead of
    /// the system's. Default empty (the system's trust store).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// PEM certificate chain the gateway presents to the endpoints (mTLS). Default empty
    /// (none). Needs `key_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// The name sent by SNI and checked against the endpoints' certificates. Default empty:
    /// each endpoint's own host name, or its IP address for an `IP:PORT` endpoint.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
}

impl UpstreamTlsSection {
    /// Checks the settings; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            let f = if self.cert_file.is_empty() {
                "cert_file"
            } else {
                "key_file"
            };
            return Err(ConfigError::new(
                format!("{at}.{f}"),
                "cert_file and key_file go together: name both files or neither",
            ));
        }
        if !self.server_name.is_empty() && ServerName::try_from(self.server_name.as_str()).is_err()
        {
            return Err(ConfigError::new(
                format!("{at}.server_name"),
                format!(
                    "\"{}\" is not a DNS name or an IP address",
                    self.server_name
                ),
            ));
        }
        Ok(())
    }
}
