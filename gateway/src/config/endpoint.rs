//! A cluster endpoint as written in the file: `IP:PORT`, `HOST:PORT`, `srv:NAME` or
//! `demo:NAME`, the first three optionally `https://` (TLS; port 443 when left out).

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
    /// Parses `IP:PORT`, `HOST:PORT`, `srv:NAME` or `demo:NAME`; an `https://` in front is
    /// taken off (see [`Endpoint::is_tls`]), with port 443 when none follows.
    ///
    /// # Errors
    /// A lower-case problem description.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix(HTTPS) {
            if rest.starts_with("demo:") {
                return Err("demo upstreams speak plain HTTP: leave out https://".into());
            }
            let with_port = if rest.parse::<SocketAddr>().is_ok() || has_port(rest) {
                rest.to_owned()
            } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{rest}]:443")
            } else {
                format!("{rest}:443")
            };
            return Self::parse(&with_port).map_err(|p| format!("{p} (in \"{s}\")"));
        }
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

const HTTPS: &str = "https://";

impl Endpoint {
    /// Whether the endpoint as written speaks TLS (`https://...`).
    pub fn is_tls(s: &str) -> bool {
        s.starts_with(HTTPS)
    }
}

/// Whether `s` (`HOST:PORT`, `[IPv6]:PORT`) ends in a port.
fn has_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty() && !h.ends_with(':'))
        && !s.ends_with(']')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_parse_with_port_443_by_default() {
        let ok = |s: &str| Endpoint::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            ok("https://127.0.0.1:8443"),
            Endpoint::Static("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            ok("https://127.0.0.1"),
            Endpoint::Static("127.0.0.1:443".parse().unwrap())
        );
        assert_eq!(
            ok("https://[::1]"),
            Endpoint::Static("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            ok("https://Api.Example.com"),
            Endpoint::Dns("api.example.com".into(), 443)
        );
        assert_eq!(
            ok("https://api.example.com:8443"),
            Endpoint::Dns("api.example.com".into(), 8443)
        );
        assert!(Endpoint::is_tls("https://x:1") && !Endpoint::is_tls("x:1"));
        for bad in [
            "https://",
            "https://demo:fast",
            "https://a..b",
            "https://host:0",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
