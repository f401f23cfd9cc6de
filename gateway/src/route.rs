//! Route matching: host, path prefix, header and query conditions and method to a route index;
//! and a route's weighted split across clusters.
//!
//! Pure and allocation-free per lookup, so it is fuzzed (`fuzz/fuzz_targets/route_table.rs`)
//! and benchmarked without I/O. Both request paths look up through [`RouteTable::find`]: the
//! HTTP/1.1 fast path with httparse's parsed fields, hyper's path with the request's
//! `HeaderMap` ([`RouteTable::find_http`]), so they choose the same route
//! (a property test in `fast/head/tests.rs` checks it).
//!
//! # Precedence
//!
//! Routes are tried most specific first, and the first whose host, path prefix, header and
//! query conditions hold and which allows the method wins:
//!
//! 1. host: exact, then wildcard (longer suffix first), then `*`;
//! 2. longer path prefix first;
//! 3. more header and query conditions first;
//! 4. file order.
//!
//! A route without conditions ranks as before conditions existed, so older configs route as
//! they did. A request whose host, path and conditions match only routes that allow other
//! methods gets 405; anything else unmatched gets 404.
//!
//! # Conditions
//!
//! - A header condition holds when some field line of that name (case-insensitive) has the
//!   exact value, starts with the prefix (both case-sensitive, the line's value as received),
//!   or exists at all (`present`); `invert` negates it (so `present` with `invert` means "no
//!   such field").
//! - A query condition holds when some parameter of that name has the value (or exists).
//!   Names and values are compared percent-decoded (`%41` is `A`, `+` is a space), decoding
//!   byte by byte as they are compared, with no allocation and only for routes that have
//!   query conditions. Only the first [`MAX_QUERY_PARAMS`] `&`-separated parameters are
//!   looked at, so a query string of thousands of parameters costs bounded work.
//!
//! # Weighted splits
//!
//! A [`Split`] sends a route's requests to its clusters in proportion to their weights, by
//! smooth weighted round robin (nginx's) over one atomic counter: lock-free, deterministic,
//! and exact over every run of `sum(weights)` (reduced by their gcd) consecutive requests.
//! With a sticky key (a header or a cookie), a request that carries it goes to the branch
//! its FNV-1a hash falls in, the branches taking shares of the hash space by weight, so one
//! client stays on one cluster (until the weights change); one without takes the round's
//! next step.

use super::config::RouteConfig;
use super::config::route::{HeaderMatch, QueryMatch, StickyKey};
use http::HeaderName;
use std::cmp::Reverse;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Query parameters looked at per query condition; later ones are not seen.
pub(crate) const MAX_QUERY_PARAMS: usize = 256;

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

/// A request as routing sees it.
#[derive(Debug)]
pub(crate) struct Request<'a, F: ?Sized> {
    /// The `Host` (or `:authority`); may carry a port and a trailing dot.
    pub host: &'a str,
    /// The URI path, without the query.
    pub path: &'a str,
    /// The query, without the `?`; `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// The method, as sent.
    pub method: &'a str,
    /// The header fields.
    pub fields: &'a F,
}

/// Header fields as each request path holds them.
pub(crate) trait Fields {
    /// Whether some field line named `name` has a value that `accept` accepts.
    fn any_value(&self, name: &HeaderName, accept: impl FnMut(&[u8]) -> bool) -> bool;
}

/// hyper's path.
impl Fields for http::HeaderMap {
    fn any_value(&self, name: &HeaderName, mut accept: impl FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).iter().any(|v| accept(v.as_bytes()))
    }
}

/// The fast path: the head as httparse parsed it, no `HeaderMap` built.
impl Fields for [httparse::Header<'_>] {
    fn any_value(&self, name: &HeaderName, mut accept: impl FnMut(&[u8]) -> bool) -> bool {
        let name = name.as_str();
        self.iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .any(|h| accept(h.value))
    }
}

/// What a condition asks of a value.
#[derive(Debug, Clone)]
enum Test {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Present,
}

/// A compiled header condition.
#[derive(Debug, Clone)]
struct HeaderCond {
    name: HeaderName,
    test: Test,
    invert: bool,
}

impl HeaderCond {
    /// `None` for a condition validation refuses (it never holds).
    fn new(m: &HeaderMatch) -> Option<Self> {
        let name = HeaderName::from_bytes(m.name.as_bytes()).ok()?;
        let test = match (&m.value, &m.prefix, m.present) {
            (Some(v), None, None) => Test::Exact(v.as_bytes().into()),
            (None, Some(p), None) => Test::Prefix(p.as_bytes().into()),
            (None, None, Some(true)) => Test::Present,
            _ => return None,
        };
        Some(Self {
            name,
            test,
            invert: m.invert,
        })
    }

    fn holds<F: Fields + ?Sized>(&self, fields: &F) -> bool {
        let found = fields.any_value(&self.name, |v| match &self.test {
            Test::Exact(want) => v == &want[..],
            Test::Prefix(want) => v.starts_with(want),
            Test::Present => true,
        });
        found != self.invert
    }
}

/// A compiled query condition.
#[derive(Debug, Clone)]
struct QueryCond {
    name: Box<[u8]>,
    test: Test,
}

impl QueryCond {
    fn new(m: &QueryMatch) -> Option<Self> {
        let test = match (&m.value, m.present) {
            (Some(v), None) => Test::Exact(v.as_bytes().into()),
            (None, Some(true)) => Test::Present,
            _ => return None,
        };
        Some(Self {
            name: m.name.as_bytes().into(),
            test,
        })
    }

    fn holds(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        params(query).any(|(name, value)| {
            decoded_eq(name, &self.name)
                && match &self.test {
                    Test::Exact(want) => decoded_eq(value, want),
                    Test::Prefix(want) => decoded_starts_with(value, want),
                    Test::Present => true,
                }
        })
    }
}

/// The first [`MAX_QUERY_PARAMS`] parameters of a query as raw `(name, value)` bytes; a
/// parameter without `=` has an empty value.
fn params(query: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .as_bytes()
        .split(|b| *b == b'&')
        .take(MAX_QUERY_PARAMS)
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|b| *b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &[][..]),
        })
}

/// The bytes of a query component, percent-decoded as they are read (`+` is a space; a `%`
/// not followed by two hex digits stands for itself).
#[derive(Debug, Clone)]
pub(crate) struct Decoded<'a> {
    raw: &'a [u8],
}

impl<'a> Decoded<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> Self {
        Self { raw }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.raw.split_first()?;
        fn hex(b: Option<&u8>) -> Option<u8> {
            char::from(*b?).to_digit(16).map(|d| d as u8)
        }
        match b {
            b'+' => {
                self.raw = rest;
                Some(b' ')
            }
            b'%' => match (hex(rest.first()), hex(rest.get(1))) {
                (Some(hi), Some(lo)) => {
                    self.raw = &rest[2..];
                    Some(hi << 4 | lo)
                }
                _ => {
                    self.raw = rest;
                    Some(b'%')
                }
            },
            _ => {
                self.raw = rest;
                Some(b)
            }
        }
    }
}

fn decoded_eq(raw: &[u8], want: &[u8]) -> bool {
    // Decoding never lengthens: a raw part shorter than `want` cannot equal it.
    raw.len() >= want.len() && Decoded::new(raw).eq(want.iter().copied())
}

fn decoded_starts_with(raw: &[u8], want: &[u8]) -> bool {
    let mut d = Decoded::new(raw);
    want.iter().all(|w| d.next() == Some(*w))
}

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    host: HostMatch,
    prefix: String,
    /// Bit per entry of `METHOD_BITS`; `u16::MAX` means any method.
    methods: u16,
    headers: Box<[HeaderCond]>,
    query: Box<[QueryCond]>,
    /// Index into the config's `routes`.
    index: usize,
}

impl Route {
    fn conditions(&self) -> usize {
        self.headers.len() + self.query.len()
    }

    fn conditions_hold<F: Fields + ?Sized>(&self, req: &Request<'_, F>) -> bool {
        self.headers.iter().all(|c| c.holds(req.fields))
            && self.query.iter().all(|c| c.holds(req.query))
    }
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
    /// Some route matched host, path and conditions but none allows the method (405).
    MethodNotAllowed,
    /// No route matched host, path and conditions (404).
    NotFound,
}

/// Routes compiled for lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles routes (assumed validated: unknown methods and invalid conditions never
    /// match).
    pub(crate) fn new(routes: &[RouteConfig]) -> Self {
        let never = || Route {
            host: HostMatch::Exact(String::new()),
            prefix: String::new(),
            methods: 0,
            headers: Box::default(),
            query: Box::default(),
            index: usize::MAX,
        };
        let mut compiled: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let headers: Option<Box<[HeaderCond]>> =
                    r.headers.iter().map(HeaderCond::new).collect();
                let query: Option<Box<[QueryCond]>> = r.query.iter().map(QueryCond::new).collect();
                let (Some(headers), Some(query)) = (headers, query) else {
                    return never();
                };
                Route {
                    host: HostMatch::new(&r.host),
                    prefix: r.path_prefix.trim_end_matches('/').to_owned(),
                    methods: if r.methods.is_empty() {
                        u16::MAX
                    } else {
                        r.methods.iter().fold(0, |acc, m| acc | method_bit(m))
                    },
                    headers,
                    query,
                    index,
                }
            })
            .filter(|r| r.index != usize::MAX)
            .collect();
        // Stable sort: ties keep file order.
        compiled.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(b.conditions().cmp(&a.conditions()))
        });
        Self { routes: compiled }
    }

    /// Number of routes.
    #[cfg(any(fuzzing, feature = "fuzzing"))]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Finds the route for a request.
    pub(crate) fn find<F: Fields + ?Sized>(&self, req: &Request<'_, F>) -> RouteMatch {
        let host = normalize_host(req.host);
        let bit = method_bit(req.method);
        let mut other_method = false;
        for r in &self.routes {
            if !(r.host.matches(host) && prefix_matches(&r.prefix, req.path)) {
                continue;
            }
            let allowed = r.methods == u16::MAX || r.methods & bit != 0;
            // Once a 405 is known, a route that disallows the method cannot change it.
            if !allowed && other_method {
                continue;
            }
            if !r.conditions_hold(req) {
                continue;
            }
            if allowed {
                return RouteMatch::Route(r.index);
            }
            other_method = true;
        }
        if other_method {
            RouteMatch::MethodNotAllowed
        } else {
            RouteMatch::NotFound
        }
    }

    /// Finds the route for a request on hyper's path, routed as `method` (a WebSocket over
    /// HTTP/2 is routed as the `GET` of its handshake).
    pub(crate) fn find_http<B>(&self, req: &http::Request<B>, method: &str) -> RouteMatch {
        self.find(&Request {
            host: host_of(req).unwrap_or(""),
            path: req.uri().path(),
            query: req.uri().query(),
            method,
            fields: req.headers(),
        })
    }
}

/// A request's host on hyper's path: the URI authority (HTTP/2, absolute-form) or the `Host`
/// header.
pub(crate) fn host_of<B>(req: &http::Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Whether a registered name (RFC 3986 §3.2.2) may hold `b`: letters, digits, `-._~`, the
/// sub-delimiters, and `%` for escapes.
pub(crate) fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Whether `host` is a valid `Host` value (RFC 9110 §7.2, RFC 3986 §3.2.2): a registered
/// name (letters, digits, `-._~`, sub-delimiters, percent-encodings), an IPv4 address, or an
/// IP literal in brackets, then an optional `:port` of at most 65535. No userinfo, no space,
/// no `/`, no quote: such a value would reach the upstream and the access log as the host.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.first() {
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &host[1..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !ok {
                    return false;
                }
                match &host[end + 1..] {
                    [] => return true,
                    [b':', port @ ..] => (&host[..=end], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match host.iter().rposition(|&b| b == b':') {
            Some(i) => (&host[..i], Some(&host[i + 1..])),
            None => (host, None),
        },
    };
    let name_ok = name.first() == Some(&b'[')
        || (!name.is_empty() && name.iter().copied().all(reg_name_byte));
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|p| {
                    if p.is_empty() {
                        Some(0)
                    } else {
                        p.parse::<u32>().ok()
                    }
                })
                .is_some_and(|n| n <= 65535)
    });
    name_ok && port_ok
}

/// Whether `path` (without its query) has a dot segment: `.` or `..` between slashes or at the
/// end, written plainly or percent-encoded (`%2e`). A client normalizes its paths before it
/// sends them (RFC 3986 §5.2.4); a raw one that did not could match one route's prefix
/// (`/public/../admin`) and reach a backend that resolves it to another's, past the first
/// route's policies, so the gateway refuses it (400) rather than guess how the backend reads
/// it.
pub(crate) fn has_dot_segment(path: &[u8]) -> bool {
    if !path.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    path.split(|&b| b == b'/').any(|seg| {
        let mut dots = 0;
        let mut i = 0;
        while i < seg.len() {
            if seg[i] == b'.' {
                i += 1;
            } else if seg.len() >= i + 3
                && seg[i] == b'%'
                && seg[i + 1] == b'2'
                && seg[i + 2].eq_ignore_ascii_case(&b'e')
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        (1..=2).contains(&dots)
    })
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

/// A route's weighted split across its clusters (branches, in config order): smooth weighted
/// round robin, its order computed once and walked by one atomic counter; with a sticky key,
/// the key's hash picks the branch instead.
#[derive(Debug)]
pub(crate) struct Split {
    /// The branch of each step of one round, `sum(weights) / gcd` steps long.
    order: Box<[u8]>,
    /// Per branch, the sum of the (reduced) weights up to and including it.
    cumulative: Box<[u64]>,
    next: AtomicUsize,
    sticky: Option<Sticky>,
}

/// Where a sticky split finds a request's key.
#[derive(Debug, Clone)]
enum Sticky {
    /// The first value of this field.
    Header(HeaderName),
    /// The value of this cookie, in any `Cookie` field.
    Cookie(Box<[u8]>),
}

impl Sticky {
    fn new(k: &StickyKey) -> Option<Self> {
        match (&k.header, &k.cookie) {
            (Some(h), None) => HeaderName::from_bytes(h.as_bytes()).ok().map(Self::Header),
            (None, Some(c)) => Some(Self::Cookie(c.as_bytes().into())),
            _ => None,
        }
    }

    /// The hash of the request's key, if it carries one.
    fn hash<F: Fields + ?Sized>(&self, fields: &F) -> Option<u64> {
        let mut hash = None;
        match self {
            Self::Header(name) => {
                fields.any_value(name, |v| {
                    hash = Some(fnv1a(v));
                    true
                });
            }
            Self::Cookie(name) => {
                fields.any_value(&http::header::COOKIE, |v| {
                    let value = v.split(|b| *b == b';').find_map(|pair| {
                        let pair = pair.trim_ascii();
                        pair.strip_prefix(&name[..])?.strip_prefix(b"=")
                    });
                    hash = value.map(fnv1a);
                    hash.is_some()
                });
            }
        }
        hash
    }
}

/// 64-bit FNV-1a: fixed, so a key maps to the same cluster on every worker, path and restart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Split {
    /// The split for `weights` (validated: 1 to 16 of them, each 1 to 10000; a 0 counts as
    /// 1).
    ///
    /// # Panics
    /// With no weight, or more than 256.
    pub(crate) fn new(weights: &[u32], sticky: Option<&StickyKey>) -> Self {
        assert!(
            !weights.is_empty() && weights.len() <= 256,
            "1 to 256 branches"
        );
        let gcd = weights.iter().fold(0, |a, w| gcd(a, (*w).max(1)));
        let w: Vec<i64> = weights.iter().map(|x| i64::from(x.max(&1) / gcd)).collect();
        let total: i64 = w.iter().sum();
        // nginx's smooth weighted round robin: each step every branch gains its weight, the
        // richest (first on ties) is picked and pays the total.
        let mut current = vec![0_i64; w.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, wi) in current.iter_mut().zip(&w) {
                *c += wi;
            }
            let best = (0..w.len())
                .max_by_key(|&i| (current[i], Reverse(i)))
                .unwrap_or(0);
            current[best] -= total;
            order.push(best as u8);
        }
        let cumulative = w
            .iter()
            .scan(0_u64, |sum, wi| {
                *sum += *wi as u64;
                Some(*sum)
            })
            .collect();
        Self {
            order: order.into(),
            cumulative,
            next: AtomicUsize::new(0),
            sticky: sticky.and_then(Sticky::new),
        }
    }

    /// The branch for this request: its sticky key's, else the next step of the round.
    pub(crate) fn pick<F: Fields + ?Sized>(&self, fields: &F) -> usize {
        if let Some(hash) = self.sticky.as_ref().and_then(|s| s.hash(fields)) {
            // Keys spread over the branches in proportion to their weights.
            let total = self.cumulative.last().copied().unwrap_or(1);
            let point = hash % total;
            return self.cumulative.partition_point(|c| *c <= point);
        }
        // Relaxed: only the count matters, and each request takes its own step (a wrap after
        // 2^64 requests shifts the round once).
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        usize::from(self.order[n % self.order.len()])
    }

    /// Steps in one round.
    #[cfg(test)]
    pub(crate) fn round(&self) -> usize {
        self.order.len()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The reference semantics the fuzz target checks [`RouteTable::find`] against, written
/// independently (decoding the query whole): does config route `r` match this request, given
/// its fields as `(name, value)` pairs?
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub(crate) fn route_matches(
    r: &RouteConfig,
    host: &str,
    path: &str,
    query: Option<&str>,
    method: &str,
    fields: &[(&str, &[u8])],
) -> bool {
    fn decode(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let hex = |j: usize| raw.get(j).and_then(|b| char::from(*b).to_digit(16));
            match (raw[i], hex(i + 1), hex(i + 2)) {
                (b'%', Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                (b'+', ..) => {
                    out.push(b' ');
                    i += 1;
                }
                (b, ..) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }
    let params: Vec<(Vec<u8>, Vec<u8>)> = query
        .map(|q| {
            q.split('&')
                .take(MAX_QUERY_PARAMS)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (n, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(n.as_bytes()), decode(v.as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default();
    let header_ok = r.headers.iter().all(|h| {
        let mut values = fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&h.name))
            .map(|(_, v)| *v);
        let found = if let Some(want) = &h.value {
            values.any(|v| v == want.as_bytes())
        } else if let Some(p) = &h.prefix {
            values.any(|v| v.starts_with(p.as_bytes()))
        } else {
            values.next().is_some()
        };
        found != h.invert
    });
    let query_ok = r.query.iter().all(|q| {
        params.iter().any(|(n, v)| {
            n.as_slice() == q.name.as_bytes()
                && q.value
                    .as_ref()
                    .is_none_or(|want| v.as_slice() == want.as_bytes())
        })
    });
    HostMatch::new(&r.host).matches(normalize_host(host))
        && prefix_matches(r.path_prefix.trim_end_matches('/'), path)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && header_ok
        && query_ok
}

#[cfg(test)]
mod tests;
