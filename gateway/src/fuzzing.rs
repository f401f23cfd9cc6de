//! Fuzz entry points (`fuzz/fuzz_targets/gateway_config.rs`, `route_table.rs`,
//! `gateway_h1.rs`, `proxy_header.rs`), also replayed on the committed corpus by `tests/fuzz_replay.rs`.
//!
//! Invariants checked:
//! - `gateway_config`: parsing and validating any bytes never panics; an accepted config
//!   compiles into a route table, and its cluster stacks, admission policies and route caches
//!   (without Redis) build: the gateway's validation accepts nothing its layers refuse. An
//!   error names a field and a problem and displays as `FILE: FIELD: PROBLEM`.
//! - `route_table`: lookups never panic, and agree with the reference predicate
//!   `route_matches`: a returned route matches the request, every route ranked more specific
//!   that also matches is ruled out by its methods, and `NotFound`/`MethodNotAllowed` happen
//!   exactly when no route matches host and path / only method-mismatched ones do.
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
//!     `via: 1.1 tollgate`. Pipelined requests are checked in turn.
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

/// Builds a route table from `data` and checks lookups against the reference predicate.
///
/// # Panics
/// When an invariant above fails.
pub fn route_table(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(n) = next() else { return };
    let mut routes = Vec::new();
    for _ in 0..(n % 8) {
        let (Some(h), Some(p), Some(m)) = (next(), next(), next()) else {
            break;
        };
        let methods = METHODS[..5]
            .iter()
            .enumerate()
            .filter(|(i, _)| m & (1 << i) != 0)
            .map(|(_, s)| (*s).to_owned())
            .collect();
        routes.push(RouteConfig {
            host: HOSTS[h as usize % HOSTS.len()].to_owned(),
            path_prefix: PREFIXES[p as usize % PREFIXES.len()].to_owned(),
            methods,
            cluster: "c".into(),
            request_timeout_ms: None,
            kind: Default::default(),
            admission: None,
            priority: None,
            cache: None,
            batch: None,
        });
    }
    let table = RouteTable::new(&routes);
    while let (Some(h), Some(p), Some(m)) = (next(), next(), next()) {
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
        let any_path = routes.iter().any(|r| {
            route_matches(
                &RouteConfig {
                    methods: vec![],
                    ..r.clone()
                },
                host,
                path,
                method,
            )
        });
        match table.find(host, path, method) {
            RouteMatch::Route(i) => {
                assert!(i < routes.len());
                assert!(
                    route_matches(&routes[i], host, path, method),
                    "{host:?} {path:?} {method} -> {i}"
                );
            }
            RouteMatch::MethodNotAllowed => {
                assert!(any_path);
                assert!(!routes.iter().any(|r| route_matches(r, host, path, method)));
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
