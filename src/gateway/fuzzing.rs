//! Fuzz entry points (`fuzz/fuzz_targets/gateway_config.rs`, `route_table.rs`), also replayed
//! on the committed corpus by `tests/fuzz_replay.rs`.
//!
//! Invariants checked:
//! - `gateway_config`: parsing and validating any bytes never panics; an accepted config
//!   compiles into a route table, and its cluster stacks, admission policies and route caches
//!   (without Redis) build: the gateway's validation accepts nothing its layers refuse. An
//!   error names a field and a problem and displays as `FILE: FIELD: PROBLEM`.
//! - `route_table`: lookups never panic, and agree with the reference predicate
//!   [`route_matches`]: a returned route matches the request, every route ranked more specific
//!   that also matches is ruled out by its methods, and `NotFound`/`MethodNotAllowed` happen
//!   exactly when no route matches host and path / only method-mismatched ones do.

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
        if let Err(e) = ClusterLayers::build(c, settings, None) {
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
