//! Fuzz entry points (`fuzz/fuzz_targets/gateway_config.rs`, `route_table.rs`,
//! `gateway_h1.rs`, `proxy_header.rs`), also replayed on the committed corpus by `tests/fuzz_replay.rs`.
//!
//! Invariants checked:
//! - `gateway_config`: parsing and validating any bytes never panics; an accepted config
//!   compiles into a route table, and its cluster stacks, admission policies and route caches
//!   (without Redis) build: the gateway's validation accepts nothing its layers refuse. An
//!   error names a field and a problem and displays as `FILE: FIELD: PROBLEM`.
//! - `route_table`: lookups never panic, the fast path's fields (httparse lines) and hyper's
//!   (`HeaderMap`) give the same answer, and it agrees with the reference predicate
//!   `route_matches` (host, path, header and query conditions, the query decoded whole): a
//!   returned route matches the request and comes first in the reference order (host rank,
//!   prefix length, number of conditions, file order) among the routes that match, and
//!   `NotFound`/`MethodNotAllowed` happen exactly when no route matches host, path and
//!   conditions / only method-mismatched ones do.
//! - `gateway_h1` (the HTTP/1.1 fast path's pure parsers, against independent httparse parses):
//!   - `head::prepare` never panics, whatever the bytes and limits. `Partial` exactly when
//!     httparse (128 slots) finds the head incomplete, `Hyper` when it errs. A complete head
//!     is the fast path's exactly when it is plain (HTTP/1.1, not `CONNECT`, an origin-form
//!     target of RFC 3986 characters, which hyper takes as it is too, within the limits, one
//!     UTF-8 `Host`, equal valid `Content-Length`s, no `Transfer-Encoding`, `Expect`, `Upgrade`
//!     or `Connection: upgrade`). Then a body over `max_body` is a local 413 and one over
//!     `max_held_body` hyper's, a body not all read yet is `NeedBody(head + body)`, all without
//!     asking the route; otherwise the route is asked (host, path, method, body length) and
//!     its answer is the outcome. `Head` ranges lie in the head, `len` is httparse's and at
//!     most the buffer and `limits.max_bytes`; `body_len`, `close`, `head_method`,
//!     `idempotent` agree with the head. A forwarded head re-parses as a whole HTTP/1.1
//!     request of `out.len()` bytes with the same method and target, one `host` (the client's
//!     or the endpoint's), no hop-by-hop field but `te: trailers` (iff the client's `TE` lists
//!     `trailers` and `Connection` does not name it), no `expect`, one `content-length` iff the
//!     client sent any, equal to `body_len`, the `x-forwarded-*` and `forwarded` values, the
//!     client's other fields in order (less any named in `Connection`), and ends with
//!     `via: 1.1 tollgate`. A head sent through the layers on the fast path's own request
//!     is that same head once the endpoint's `host` line goes where `host_at` says (right
//!     after the request line), or as it is when the client's `Host` is kept. Pipelined
//!     requests are checked in turn.
//!   - `response::prepare` never panics; `Partial`/`Bad` as httparse; `101`, a status below
//!     100, a coding in HTTP/1.0 and bad or conflicting lengths are `Bad`; other 1xx are
//!     `Informational(len)`. A final head has the reference framing and reuse, and the client
//!     head re-parses whole with the same status and reason, `transfer-encoding: chunked` iff
//!     the framing is chunked (or a `HEAD` answer whose `GET` would be), `connection: close`
//!     iff asked or close-delimited, no other hop-by-hop field, `content-length` only as
//!     received and never with a coding, the upstream's other fields in order (less any
//!     named in `Connection`; a `Date` so named is tolerated and relayed), then `via`, then a
//!     `date` when the upstream sent none. A chunked body after it is checked as below.
//!   - `Chunked::feed` gives the same end or error whole, cut anywhere and byte by byte; the end
//!     is within the bytes; after it nothing is consumed; and it agrees with the reference
//!     decoder `decode_chunked` wherever that decides.
//! - `proxy_header`: reading a PROXY protocol header never panics and never reads past the
//!   header: on success exactly the bytes `client_of` accepts as one header were taken, and a
//!   v1 header is at most 107 bytes.

mod h1;

pub use h1::gateway_h1;

use super::config::{Config, RouteConfig};
use super::route::{RouteMatch, RouteTable, route_matches};

/// Parses and validates `data` as a config file.
///
/// # Panics
/// When an invariant above fails.
pub fn gateway_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let table = RouteTable::new(&config.routes);
            assert_eq!(table.len(), config.routes.len());
            assert!(config.validate().is_ok());
            build_layers(&config);
        }
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(!e.field.is_empty() && !e.problem.is_empty(), "{e:?}");
            assert!(e.to_string().starts_with("fuzz.toml: "));
        }
    }
}

/// Builds the layers of every cluster and admission policy of an accepted config: the
/// gateway's validation must accept only what the layers themselves accept.
fn build_layers(config: &Config) {
    use super::pool::Settings;
    use super::stack::admission::AdmissionPolicy;
    use super::stack::cluster::ClusterLayers;
    use std::time::Duration;
    let settings = Settings {
        connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
        idle_timeout: Duration::from_millis(config.timeouts.idle_ms),
        max_idle: super::pool::MAX_IDLE_PER_ENDPOINT,
    };
    for c in config.clusters.iter().filter(|c| ClusterLayers::wanted(c)) {
        if let Err(e) = ClusterLayers::build(c, settings, None, None) {
            panic!("validated cluster {} does not build: {e}", c.name);
        }
    }
    for a in &config.admission {
        if let Err(e) = AdmissionPolicy::build(a, None) {
            panic!("validated admission policy {} does not build: {e}", a.name);
        }
    }
    // Route caches without a Redis L3 (an L3 starts a background connection per build).
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(c) = r.cache.as_ref().filter(|c| c.redis.is_none())
            && let Err(e) = super::stack::cache::RouteCache::build(c, "fuzz", None)
        {
            panic!("validated cache of routes[{i}] does not build: {e}");
        }
    }
}

/// Small pools the route-table fuzzer draws hosts, paths and methods from, so matches happen.
const HOSTS: &[&str] = &[
    "*",
    "a.example",
    "*.example",
    "b.a.example",
    "A.EXAMPLE",
    "x",
    "*.a.example",
];
const REQ_HOSTS: &[&str] = &[
    "a.example",
    "b.a.example:8080",
    "example",
    "X.",
    "c.example",
    "[::1]:80",
    "",
    "é.example",
];
const PREFIXES: &[&str] = &["/", "/api", "/api/", "/api/v2", "/a", "/apix", "/x/y"];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v2/z",
    "/apix",
    "/a",
    "/x/y/z",
    "",
    "/API",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "BREW"];

/// Header conditions the route-table fuzzer draws from: `(name, value, prefix, invert)`;
/// neither value nor prefix means `present`.
const HEADER_CONDS: &[(&str, Option<&str>, Option<&str>, bool)] = &[
    ("x-canary", Some("1"), None, false),
    ("X-Canary", None, None, false),
    ("x-canary", None, None, true),
    ("user-agent", None, Some("curl/"), false),
    ("x-tier", Some("gold"), None, true),
    ("x-tier", None, Some("g"), false),
];
/// Query conditions: `(name, value)`; no value means `present`.
const QUERY_CONDS: &[(&str, Option<&str>)] = &[
    ("debug", None),
    ("v", Some("2")),
    ("a b", Some("c&d")),
    ("v", Some("")),
];
/// Field lines a request may carry (a bit each).
const FIELDS: &[(&str, &[u8])] = &[
    ("x-canary", b"1"),
    ("X-CANARY", b"0"),
    ("user-agent", b"curl/8.0"),
    ("User-Agent", b"Curl/8.0"),
    ("x-tier", b"gold"),
    ("x-tier", b"silver"),
    ("x-other", b"1"),
    ("x-tier", b"g"),
];
/// Query strings a request may carry (`None`: no `?`).
const QUERIES: &[Option<&str>] = &[
    None,
    Some(""),
    Some("debug"),
    Some("v=2"),
    Some("v=%32&debug="),
    Some("a+b=c%26d"),
    Some("a%20b=c%26d&v"),
    Some("v=2%"),
    Some("&&v=&x=%zz"),
    Some("v%3D2"),
];

/// The reference ranking: what is tried earlier ranks lower.
fn rank(r: &RouteConfig) -> std::cmp::Reverse<(u8, usize, usize, usize)> {
    let host = match r.host.as_str() {
        "*" => (0, 0),
        h if h.starts_with('*') => (1, h.len() - 1),
        _ => (2, 0),
    };
    let prefix = r.path_prefix.trim_end_matches('/').len();
    let conditions = r.headers.len() + r.query.len();
    std::cmp::Reverse((host.0, host.1, prefix, conditions))
}

/// Builds a route table from `data` and checks lookups against the reference predicate.
///
/// # Panics
/// When an invariant above fails.
pub fn route_table(data: &[u8]) {
    use super::config::route::{HeaderMatch, QueryMatch};
    use super::route::Request;
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(n) = next() else { return };
    let mut routes = Vec::new();
    for _ in 0..(n % 8) {
        let (Some(h), Some(p), Some(m), Some(c)) = (next(), next(), next(), next()) else {
            break;
        };
        let methods = METHODS[..5]
            .iter()
            .enumerate()
            .filter(|(i, _)| m & (1 << i) != 0)
            .map(|(_, s)| (*s).to_owned())
            .collect();
        // Bits 0-1: header conditions, 2-3: query conditions; each picks one more byte.
        let mut headers = Vec::new();
        for _ in 0..(c & 3) {
            let (name, value, prefix, invert) =
                HEADER_CONDS[usize::from(next().unwrap_or(0)) % HEADER_CONDS.len()];
            headers.push(HeaderMatch {
                name: name.into(),
                value: value.map(Into::into),
                prefix: prefix.map(Into::into),
                present: (value.is_none() && prefix.is_none()).then_some(true),
                invert,
            });
        }
        let mut query = Vec::new();
        for _ in 0..((c >> 2) & 3) {
            let (name, value) = QUERY_CONDS[usize::from(next().unwrap_or(0)) % QUERY_CONDS.len()];
            query.push(QueryMatch {
                name: name.into(),
                value: value.map(Into::into),
                present: value.is_none().then_some(true),
            });
        }
        routes.push(RouteConfig {
            host: HOSTS[h as usize % HOSTS.len()].to_owned(),
            path_prefix: PREFIXES[p as usize % PREFIXES.len()].to_owned(),
            methods,
            headers,
            query,
            cluster: Some("c".into()),
            clusters: Vec::new(),
            sticky: None,
            request_timeout_ms: None,
            kind: Default::default(),
            admission: None,
            priority: None,
            cache: None,
            batch: None,
            retry: None,
        });
    }
    let table = RouteTable::new(&routes);
    assert_eq!(table.len(), routes.len());
    while let (Some(h), Some(p), Some(m), Some(f), Some(q)) =
        (next(), next(), next(), next(), next())
    {
        // Occasionally take a raw host or path straight from the input.
        let raw: String = std::iter::from_fn(&mut next)
            .take((h % 4) as usize)
            .map(char::from)
            .collect();
        let host = if h & 0x80 != 0 {
            raw.as_str()
        } else {
            REQ_HOSTS[h as usize % REQ_HOSTS.len()]
        };
        let path = PATHS[p as usize % PATHS.len()];
        let method = METHODS[m as usize % METHODS.len()];
        let query = QUERIES[usize::from(q) % QUERIES.len()];
        let fields: Vec<(&str, &[u8])> = FIELDS
            .iter()
            .enumerate()
            .filter(|(i, _)| f & (1 << i) != 0)
            .map(|(_, kv)| *kv)
            .collect();
        // The same request as each path holds its fields: httparse's lines, hyper's map.
        let lines: Vec<httparse::Header<'_>> = fields
            .iter()
            .map(|(name, value)| httparse::Header { name, value })
            .collect();
        let mut map = http::HeaderMap::new();
        for (name, value) in &fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let found = table.find(&Request {
            host,
            path,
            query,
            method,
            fields: lines.as_slice(),
        });
        let found_map = table.find(&Request {
            host,
            path,
            query,
            method,
            fields: &map,
        });
        assert_eq!(found, found_map, "httparse and HeaderMap fields disagree");
        let full = |r: &RouteConfig| route_matches(r, host, path, query, method, &fields);
        let any_method = |r: &RouteConfig| {
            let r = RouteConfig {
                methods: vec![],
                ..r.clone()
            };
            full(&r)
        };
        let any_path = routes.iter().any(any_method);
        match found {
            RouteMatch::Route(i) => {
                assert!(i < routes.len());
                assert!(full(&routes[i]), "{host:?} {path:?} {method} -> {i}");
                // The first in the reference order among the routes that match.
                for (j, r) in routes.iter().enumerate() {
                    if j != i && full(r) {
                        assert!(
                            (rank(&routes[i]), i) < (rank(r), j),
                            "route {i} chosen over {j}, which ranks first"
                        );
                    }
                }
            }
            RouteMatch::MethodNotAllowed => {
                assert!(any_path);
                assert!(!routes.iter().any(full));
            }
            RouteMatch::NotFound => assert!(!any_path, "{host:?} {path:?} should match"),
        }
    }
}

/// The `proxy_header` target: see the module docs.
pub fn proxy_header(data: &[u8]) {
    use std::task::{Context, Poll, Waker};
    let mut input = data;
    // Reading from a slice never waits: one poll finishes it.
    let read = {
        let mut fut = std::pin::pin!(crate::proxy_protocol::read_header(&mut input));
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("reading from a slice waited"),
        }
    };
    let taken = data.len() - input.len();
    if let Ok(client) = read {
        assert_eq!(
            crate::proxy_protocol::client_of(&data[..taken]),
            Some(client),
            "the bytes taken are the header"
        );
        if data.starts_with(b"PROXY ") {
            assert!(taken <= 107, "a v1 line of {taken} bytes");
        }
    }
}
