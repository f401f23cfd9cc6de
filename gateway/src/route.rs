//! Route matching: host, path prefix and method to a cluster index.
//!
//! Pure and allocation-free per lookup, so it is fuzzed (`fuzz/fuzz_targets/route_table.rs`)
//! and benchmarked without I/O. Routes are ordered most specific first: exact host, then
//! wildcard host (longer suffix first), then any host; within those, longer path prefix first;
//! then file order. The first route whose host and path match and which allows the method wins.

use super::config::RouteConfig;

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// Lower-case host, exact.
    Exact(String),
    /// Lower-case suffix including the leading dot (`.example.com`).
    Suffix(String),
}

impl HostMatch {
    fn new(pattern: &str) -> Self {
        let p = pattern.to_ascii_lowercase();
        if p == "*" {
            Self::Any
        } else if let Some(rest) = p.strip_prefix('*') {
            Self::Suffix(rest.to_owned())
        } else {
            Self::Exact(p)
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (2, 0),
            Self::Suffix(s) => (1, s.len()),
            Self::Any => (0, 0),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h.eq_ignore_ascii_case(host),
            Self::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    host: HostMatch,
    prefix: String,
    /// Bit per entry of `METHOD_BITS`; `u16::MAX` means any method.
    methods: u16,
    /// Index into the config's `routes`.
    index: usize,
}

const METHOD_BITS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

fn method_bit(method: &str) -> u16 {
    METHOD_BITS
        .iter()
        .position(|m| *m == method)
        .map_or(0, |i| 1 << i)
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteMatch {
    /// The route at this index of the config's `routes` matched.
    Route(usize),
    /// Some route matched host and path but none allows the method (405).
    MethodNotAllowed,
    /// No route matched host and path (404).
    NotFound,
}

/// Routes compiled for lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles routes (assumed validated: unknown methods never match).
    pub(crate) fn new(routes: &[RouteConfig]) -> Self {
        let mut compiled: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                host: HostMatch::new(&r.host),
                prefix: r.path_prefix.trim_end_matches('/').to_owned(),
                methods: if r.methods.is_empty() {
                    u16::MAX
                } else {
                    r.methods.iter().fold(0, |acc, m| acc | method_bit(m))
                },
                index,
            })
            .collect();
        // Stable sort: ties keep file order.
        compiled.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        Self { routes: compiled }
    }

    /// Number of routes.
    #[cfg(any(fuzzing, feature = "fuzzing"))]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Finds the route for a request. `host` may carry a port and a trailing dot; `path` is the
    /// URI path (no query).
    pub(crate) fn find(&self, host: &str, path: &str, method: &str) -> RouteMatch {
        let host = normalize_host(host);
        let bit = method_bit(method);
        let mut path_matched = false;
        for r in &self.routes {
            if r.host.matches(host) && prefix_matches(&r.prefix, path) {
                if r.methods == u16::MAX || r.methods & bit != 0 {
                    return RouteMatch::Route(r.index);
                }
                path_matched = true;
            }
        }
        if path_matched {
            RouteMatch::MethodNotAllowed
        } else {
            RouteMatch::NotFound
        }
    }
}

/// Strips a port and a trailing dot: `Example.com.:8080` → `Example.com`. IPv6 literals keep
/// their brackets.
pub(crate) fn normalize_host(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Segment-aware prefix match; `prefix` has no trailing slash (`""` is the root).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The reference semantics the fuzz target checks [`RouteTable::find`] against: does config
/// route `r` match this request?
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub(crate) fn route_matches(r: &RouteConfig, host: &str, path: &str, method: &str) -> bool {
    HostMatch::new(&r.host).matches(normalize_host(host))
        && prefix_matches(r.path_prefix.trim_end_matches('/'), path)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, prefix: &str, methods: &[&str], cluster: &str) -> RouteConfig {
        RouteConfig {
            host: host.into(),
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| (*m).into()).collect(),
            cluster: cluster.into(),
            request_timeout_ms: None,
            kind: Default::default(),
            admission: None,
            priority: None,
            cache: None,
            batch: None,
        }
    }

    #[test]
    fn most_specific_wins() {
        let t = RouteTable::new(&[
            route("*", "/", &[], "any"),
            route("*", "/api", &[], "api"),
            route("*.example.com", "/", &[], "wild"),
            route("www.example.com", "/", &[], "exact"),
            route("*", "/api/v2", &["POST"], "v2post"),
        ]);
        assert_eq!(t.find("other", "/x", "GET"), RouteMatch::Route(0));
        assert_eq!(t.find("other:8080", "/api/x", "GET"), RouteMatch::Route(1));
        assert_eq!(t.find("other", "/apix", "GET"), RouteMatch::Route(0));
        assert_eq!(t.find("a.Example.com", "/api", "GET"), RouteMatch::Route(2));
        assert_eq!(
            t.find("WWW.example.com.", "/api", "GET"),
            RouteMatch::Route(3)
        );
        assert_eq!(t.find("example.com", "/", "GET"), RouteMatch::Route(0));
        assert_eq!(t.find("h", "/api/v2/x", "POST"), RouteMatch::Route(4));
        assert_eq!(t.find("h", "/api/v2/x", "GET"), RouteMatch::Route(1));
    }

    #[test]
    fn method_not_allowed_and_not_found() {
        let t = RouteTable::new(&[route("*", "/only", &["GET", "HEAD"], "c")]);
        assert_eq!(t.find("h", "/only", "HEAD"), RouteMatch::Route(0));
        assert_eq!(t.find("h", "/only", "DELETE"), RouteMatch::MethodNotAllowed);
        assert_eq!(t.find("h", "/other", "GET"), RouteMatch::NotFound);
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("a.b:80"), "a.b");
        assert_eq!(normalize_host("a.b."), "a.b");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("é:x"), "é:x");
    }
}
