//! Validation of a parsed [`Config`]: every field checked, the error naming it.

use super::endpoint::{Endpoint, check_name};
use super::{Config, ConfigError, RouteKind, cluster, route};
use std::net::SocketAddr;

/// Methods a route may name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Config {
    /// Checks every field; the error's `file` is left empty for the caller to fill.
    ///
    /// # Errors
    /// The first problem found, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn e(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
            ConfigError::new(field, problem)
        }
        if self.server.workers > 1024 {
            return Err(e(
                "server.workers",
                "must be at most 1024 (0 means one per core)",
            ));
        }
        if self.server.drain_timeout_ms > 3_600_000 {
            return Err(e(
                "server.drain_timeout_ms",
                "must be at most 3600000 (one hour)",
            ));
        }
        if !self.admin.listen.is_empty() {
            parse_addr(&self.admin.listen).map_err(|p| e("admin.listen", p))?;
        }
        let rid = &self.server.request_id_header;
        if !rid.is_empty()
            && (rid.len() > crate::request_id::MAX_NAME
                || http::HeaderName::from_bytes(rid.as_bytes()).is_err()
                || rid.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(e(
                "server.request_id_header",
                format!(
                    "\"{rid}\" is not a lower-case header field name of at most {} bytes",
                    crate::request_id::MAX_NAME
                ),
            ));
        }
        self.dns.validate()?;
        if let Some(t) = &self.tracing {
            t.validate()?;
        }
        crate::forwarded::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|(i, p)| e(format!("server.trusted_proxies[{i}]"), p))?;
        let t = &self.timeouts;
        for (name, v) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.header_read_ms", t.header_read_ms),
            ("timeouts.request_ms", t.request_ms),
            ("timeouts.idle_ms", t.idle_ms),
            ("timeouts.park_ms", t.park_ms),
            ("timeouts.upgrade_idle_ms", t.upgrade_idle_ms),
        ] {
            if v == 0 || v > 86_400_000 {
                return Err(e(name, "must be between 1 and 86400000 ms"));
            }
        }
        let l = &self.limits;
        if !(8192..=16 * 1024 * 1024).contains(&l.max_header_bytes) {
            return Err(e(
                "limits.max_header_bytes",
                "must be between 8192 and 16777216 bytes",
            ));
        }
        if !(1..=10_000).contains(&l.max_headers) {
            return Err(e("limits.max_headers", "must be between 1 and 10000"));
        }
        if self.listeners.is_empty() {
            return Err(e("listeners", "at least one listener is required"));
        }
        for (i, lc) in self.listeners.iter().enumerate() {
            let at = |f: &str| format!("listeners[{i}].{f}");
            check_name(&lc.name).map_err(|p| e(at("name"), p))?;
            if self.listeners[..i].iter().any(|o| o.name == lc.name) {
                return Err(e(
                    at("name"),
                    format!("duplicate listener name \"{}\"", lc.name),
                ));
            }
            let addr = parse_addr(&lc.listen).map_err(|p| e(at("listen"), p))?;
            // Every worker binds each listener with `SO_REUSEPORT`, so two listeners on one
            // address would both start and split its connections between them.
            for (j, other) in self.listeners[..i].iter().enumerate() {
                if parse_addr(&other.listen).is_ok_and(|o| addrs_overlap(o, addr)) {
                    return Err(e(
                        at("listen"),
                        format!("\"{}\" is already the address of listeners[{j}]", lc.listen),
                    ));
                }
            }
            if parse_addr(&self.admin.listen).is_ok_and(|o| addrs_overlap(o, addr)) {
                return Err(e(
                    at("listen"),
                    format!("\"{}\" is already the admin listener's address", lc.listen),
                ));
            }
            if let Some(tls) = &lc.tls {
                tls.validate(&at("tls"))?;
            }
        }
        for (i, a) in self.admission.iter().enumerate() {
            let at = format!("admission[{i}]");
            check_name(&a.name).map_err(|p| e(format!("{at}.name"), p))?;
            if self.admission[..i].iter().any(|o| o.name == a.name) {
                return Err(e(
                    format!("{at}.name"),
                    format!("duplicate admission policy name \"{}\"", a.name),
                ));
            }
            a.validate(&at)?;
        }
        let known_policy = |name: &Option<String>, field: String| match name {
            Some(n) if !self.admission.iter().any(|a| &a.name == n) => {
                Err(e(field, format!("names unknown admission policy \"{n}\"")))
            }
            _ => Ok(()),
        };
        for (i, lc) in self.listeners.iter().enumerate() {
            known_policy(&lc.admission, format!("listeners[{i}].admission"))?;
        }
        for (i, d) in self.demo.iter().enumerate() {
            let at = |f: &str| format!("demo[{i}].{f}");
            check_name(&d.name).map_err(|p| e(at("name"), p))?;
            if self.demo[..i].iter().any(|o| o.name == d.name) {
                return Err(e(at("name"), format!("duplicate demo name \"{}\"", d.name)));
            }
            let addr = parse_addr(&d.listen).map_err(|p| e(at("listen"), p))?;
            if !addr.ip().is_loopback() {
                return Err(e(at("listen"), "demo upstreams listen on loopback only"));
            }
            if d.delay_ms > 600_000 {
                return Err(e(at("delay_ms"), "must be at most 600000 ms"));
            }
            if !(1..=10_000).contains(&d.workers) {
                return Err(e(at("workers"), "must be between 1 and 10000"));
            }
            if !(0.0..1.0).contains(&d.jitter) {
                return Err(e(at("jitter"), "must be at least 0 and below 1"));
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let at = |f: &str| format!("clusters[{i}].{f}");
            check_name(&c.name).map_err(|p| e(at("name"), p))?;
            if self.clusters[..i].iter().any(|o| o.name == c.name) {
                return Err(e(
                    at("name"),
                    format!("duplicate cluster name \"{}\"", c.name),
                ));
            }
            if c.endpoints.is_empty() {
                return Err(e(at("endpoints"), "at least one endpoint is required"));
            }
            for (j, ep) in c.endpoints.iter().enumerate() {
                let p = match Endpoint::parse(ep) {
                    Ok(Endpoint::Demo(name)) if !self.demo.iter().any(|d| d.name == name) => {
                        Err(format!("names unknown demo upstream \"{name}\""))
                    }
                    Ok(_) => Ok(()),
                    Err(p) => Err(p),
                };
                p.map_err(|p| e(format!("clusters[{i}].endpoints[{j}]"), p))?;
            }
            check_tls(c).map_err(|(f, p)| e(at(&f), p))?;
            if !(100..=86_400_000).contains(&c.resolve_interval_ms) {
                return Err(e(
                    at("resolve_interval_ms"),
                    "must be between 100 and 86400000 ms",
                ));
            }
            if let Some(b) = &c.balance {
                cluster::validate_balance(b, &at("balance"))?;
                if c.health_check.is_none() && b.health != cluster::HealthConfig::default() {
                    return Err(e(
                        at("balance.health"),
                        "sets the timing of health checks that are off: add \
                         [clusters.health_check] (with its `path`) to turn them on",
                    ));
                }
            }
            if let Some(h) = &c.health_check {
                h.validate(&at("health_check"))?;
            }
            if let Some(b) = &c.breaker {
                cluster::validate_breaker(b, &at("breaker"))?;
            }
            if let Some(b) = &c.endpoint_breaker {
                cluster::validate_breaker(b, &at("endpoint_breaker"))?;
            }
            if let Some(p) = &c.pool {
                cluster::validate_pool(p, &at("pool"))?;
            }
            if let Some(r) = &c.retry {
                r.validate(&at("retry"))?;
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].{f}");
            check_host_pattern(&r.host).map_err(|p| e(at("host"), p))?;
            if !r.path_prefix.starts_with('/') {
                return Err(e(at("path_prefix"), "must start with '/'"));
            }
            if r.path_prefix
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'?')
            {
                return Err(e(
                    at("path_prefix"),
                    "must not contain spaces, control bytes or '?'",
                ));
            }
            for (j, m) in r.methods.iter().enumerate() {
                if !METHODS.contains(&m.as_str()) {
                    return Err(e(
                        format!("routes[{i}].methods[{j}]"),
                        format!("unknown method \"{m}\" (use upper case, e.g. GET)"),
                    ));
                }
            }
            self.check_route_match(r, i)?;
            if let Some(ms) = r.request_timeout_ms
                && (ms == 0 || ms > 86_400_000)
            {
                return Err(e(
                    at("request_timeout_ms"),
                    "must be between 1 and 86400000 ms",
                ));
            }
            known_policy(&r.admission, at("admission"))?;
            if let Some(class) = &r.priority {
                check_priority(self, r, class).map_err(|p| e(at("priority"), p))?;
            }
            match (r.kind, &r.batch) {
                (RouteKind::Batch, None) => {
                    return Err(e(
                        at("batch"),
                        "a route of kind \"batch\" needs a [routes.batch] table",
                    ));
                }
                (RouteKind::Proxy, Some(_)) => {
                    return Err(e(
                        at("batch"),
                        "only routes of kind \"batch\" take a batch table",
                    ));
                }
                (RouteKind::Batch, Some(b)) => {
                    b.validate(&at("batch"))?;
                    if r.cache.is_some() {
                        return Err(e(at("cache"), "a batch route cannot be cached"));
                    }
                }
                (RouteKind::Proxy, None) => {}
            }
            if let Some(c) = &r.cache {
                c.validate(&at("cache"))?;
            }
            if let Some(retry) = &r.retry {
                if r.kind == RouteKind::Batch {
                    return Err(e(
                        at("retry"),
                        "a batch route's requests take its cluster's retries; set them in \
                         [clusters.retry]",
                    ));
                }
                retry.validate(&at("retry"))?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// A route's conditions and its cluster or split.
    fn check_route_match(&self, r: &super::RouteConfig, i: usize) -> Result<(), ConfigError> {
        let at = format!("routes[{i}]");
        if r.headers.len() + r.query.len() > route::MAX_CONDITIONS {
            return Err(ConfigError::new(
                format!("{at}.headers"),
                format!(
                    "at most {} header and query conditions in all",
                    route::MAX_CONDITIONS
                ),
            ));
        }
        for (j, h) in r.headers.iter().enumerate() {
            h.validate(&format!("{at}.headers[{j}]"))?;
        }
        for (j, q) in r.query.iter().enumerate() {
            q.validate(&format!("{at}.query[{j}]"))?;
        }
        if let Some(sticky) = &r.sticky {
            if r.clusters.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.sticky"),
                    "applies to a weighted split (`clusters`) only",
                ));
            }
            sticky.validate(&format!("{at}.sticky"))?;
            // hyper's path picks the branch after the gateway set these fields; the fast path
            // before: a key in them would land a client on different clusters.
            if let Some(h) = &sticky.header
                && (h.eq_ignore_ascii_case(&self.server.request_id_header)
                    || h.eq_ignore_ascii_case("traceparent"))
            {
                return Err(ConfigError::new(
                    format!("{at}.sticky.header"),
                    format!("\"{h}\" is a field the gateway sets itself; key on another"),
                ));
            }
        }
        let known = |name: &str| self.clusters.iter().any(|c| c.name == name);
        match (&r.cluster, r.clusters.is_empty()) {
            (Some(c), true) if !known(c) => Err(ConfigError::new(
                format!("{at}.cluster"),
                format!("names unknown cluster \"{c}\""),
            )),
            (Some(_), true) => Ok(()),
            (Some(_), false) => Err(ConfigError::new(
                format!("{at}.clusters"),
                "set `cluster` or `clusters`, not both",
            )),
            (None, true) => Err(ConfigError::new(
                format!("{at}.cluster"),
                "a route needs `cluster` (or `clusters`, a weighted split)",
            )),
            (None, false) if r.kind == RouteKind::Batch => Err(ConfigError::new(
                format!("{at}.clusters"),
                "a batch route sends to one cluster: use `cluster`",
            )),
            (None, false) => route::validate_split(&r.clusters, &at, known),
        }
    }
}

/// Checks that a route's priority class exists in the admission policy that will see its
/// requests: the route's own, else every listener's.
fn check_priority(config: &Config, r: &super::RouteConfig, class: &str) -> Result<(), String> {
    let names: Vec<&str> = match &r.admission {
        Some(n) => vec![n.as_str()],
        None => config
            .listeners
            .iter()
            .filter_map(|l| l.admission.as_deref())
            .collect(),
    };
    if names.is_empty() {
        return Err("needs an admission policy (on the route or its listeners) to rank it".into());
    }
    for n in names {
        if let Some(a) = config.admission.iter().find(|a| a.name == n)
            && !a.has_class(class)
        {
            return Err(format!(
                "\"{class}\" is not a class of admission policy \"{n}\""
            ));
        }
    }
    Ok(())
}

/// A cluster's endpoints are all `https://` or none, and `[clusters.tls]` needs them.
fn check_tls(c: &super::ClusterConfig) -> Result<(), (String, String)> {
    let tls = c.endpoints.first().is_some_and(|ep| Endpoint::is_tls(ep));
    if let Some(j) = c
        .endpoints
        .iter()
        .position(|ep| Endpoint::is_tls(ep) != tls)
    {
        return Err((
            format!("endpoints[{j}]"),
            "mixes https:// and plain endpoints; a cluster's endpoints are all one or the other"
                .into(),
        ));
    }
    match &c.tls {
        Some(_) if !tls => Err((
            "tls".into(),
            "applies to https:// endpoints only (write the endpoints as https://HOST:PORT)".into(),
        )),
        Some(t) => t.validate("tls").map_err(|err| (err.field, err.problem)),
        None => Ok(()),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("\"{s}\" is not an IP:PORT address"))
}

/// Whether two listeners would take the same connections: the same port (0 picks a fresh one
/// each time) on the same IP, or on any IP where one of them is a wildcard.
fn addrs_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_host_pattern(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !bare.starts_with('.')
        && !bare.ends_with('.')
        && !bare.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{host}\" must be \"*\", a host name, or \"*.\" and a host name"
        ))
    }
}
