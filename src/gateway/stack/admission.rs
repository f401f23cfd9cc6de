//! Priority admission on routes and listeners: `[[admission]]` policies built on
//! [`tollgate_admission`].
//!
//! Each request gets a ticket from what the gateway knows of it, decided in this order:
//!
//! - **class**: the policy's `class_header`, when it names one of the policy's classes (ASCII
//!   case-insensitive); else the route's `priority`; else the first `client_classes` rule
//!   whose network holds the client's address; else `default_class`. A header is the
//!   client's own word: set `class_header` only where clients are trusted to pick.
//! - **deadline**: the sooner of `grpc-timeout` (unless `grpc_timeout = false`) and the
//!   `deadline_header` (a whole number of milliseconds), counted from arrival. A request that
//!   cannot meet it (given the measured service time) is refused before it takes a slot or
//!   leaves the queue when it no longer can; one still running at its deadline is cut off.
//!   Both answer 504: its caller has stopped waiting.
//! - **rate-limit key**: the client's address, or a header's value (requests without the
//!   header are keyed by their address, so leaving it out does not escape the limit).
//!
//! Capacity, per-class queues, shedding from the lowest class up and the CoDel queue bound
//! are the layer's. Its rejections reach the client through [`crate::http::Rejection`]: queue
//! full, shed and queue timeout are 503 with `Retry-After`, a spent rate limit 429 with
//! `Retry-After`, a deadline 504.
//!
//! The policy is built once; a request costs its ticket (a few header lookups), two reference
//! counts and the layer's own fast path. The ticket travels beside the request (no extension,
//! no allocation), and the layer's prioritizer only reads it back.

use crate::gateway::config::ConfigError;
use http::{HeaderMap, HeaderName, Request};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_admission::http::parse_grpc_timeout;
use tollgate_admission::{
    AdmissionConfig, AdmissionHandle, AdmissionLayer, ClassConfig, CodelConfig, Key, Prioritize,
    RateLimitConfig, Reason, Ticket,
};
use tollgate_core::BoxError;
use tollgate_core::error::DeadlineExceeded;
use tower::{Layer, Service, ServiceExt};

/// The most requests `limit`, `max_queued` and a class's `max_queued` may name.
const MAX_COUNT: usize = 1_000_000;
/// The longest time any `*_ms` field may name: one hour.
const MAX_MS: u64 = 3_600_000;

fn default_limit() -> usize {
    64
}
fn default_classes() -> Vec<ClassSection> {
    ["critical", "high", "normal", "low"]
        .into_iter()
        .map(ClassSection::named)
        .collect()
}
fn default_max_queued() -> usize {
    256
}
fn default_queue_timeout_ms() -> u64 {
    100
}
fn default_codel_target_ms() -> u64 {
    5
}
fn default_class_queue() -> usize {
    128
}
fn default_max_keys() -> usize {
    100_000
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A named priority-admission policy (`[[admission]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    /// Name that routes and listeners refer to. Required, unique.
    pub name: String,
    /// Requests admitted at once (in flight to the routes behind the policy). Default 64
    /// requests; 1 to 1000000.
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The priority classes, highest first: names (`"critical"`) or tables
    /// (`{ name = "critical", max_queued = 64, reserved = 4, headroom = 2 }`). Default
    /// `["critical", "high", "normal", "low"]`; 1 to 64 classes.
    #[serde(default = "default_classes")]
    pub classes: Vec<ClassSection>,
    /// The class of requests nothing else places. Default none: the last (lowest) class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_class: Option<String>,
    /// Header naming a request's class (one of `classes`). Default none: clients cannot pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_header: Option<String>,
    /// Requests waiting over all classes; beyond it the newest waiter of the lowest class
    /// below the arrival's is shed, or the arrival is refused (503). Default 256 requests;
    /// at most 1000000.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// The most time a request waits for a slot before 503, ms; also how long a queue must stay
    /// non-empty to count as standing (CoDel's interval). Default 100 ms; 1 to 3600000, at
    /// least `codel_target_ms`.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// While a class's queue stands, waiters older than this are dropped (CoDel's target),
    /// ms. Default 5 ms; 1 to 10000.
    #[serde(default = "default_codel_target_ms")]
    pub codel_target_ms: u64,
    /// Whether a standing queue serves its newest waiter first. Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub adaptive_lifo: bool,
    /// Header giving the request's deadline as a whole number of ms from arrival (for example
    /// `x-request-timeout-ms`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_header: Option<String>,
    /// Whether gRPC's `grpc-timeout` header sets a deadline. Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub grpc_timeout: bool,
    /// Classes by client address, first match wins (after the header and the route's
    /// `priority`). Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_classes: Vec<ClientClass>,
    /// A per-client rate limit, checked before a request queues (429). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSection>,
}

/// One priority class of a policy. Written as its name (`"critical"`) when it keeps the
/// defaults, or as a table (`{ name = "critical", max_queued = 64, reserved = 4 }`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSection {
    /// The class's name, used by headers, routes and rules. Required, unique in the policy
    /// (ASCII case-insensitive).
    pub name: String,
    /// Requests of this class that may wait at once; one more is refused (503). Default 128
    /// requests; 0 (never wait) to 1000000.
    pub max_queued: usize,
    /// Slots owed to this class while it has waiters (lent to others while it has none).
    /// Default 0 slots; all classes' together at most `limit`.
    pub reserved: usize,
    /// Slots lower classes never take, so this class's requests start at once. Default 0
    /// slots; the headrooms of all but the last class together below `limit`.
    pub headroom: usize,
}

impl ClassSection {
    /// A class with the default queue and no reservation or headroom.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            max_queued: default_class_queue(),
            reserved: 0,
            headroom: 0,
        }
    }
}

/// The table form of a class.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassTable {
    name: String,
    #[serde(default = "default_class_queue")]
    max_queued: usize,
    #[serde(default)]
    reserved: usize,
    #[serde(default)]
    headroom: usize,
}

impl Serialize for ClassSection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == Self::named(&self.name) {
            return s.serialize_str(&self.name);
        }
        ClassTable {
            name: self.name.clone(),
            max_queued: self.max_queued,
            reserved: self.reserved,
            headroom: self.headroom,
        }
        .serialize(s)
    }
}

/// Reads a class from a string or a table, keeping the table's own errors (an unknown field).
struct ClassVisitor;

impl<'de> Visitor<'de> for ClassVisitor {
    type Value = ClassSection;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a class name or a table with a `name`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ClassSection, E> {
        Ok(ClassSection::named(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ClassSection, A::Error> {
        let t = ClassTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(ClassSection {
            name: t.name,
            max_queued: t.max_queued,
            reserved: t.reserved,
            headroom: t.headroom,
        })
    }
}

impl<'de> Deserialize<'de> for ClassSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ClassVisitor)
    }
}

/// `client_classes` entry: requests from `cidr` get `class`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientClass {
    /// A network (`10.0.0.0/8`, `fd00::/8`) or one address (`192.0.2.7`, `::1`). Required.
    /// IPv4 rules also match IPv4-mapped IPv6 clients.
    pub cidr: String,
    /// One of the policy's classes. Required.
    pub class: String,
}

/// `rate_limit`: a GCRA quota per client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests a client may make per `period_ms`, all at once if it likes. Required; 1 to
    /// 1000000 requests.
    pub burst: u32,
    /// The time in which a client's whole burst refills, ms. Required; 1 to 86400000.
    pub period_ms: u64,
    /// Who a client is: `"client-ip"` (its address) or `"header:NAME"` (the header's value;
    /// requests without it count by address). Default `"client-ip"`.
    #[serde(default = "default_key")]
    pub key: String,
    /// Clients tracked at once; beyond it the one closest to a full bucket is forgotten.
    /// Default 100000 clients; 1 to 10000000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_key() -> String {
    "client-ip".into()
}

/// Where a request's rate-limit key comes from.
#[derive(Debug, Clone)]
enum KeyFrom {
    ClientIp,
    Header(HeaderName),
}

fn parse_key(s: &str) -> Result<KeyFrom, String> {
    if s == "client-ip" {
        return Ok(KeyFrom::ClientIp);
    }
    match s.strip_prefix("header:") {
        Some(h) => header_name(h).map(KeyFrom::Header),
        None => Err("must be \"client-ip\" or \"header:NAME\"".into()),
    }
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a header name"))
}

/// A network to match client addresses against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4 { addr: u32, mask: u32 },
    V6 { addr: u128, mask: u128 },
}

impl Net {
    fn parse(s: &str) -> Result<Net, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.trim().parse::<u32>() {
                Ok(l) if l <= max => l,
                _ => return Err(format!("the prefix length of `{s}` must be 0 to {max}")),
            },
        };
        Ok(match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Net::V4 {
                    addr: u32::from(a) & mask,
                    mask,
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Net::V6 {
                    addr: u128::from(a) & mask,
                    mask,
                }
            }
        })
    }

    /// Whether `ip` (already canonical: IPv4-mapped addresses as IPv4) is in the network.
    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Net::V4 { addr, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *addr,
            (Net::V6 { addr, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *addr,
            _ => false,
        }
    }
}

impl AdmissionSection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field, named `{at}.field`.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        self.check()
            .map_err(|(field, problem)| ConfigError::new(format!("{at}.{field}"), problem))
    }

    /// Whether `name` is one of the policy's classes (as a header or route may name it).
    pub fn has_class(&self, name: &str) -> bool {
        self.classes
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
    }

    fn class_index(&self, name: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The first bad field (relative to the section) and its problem.
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, p: &str| Err((f.to_owned(), p.to_owned()));
        if self.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if !(1..=MAX_COUNT).contains(&self.limit) {
            return bad("limit", "must be between 1 and 1000000 requests");
        }
        if self.classes.is_empty() || self.classes.len() > tollgate_admission::MAX_CLASSES {
            return bad("classes", "must list 1 to 64 classes");
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.name.is_empty() {
                return bad(&format!("classes[{i}].name"), "must not be empty");
            }
            if self.classes[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return bad(&format!("classes[{i}].name"), "names a class twice");
            }
            if c.max_queued > MAX_COUNT {
                return bad(
                    &format!("classes[{i}].max_queued"),
                    "must be at most 1000000 requests",
                );
            }
        }
        let reserved = self
            .classes
            .iter()
            .map(|c| c.reserved)
            .fold(0, usize::saturating_add);
        if reserved > self.limit {
            return bad("classes", "the reserved slots add up to more than `limit`");
        }
        let kept = self.classes[..self.classes.len() - 1]
            .iter()
            .map(|c| c.headroom)
            .fold(0, usize::saturating_add);
        if kept >= self.limit {
            return bad(
                "classes",
                "the headrooms above the last class leave it none of `limit`",
            );
        }
        if let Some(d) = &self.default_class
            && !self.has_class(d)
        {
            return bad("default_class", "names no class of the policy");
        }
        if let Some(h) = &self.class_header {
            header_name(h).map_err(|p| ("class_header".to_owned(), p))?;
        }
        if self.max_queued > MAX_COUNT {
            return bad("max_queued", "must be at most 1000000 requests");
        }
        // The layer's retry hint lies between the target and 10 s, so the target stays below.
        if !(1..=10_000).contains(&self.codel_target_ms) {
            return bad("codel_target_ms", "must be between 1 and 10000 ms");
        }
        if !(self.codel_target_ms..=MAX_MS).contains(&self.queue_timeout_ms) {
            return bad(
                "queue_timeout_ms",
                "must be between codel_target_ms and 3600000 ms",
            );
        }
        if let Some(h) = &self.deadline_header {
            header_name(h).map_err(|p| ("deadline_header".to_owned(), p))?;
        }
        for (i, r) in self.client_classes.iter().enumerate() {
            Net::parse(&r.cidr).map_err(|p| (format!("client_classes[{i}].cidr"), p))?;
            if !self.has_class(&r.class) {
                return bad(
                    &format!("client_classes[{i}].class"),
                    "names no class of the policy",
                );
            }
        }
        if let Some(r) = &self.rate_limit {
            if !(1..=1_000_000).contains(&r.burst) {
                return bad("rate_limit.burst", "must be between 1 and 1000000 requests");
            }
            if !(1..=86_400_000).contains(&r.period_ms) {
                return bad("rate_limit.period_ms", "must be between 1 and 86400000 ms");
            }
            parse_key(&r.key).map_err(|p| ("rate_limit.key".to_owned(), p))?;
            if !(1..=10_000_000).contains(&r.max_keys) {
                return bad("rate_limit.max_keys", "must be between 1 and 10000000");
            }
        }
        // Whatever the layer still refuses (the checks above should leave nothing).
        self.to_config().validate().map_err(|e| {
            (
                "(section)".to_owned(),
                format!("{}: {}", e.field(), e.problem()),
            )
        })
    }

    /// The layer's configuration.
    fn to_config(&self) -> AdmissionConfig {
        AdmissionConfig {
            classes: self
                .classes
                .iter()
                .map(|c| {
                    ClassConfig::new(c.name.clone())
                        .with_queue_capacity(c.max_queued)
                        .with_reserved(c.reserved)
                        .with_headroom(c.headroom)
                })
                .collect(),
            limit: self.limit,
            max_queued: self.max_queued,
            codel: CodelConfig {
                target: Duration::from_millis(self.codel_target_ms),
                interval: Duration::from_millis(self.queue_timeout_ms),
                adaptive_lifo: self.adaptive_lifo,
            },
            rate_limit: self.rate_limit.as_ref().map(|r| RateLimitConfig {
                max_keys: r.max_keys,
                ..RateLimitConfig::new(r.burst, Duration::from_millis(r.period_ms))
            }),
            ..AdmissionConfig::default()
        }
    }
}

/// What admission knows of a request besides the request itself.
#[derive(Debug, Clone)]
pub struct AdmitCtx {
    /// The client's address.
    pub client: IpAddr,
    /// The route's `priority` class name, if it sets one.
    pub route_class: Option<Arc<str>>,
}

/// A policy's section compiled for the request path: how a request gets its ticket.
#[derive(Debug)]
struct Rules {
    names: Box<[Box<str>]>,
    class_header: Option<HeaderName>,
    default_class: usize,
    deadline_header: Option<HeaderName>,
    grpc_timeout: bool,
    clients: Box<[(Net, usize)]>,
    key: Option<KeyFrom>,
}

/// A deadline header's value: whole milliseconds, at most 12 digits.
fn parse_ms(v: &[u8]) -> Option<Duration> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(ms))
}

/// The rate-limit key of a client address. A leading zero byte keeps it apart from every
/// header value's key (header values cannot hold one).
fn ip_key(ip: IpAddr) -> Key {
    let mut buf = [0u8; 17];
    let n = match ip.to_canonical() {
        IpAddr::V4(a) => {
            buf[1..5].copy_from_slice(&a.octets());
            5
        }
        IpAddr::V6(a) => {
            buf[1..].copy_from_slice(&a.octets());
            17
        }
    };
    Key::from_bytes(&buf[..n])
}

impl Rules {
    /// Compiles a section that passed `check`.
    fn new(s: &AdmissionSection) -> Result<Self, (String, String)> {
        let header = |field: &str, h: &Option<String>| {
            h.as_deref()
                .map(header_name)
                .transpose()
                .map_err(|p| (field.to_owned(), p))
        };
        let mut clients = Vec::with_capacity(s.client_classes.len());
        for (i, r) in s.client_classes.iter().enumerate() {
            let net = Net::parse(&r.cidr).map_err(|p| (format!("client_classes[{i}].cidr"), p))?;
            let class = s.class_index(&r.class).ok_or_else(|| {
                (
                    format!("client_classes[{i}].class"),
                    "names no class of the policy".to_owned(),
                )
            })?;
            clients.push((net, class));
        }
        let last = s.classes.len().saturating_sub(1);
        Ok(Self {
            names: s.classes.iter().map(|c| c.name.as_str().into()).collect(),
            class_header: header("class_header", &s.class_header)?,
            default_class: s
                .default_class
                .as_deref()
                .and_then(|d| s.class_index(d))
                .unwrap_or(last),
            deadline_header: header("deadline_header", &s.deadline_header)?,
            grpc_timeout: s.grpc_timeout,
            clients: clients.into(),
            key: s
                .rate_limit
                .as_ref()
                .map(|r| parse_key(&r.key))
                .transpose()
                .map_err(|p| ("rate_limit.key".to_owned(), p))?,
        })
    }

    fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    fn class(&self, headers: &HeaderMap, ctx: &AdmitCtx) -> usize {
        if let Some(h) = &self.class_header
            && let Some(i) = headers.get(h).and_then(|v| self.index_of(v.as_bytes()))
        {
            return i;
        }
        if let Some(i) = ctx
            .route_class
            .as_deref()
            .and_then(|r| self.index_of(r.as_bytes()))
        {
            return i;
        }
        if !self.clients.is_empty() {
            let ip = ctx.client.to_canonical();
            if let Some((_, class)) = self.clients.iter().find(|(net, _)| net.contains(ip)) {
                return *class;
            }
        }
        self.default_class
    }

    fn deadline(&self, headers: &HeaderMap) -> Option<Instant> {
        let grpc = if self.grpc_timeout {
            headers
                .get("grpc-timeout")
                .and_then(|v| parse_grpc_timeout(v.as_bytes()))
        } else {
            None
        };
        let own = self
            .deadline_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| parse_ms(v.as_bytes()));
        let within = match (grpc, own) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Instant::now().checked_add(within)
    }

    /// The request's ticket: class, deadline, rate-limit key.
    fn ticket<B>(&self, req: &Request<B>, ctx: &AdmitCtx) -> Ticket {
        let headers = req.headers();
        Ticket {
            class: self.class(headers, ctx),
            deadline: self.deadline(headers),
            key: self.key.as_ref().map(|k| match k {
                KeyFrom::ClientIp => ip_key(ctx.client),
                KeyFrom::Header(h) => headers
                    .get(h)
                    .map_or_else(|| ip_key(ctx.client), |v| Key::from_bytes(v.as_bytes())),
            }),
        }
    }
}

/// A request with its ticket, as the layer sees it.
struct Admit<R> {
    req: R,
    ticket: Ticket,
}

/// The layer's prioritizer: the ticket was decided before the call and travels with it.
#[derive(Debug, Clone, Copy)]
struct Carried;

impl<R> Prioritize<Admit<R>> for Carried {
    #[inline]
    fn prioritize(&self, a: &Admit<R>) -> Ticket {
        a.ticket
    }
}

/// Sends the request of an [`Admit`] on to the inner service.
#[derive(Debug, Clone)]
struct Unwrap<S>(S);

impl<S: Service<R>, R> Service<Admit<R>> for Unwrap<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, a: Admit<R>) -> S::Future {
        self.0.call(a.req)
    }
}

/// A built admission policy, shared by every route and listener that names it, and kept
/// across reloads while its section is unchanged.
#[derive(Debug)]
pub struct AdmissionPolicy {
    section: AdmissionSection,
    rules: Rules,
    layer: AdmissionLayer<Carried>,
    handle: AdmissionHandle,
}

impl AdmissionPolicy {
    /// Builds `section`, or keeps `old` (its queues, counts and rate-limit state) when it was
    /// built from an equal section.
    ///
    /// # Errors
    /// The section's first bad field (named relative to the section), as
    /// [`AdmissionSection::validate`] finds it.
    pub fn build(
        section: &AdmissionSection,
        old: Option<&Arc<AdmissionPolicy>>,
    ) -> Result<Arc<Self>, ConfigError> {
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        let fail = |(field, problem): (String, String)| ConfigError::new(field, problem);
        section.check().map_err(fail)?;
        let rules = Rules::new(section).map_err(fail)?;
        let layer = AdmissionLayer::new(section.to_config())
            .map_err(|e| ConfigError::new("(section)", format!("{}: {}", e.field(), e.problem())))?
            .prioritize(Carried);
        Ok(Arc::new(Self {
            section: section.clone(),
            rules,
            handle: layer.handle(),
            layer,
        }))
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.section.name
    }

    /// Admits `req` into `inner`, or rejects it with the layer's
    /// [`Rejected`](tollgate_admission::Rejected) (or a core `DeadlineExceeded` when an
    /// admitted request outlives its deadline).
    pub fn call<S: super::UpstreamService>(
        &self,
        inner: S,
        req: super::UpRequest,
        ctx: &AdmitCtx,
    ) -> impl Future<Output = Result<super::UpResponse, BoxError>> + Send + 'static {
        self.admit(inner, req, ctx)
    }

    /// [`call`](Self::call) for any inner service (tests use one that needs no upstream).
    fn admit<S, R>(
        &self,
        inner: S,
        req: Request<R>,
        ctx: &AdmitCtx,
    ) -> impl Future<Output = Result<S::Response, BoxError>> + Send + 'static
    where
        S: Service<Request<R>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        R: Send + 'static,
    {
        let ticket = self.rules.ticket(&req, ctx);
        let deadline = ticket.deadline;
        let fut = self
            .layer
            .layer(Unwrap(inner))
            .oneshot(Admit { req, ticket });
        async move {
            match deadline {
                None => fut.await,
                // The caller stops waiting at its deadline, so the call stops too.
                Some(at) => tokio::time::timeout_at(at, fut)
                    .await
                    .unwrap_or_else(|_| Err(DeadlineExceeded::new().into())),
            }
        }
    }

    /// The policy's state for `/state`: limit, in flight, and per class admitted, queued,
    /// rejections by reason and queue-wait percentiles.
    pub fn state(&self) -> serde_json::Value {
        let snap = self.handle.snapshot();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let classes: Vec<serde_json::Value> = snap
            .classes
            .iter()
            .map(|c| {
                let rejected: serde_json::Map<String, serde_json::Value> = Reason::ALL
                    .iter()
                    .map(|r| (reason_label(*r).to_owned(), c.rejected(*r).into()))
                    .collect();
                serde_json::json!({
                    "name": c.name,
                    "admitted": c.admitted,
                    "queued": c.queued,
                    "rejected": rejected,
                    "queue_wait_ms": {
                        "p50": ms(c.queue_wait.p50),
                        "p90": ms(c.queue_wait.p90),
                        "p99": ms(c.queue_wait.p99),
                        "max": ms(c.queue_wait.max),
                    },
                })
            })
            .collect();
        serde_json::json!({
            "name": self.section.name,
            "limit": snap.limit,
            "in_flight": snap.in_flight,
            "queued": snap.queued,
            "rate_limit_keys": snap.rate_limit_keys,
            "classes": classes,
        })
    }

    /// Records the policy's metrics into the current `metrics` recorder: in flight, limit,
    /// and per class queued, admitted, rejected by reason and the p99 queue wait.
    pub fn record_metrics(&self) {
        let snap = self.handle.snapshot();
        let p = self.section.name.clone();
        metrics::gauge!("tollgate_admission_in_flight", "policy" => p.clone())
            .set(snap.in_flight as f64);
        metrics::gauge!("tollgate_admission_limit", "policy" => p.clone()).set(snap.limit as f64);
        if self.section.rate_limit.is_some() {
            metrics::gauge!("tollgate_admission_rate_limit_keys", "policy" => p.clone())
                .set(snap.rate_limit_keys as f64);
        }
        for c in &snap.classes {
            let class = c.name.clone();
            metrics::gauge!("tollgate_admission_queued", "policy" => p.clone(), "class" => class.clone())
                .set(c.queued as f64);
            metrics::counter!("tollgate_admission_admitted_total", "policy" => p.clone(), "class" => class.clone())
                .absolute(c.admitted);
            metrics::gauge!(
                "tollgate_admission_queue_wait_p99_seconds",
                "policy" => p.clone(),
                "class" => class.clone()
            )
            .set(c.queue_wait.p99.as_secs_f64());
            for r in Reason::ALL {
                metrics::counter!(
                    "tollgate_admission_rejected_total",
                    "policy" => p.clone(),
                    "class" => class.clone(),
                    "reason" => reason_label(r)
                )
                .absolute(c.rejected(r));
            }
        }
    }
}

/// A rejection reason as a metric label or JSON key.
fn reason_label(r: Reason) -> &'static str {
    match r {
        Reason::QueueFull => "queue_full",
        Reason::Shed => "shed",
        Reason::QueueTimeout => "queue_timeout",
        Reason::Deadline => "deadline",
        Reason::RateLimited => "rate_limited",
        Reason::Throttled => "throttled",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Rejection;
    use std::sync::Mutex;
    use tollgate_admission::Rejected;

    const FULL: &str = r#"
        name = "default"
        limit = 2
        classes = ["critical", { name = "high", max_queued = 4, reserved = 1 }, "normal", "low"]
        default_class = "normal"
        class_header = "x-priority"
        max_queued = 8
        queue_timeout_ms = 500
        codel_target_ms = 20
        deadline_header = "x-request-timeout-ms"
        client_classes = [{ cidr = "10.0.0.0/8", class = "high" }, { cidr = "::1", class = "low" }]
        rate_limit = { burst = 2, period_ms = 1000, key = "header:x-api-key" }
    "#;

    fn section(text: &str) -> AdmissionSection {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ctx(ip: &str, route: Option<&str>) -> AdmitCtx {
        AdmitCtx {
            client: ip.parse().unwrap(),
            route_class: route.map(Arc::from),
        }
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_full_form_parses_and_round_trips() {
        let s = section(FULL);
        s.validate("admission[0]").unwrap();
        assert_eq!(s.classes.len(), 4);
        assert_eq!(
            s.classes[1],
            ClassSection {
                max_queued: 4,
                reserved: 1,
                ..ClassSection::named("high")
            }
        );
        assert!(s.has_class("HIGH") && !s.has_class("gold"));
        let back: AdmissionSection = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);

        let d = section("name = \"d\"");
        d.validate("a").unwrap();
        assert_eq!((d.limit, d.max_queued, d.queue_timeout_ms), (64, 256, 100));
        assert_eq!(d.classes, default_classes());
        assert!(d.grpc_timeout && d.adaptive_lifo && d.class_header.is_none());

        for bad in [
            "name = \"d\"\nlimt = 3",
            "name = \"d\"\nclasses = [{ name = \"a\", queue = 3 }]",
            "name = \"d\"\nclasses = [3]",
            "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1, keys = \"x\" }",
            "limit = 3",
        ] {
            assert!(toml::from_str::<AdmissionSection>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn bad_fields_are_named() {
        let cases: Vec<(&str, Box<dyn Fn(&mut AdmissionSection)>)> = vec![
            ("name", Box::new(|s| s.name.clear())),
            ("limit", Box::new(|s| s.limit = 0)),
            ("classes", Box::new(|s| s.classes.clear())),
            (
                "classes[2].name",
                Box::new(|s| s.classes[2].name = "Critical".into()),
            ),
            ("classes[0].name", Box::new(|s| s.classes[0].name.clear())),
            (
                "classes[3].max_queued",
                Box::new(|s| s.classes[3].max_queued = MAX_COUNT + 1),
            ),
            ("classes", Box::new(|s| s.classes[0].reserved = 3)),
            ("classes", Box::new(|s| s.classes[2].headroom = 2)),
            (
                "default_class",
                Box::new(|s| s.default_class = Some("gold".into())),
            ),
            (
                "class_header",
                Box::new(|s| s.class_header = Some("x prio".into())),
            ),
            ("max_queued", Box::new(|s| s.max_queued = MAX_COUNT + 1)),
            ("codel_target_ms", Box::new(|s| s.codel_target_ms = 0)),
            ("codel_target_ms", Box::new(|s| s.codel_target_ms = 10_001)),
            ("queue_timeout_ms", Box::new(|s| s.queue_timeout_ms = 10)),
            (
                "queue_timeout_ms",
                Box::new(|s| s.queue_timeout_ms = MAX_MS + 1),
            ),
            (
                "deadline_header",
                Box::new(|s| s.deadline_header = Some(String::new())),
            ),
            (
                "client_classes[1].cidr",
                Box::new(|s| s.client_classes[1].cidr = "::1/129".into()),
            ),
            (
                "client_classes[0].cidr",
                Box::new(|s| s.client_classes[0].cidr = "10.0.0".into()),
            ),
            (
                "client_classes[0].class",
                Box::new(|s| s.client_classes[0].class = "x".into()),
            ),
            (
                "rate_limit.burst",
                Box::new(|s| s.rate_limit.as_mut().unwrap().burst = 0),
            ),
            (
                "rate_limit.period_ms",
                Box::new(|s| s.rate_limit.as_mut().unwrap().period_ms = 0),
            ),
            (
                "rate_limit.key",
                Box::new(|s| s.rate_limit.as_mut().unwrap().key = "ip".into()),
            ),
            (
                "rate_limit.key",
                Box::new(|s| s.rate_limit.as_mut().unwrap().key = "header:".into()),
            ),
            (
                "rate_limit.max_keys",
                Box::new(|s| s.rate_limit.as_mut().unwrap().max_keys = 0),
            ),
        ];
        for (field, edit) in cases {
            let mut s = section(FULL);
            edit(&mut s);
            let err = s.validate("admission[3]").unwrap_err();
            assert_eq!(err.field, format!("admission[3].{field}"), "{err:?}");
            assert!(!err.problem.is_empty());
            let built = AdmissionPolicy::build(&s, None).unwrap_err();
            assert_eq!(
                built.field, field,
                "build names the field relative to the section"
            );
        }
    }

    #[test]
    fn networks_match_their_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap().to_canonical();
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.255.0.1")) && !n.contains(ip("11.0.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped clients match IPv4 rules"
        );
        assert!(!n.contains(ip("::1")));
        assert_eq!(Net::parse("10.1.2.3/8").unwrap(), n, "host bits are masked");
        let one = Net::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Net::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        assert!(Net::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        for bad in ["", "10.0.0.0/33", "10.0.0.0/x", "host", "::1/-1"] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_follow_header_then_route_then_client_then_default() {
        let rules = Rules::new(&section(FULL)).unwrap();
        let t = |h: &[(&str, &str)], ip: &str, route: Option<&str>| {
            rules.ticket(&req(h), &ctx(ip, route))
        };
        assert_eq!(
            t(&[("x-priority", "CRITICAL")], "10.0.0.1", Some("low")).class,
            0
        );
        assert_eq!(
            t(&[("x-priority", "gold")], "10.0.0.1", Some("low")).class,
            3
        );
        assert_eq!(t(&[], "10.0.0.1", None).class, 1, "client rule");
        assert_eq!(t(&[], "::1", None).class, 3, "exact IPv6 rule");
        assert_eq!(t(&[], "192.0.2.1", None).class, 2, "default class");
        assert_eq!(t(&[], "192.0.2.1", Some("nope")).class, 2);
        let last = Rules::new(&section("name = \"d\"")).unwrap();
        assert_eq!(
            last.ticket(&req(&[("x-priority", "critical")]), &ctx("::1", None))
                .class,
            3
        );

        let now = Instant::now();
        let d = |h: &[(&str, &str)]| t(h, "192.0.2.1", None).deadline;
        assert_eq!(d(&[]), None);
        assert_eq!(
            d(&[("grpc-timeout", "250m")]),
            Some(now + Duration::from_millis(250))
        );
        assert_eq!(
            d(&[("x-request-timeout-ms", "40")]),
            Some(now + Duration::from_millis(40))
        );
        let both = [("grpc-timeout", "1S"), ("x-request-timeout-ms", "70")];
        assert_eq!(
            d(&both),
            Some(now + Duration::from_millis(70)),
            "the sooner wins"
        );
        assert_eq!(d(&[("x-request-timeout-ms", "-4")]), None);
        assert_eq!(d(&[("x-request-timeout-ms", "1234567890123")]), None);
        let off = Rules::new(&section("name = \"d\"\ngrpc_timeout = false")).unwrap();
        let r = req(&[("grpc-timeout", "1S")]);
        assert_eq!(off.ticket(&r, &ctx("::1", None)).deadline, None);

        let k = |h: &[(&str, &str)], ip: &str| t(h, ip, None).key.unwrap();
        assert_eq!(k(&[("x-api-key", "acme")], "10.0.0.1"), Key::from("acme"));
        assert_eq!(k(&[("x-api-key", "acme")], "10.0.0.2"), Key::from("acme"));
        assert_eq!(k(&[], "10.0.0.1"), ip_key("10.0.0.1".parse().unwrap()));
        assert_ne!(k(&[], "10.0.0.1"), k(&[], "10.0.0.2"));
        assert_eq!(
            ip_key("::ffff:65.66.67.68".parse().unwrap()),
            ip_key("65.66.67.68".parse().unwrap())
        );
        assert_ne!(ip_key("65.66.67.68".parse().unwrap()), Key::from("ABCD"));
        let by_ip = Rules::new(&section(
            "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1 }",
        ))
        .unwrap();
        let r = req(&[("x-api-key", "acme")]);
        assert_eq!(
            by_ip.ticket(&r, &ctx("::1", None)).key,
            Some(ip_key("::1".parse().unwrap()))
        );
        assert_eq!(
            Rules::new(&section("name = \"d\""))
                .unwrap()
                .ticket(&r, &ctx("::1", None))
                .key,
            None
        );
    }

    #[test]
    fn an_equal_section_keeps_the_built_policy() {
        let s = section(FULL);
        let a = AdmissionPolicy::build(&s, None).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &AdmissionPolicy::build(&s, Some(&a)).unwrap()
        ));
        let mut changed = s.clone();
        changed.limit = 3;
        let b = AdmissionPolicy::build(&changed, Some(&a)).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(
            (a.name(), b.state()["limit"].as_u64()),
            ("default", Some(3))
        );
    }

    type Log = Arc<Mutex<Vec<String>>>;

    /// A policy over an inner service that sleeps `ms` then logs the request's `x-id`.
    fn policy_and_inner(
        text: &str,
        ms: u64,
    ) -> (
        Arc<AdmissionPolicy>,
        impl Service<Request<()>, Response = String, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static,
        Log,
    ) {
        let policy = AdmissionPolicy::build(&section(text), None).unwrap();
        let log = Log::default();
        let l = log.clone();
        let inner = tower::service_fn(move |r: Request<()>| {
            let l = l.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let id = r.headers()["x-id"].to_str().unwrap().to_owned();
                l.lock().unwrap().push(id.clone());
                Ok::<_, BoxError>(id)
            }
        });
        (policy, inner, log)
    }

    fn rejection(r: Result<String, BoxError>) -> (Rejection, Option<Reason>) {
        let e = r.unwrap_err();
        let reason = e.downcast_ref::<Rejected>().map(Rejected::reason);
        (Rejection::of(&*e).expect("a known rejection"), reason)
    }

    const SLOW: &str = r#"
        name = "p"
        limit = 1
        classes = ["high", "low"]
        class_header = "x-priority"
        max_queued = 2
        queue_timeout_ms = 60000
        codel_target_ms = 10000
    "#;

    #[tokio::test(start_paused = true)]
    async fn high_goes_first_and_a_full_queue_sheds_low_then_refuses() {
        let (policy, inner, log) = policy_and_inner(SLOW, 100);
        let c = ctx("192.0.2.1", None);
        let call = |id: &str, class: &str| {
            policy.admit(
                inner.clone(),
                req(&[("x-id", id), ("x-priority", class)]),
                &c,
            )
        };
        let first = tokio::spawn(call("first", "low"));
        tokio::task::yield_now().await;
        let low = tokio::spawn(call("low", "low"));
        let low2 = tokio::spawn(call("low2", "low"));
        tokio::task::yield_now().await;
        // The queue is full (2): a high request sheds the newest low one.
        let high = tokio::spawn(call("high", "high"));
        tokio::task::yield_now().await;
        assert_eq!(policy.state()["queued"], 2);
        // Full of a low and a high: another low is refused at once.
        let refused = call("low3", "low").await;
        assert_eq!(rejection(refused).1, Some(Reason::QueueFull));
        let (r, reason) = rejection(low2.await.unwrap());
        assert_eq!(
            (r.status(), reason),
            (http::StatusCode::SERVICE_UNAVAILABLE, Some(Reason::Shed))
        );
        assert!(r.retry_after_secs().is_some());
        for h in [first, high, low] {
            h.await.unwrap().unwrap();
        }
        assert_eq!(*log.lock().unwrap(), ["first", "high", "low"]);
        let state = policy.state();
        assert_eq!(state["classes"][1]["rejected"]["shed"], 1);
        assert_eq!(state["classes"][1]["rejected"]["queue_full"], 1);
        assert_eq!(state["classes"][0]["admitted"], 1);
        policy.record_metrics();
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout_is_503_with_retry_after() {
        let text = SLOW.replace("60000", "50").replace("10000", "50");
        let (policy, inner, _) = policy_and_inner(&text, 1000);
        let c = ctx("192.0.2.1", None);
        let busy = tokio::spawn(policy.admit(inner.clone(), req(&[("x-id", "a")]), &c));
        tokio::task::yield_now().await;
        let (r, reason) = rejection(policy.admit(inner, req(&[("x-id", "b")]), &c).await);
        assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reason, Some(Reason::QueueTimeout));
        assert!(r.retry_after_secs().is_some());
        busy.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_rate_limit_is_429_per_client() {
        let text = "name = \"p\"\nrate_limit = { burst = 2, period_ms = 1000 }";
        let (policy, inner, _) = policy_and_inner(text, 1);
        let a = ctx("192.0.2.1", None);
        for _ in 0..2 {
            policy
                .admit(inner.clone(), req(&[("x-id", "a")]), &a)
                .await
                .unwrap();
        }
        let (r, reason) = rejection(policy.admit(inner.clone(), req(&[("x-id", "a")]), &a).await);
        assert_eq!(
            (r.status(), reason),
            (
                http::StatusCode::TOO_MANY_REQUESTS,
                Some(Reason::RateLimited)
            )
        );
        assert_eq!(r.retry_after_secs(), Some(1));
        let b = ctx("192.0.2.2", None);
        policy
            .admit(inner.clone(), req(&[("x-id", "b")]), &b)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        policy
            .admit(inner, req(&[("x-id", "a")]), &a)
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_cut_calls_and_refuse_the_hopeless() {
        let text = "name = \"p\"\ndeadline_header = \"x-request-timeout-ms\"";
        let (policy, inner, log) = policy_and_inner(text, 1000);
        let c = ctx("192.0.2.1", None);
        // Cut at the deadline; each cut call also teaches the policy calls take that long.
        for (h, ms) in [
            (("grpc-timeout", "50m"), 50),
            (("x-request-timeout-ms", "100"), 100),
        ] {
            let started = Instant::now();
            let (r, _) = rejection(
                policy
                    .admit(inner.clone(), req(&[("x-id", "a"), h]), &c)
                    .await,
            );
            assert_eq!(r.status(), http::StatusCode::GATEWAY_TIMEOUT);
            assert_eq!(started.elapsed(), Duration::from_millis(ms));
        }
        // Spent, or too short for what calls take: refused at once.
        for ms in ["0", "30"] {
            let started = Instant::now();
            let r = req(&[("x-id", "a"), ("x-request-timeout-ms", ms)]);
            let (r, reason) = rejection(policy.admit(inner.clone(), r, &c).await);
            assert_eq!(
                (r.status(), reason),
                (http::StatusCode::GATEWAY_TIMEOUT, Some(Reason::Deadline))
            );
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
        assert!(log.lock().unwrap().is_empty());
        let ok = req(&[("x-id", "ok"), ("x-request-timeout-ms", "5000")]);
        assert_eq!(policy.admit(inner, ok, &c).await.unwrap(), "ok");
    }
}
