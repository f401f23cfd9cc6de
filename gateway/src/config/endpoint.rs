//! A cluster endpoint as written in the file: `IP:PORT`, `HOST:PORT`, `srv:NAME` or
//! `demo:NAME`.

use std::net::SocketAddr;

/// A parsed cluster endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A literal socket address.
    Static(SocketAddr),
    /// A DNS name and port, re-resolved periodically.
    Dns(String, u16),
    /// The targets of a DNS name's SRV records (lower case, without the final dot),
    /// looked up periodically.
    Srv(String),
    /// The address of the named demo upstream.
    Demo(String),
}

impl Endpoint {
    /// Parses `IP:PORT`, `HOST:PORT`, `srv:NAME` or `demo:NAME`.
    ///
    /// # Errors
    /// A lower-case problem description.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("demo:") {
            check_name(name)?;
            return Ok(Self::Demo(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix("srv:") {
            let name = name.strip_suffix('.').unwrap_or(name);
            // Service and protocol labels start with `_` (RFC 2782).
            if !host_name(name, true) {
                return Err(format!("\"{name}\" is not a valid DNS name"));
            }
            return Ok(Self::Srv(name.to_ascii_lowercase()));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err("port must not be 0".into());
            }
            return Ok(Self::Static(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{s}\" is not HOST:PORT or IP:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("\"{port}\" in \"{s}\" is not a port number"))?;
        if port == 0 {
            return Err("port must not be 0".into());
        }
        if !host_name(host, false) {
            return Err(format!("\"{host}\" is not a valid host name"));
        }
        Ok(Self::Dns(host.to_ascii_lowercase(), port))
    }
}

/// Whether `name` is a DNS name of 1-63 byte labels of letters, digits and `-` (and `_`
/// with `underscore`).
fn host_name(name: &str, underscore: bool) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
        })
}

/// Names of listeners, clusters, policies and demos: 1-64 of `[A-Za-z0-9_-]`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("\"{name}\" must be 1-64 of [A-Za-z0-9_-]"))
    }
}
