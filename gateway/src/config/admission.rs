//! `[[admission]]`: the policy's section, its parts and their validation.
//!
//! Unlike the cluster sections (which are the layers' own configs), this one is the gateway's:
//! it holds what only an HTTP gateway has (the class header, client CIDR classes, the deadline
//! header and `grpc-timeout`, the rate limit's key) beside tollgate-admission's settings, and
//! builds an `AdmissionConfig` from them, whose `validate` still decides (its field named
//! under `admission[i]`).

use super::error::ConfigError;
use http::HeaderName;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use tollgate_admission::{AdmissionConfig, ClassConfig, CodelConfig, RateLimitConfig};
use tollgate_core::redis::RedisConfig;

/// The most requests `limit`, `max_queued` and a class's `max_queued` may name.
pub(crate) const MAX_COUNT: usize = 1_000_000;
/// The longest time any `*_ms` field may name: one hour.
pub(crate) const MAX_MS: u64 = 3_600_000;

fn default_limit() -> usize {
    64
}
pub(crate) fn default_classes() -> Vec<ClassSection> {
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

/// `rate_limit`: a GCRA quota per client, kept in this process or shared by every gateway
/// instance through Redis.
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
    /// Keep the quota in Redis, shared by every instance pointing at the same server and key
    /// prefix (a fleet-wide quota): tollgate-core's Redis settings, `{ url = "redis://...",
    /// key_prefix, connect_timeout, response_timeout, failures, cooldown }` (durations as
    /// `"50ms"`; keys default to the prefix `"tollgate:rl:"`). While Redis fails or is slower
    /// than `response_timeout`, this instance's local quota answers; after `failures` failures
    /// in a row Redis is left alone for `cooldown`, then probed again. Default none (local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Which answers carry the IETF draft's `RateLimit-Policy` and `RateLimit` fields:
    /// `"all"` (every answer the upstream gives an admitted request, with what the client's key
    /// has left, and the 429 answers), `"rejected"` (the 429 answers, beside `Retry-After`) or
    /// `"none"`. Default `"rejected"`: the two fields on every successful answer (and the
    /// formatting of `RateLimit`) are left to the policies that ask for them.
    #[serde(default, skip_serializing_if = "RateLimitHeaders::is_default")]
    pub headers: RateLimitHeaders,
}

/// `rate_limit.headers`: which answers carry the `RateLimit-Policy` and `RateLimit` fields.
///
/// `"all"` follows the draft's intent (clients pace themselves on what is left); it is not the
/// default so that a policy costs no bytes on its successful answers unless it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHeaders {
    /// On every answer the upstream gives an admitted request (what the client's key has
    /// left, from the local quota or the Redis one), and on 429 answers.
    All,
    /// On 429 answers. Default.
    #[default]
    Rejected,
    /// On no answer (`Retry-After` only).
    None,
}

impl RateLimitHeaders {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_key() -> String {
    "client-ip".into()
}

/// Where a request's rate-limit key comes from.
#[derive(Debug, Clone)]
pub(crate) enum KeyFrom {
    ClientIp,
    Header(HeaderName),
}

pub(crate) fn parse_key(s: &str) -> Result<KeyFrom, String> {
    if s == "client-ip" {
        return Ok(KeyFrom::ClientIp);
    }
    match s.strip_prefix("header:") {
        Some(h) => header_name(h).map(KeyFrom::Header),
        None => Err("must be \"client-ip\" or \"header:NAME\"".into()),
    }
}

pub(crate) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a header name"))
}

/// A network to match client addresses against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    V4 { addr: u32, mask: u32 },
    V6 { addr: u128, mask: u128 },
}

impl Net {
    pub(crate) fn parse(s: &str) -> Result<Net, String> {
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
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
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

    pub(crate) fn class_index(&self, name: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The first bad field (relative to the section) and its problem.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
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
            if let Some(redis) = &r.redis {
                redis.validate().map_err(|e| {
                    (
                        format!("rate_limit.redis.{}", e.field()),
                        e.problem().to_owned(),
                    )
                })?;
            }
        }
        // Whatever the layer still refuses (the checks above should leave little: the Redis
        // client's own reading of the URL, named as the layer names it).
        self.to_config().validate().map_err(|e| {
            if e.field().starts_with("rate_limit.redis.") {
                return (e.field().to_owned(), e.problem().to_owned());
            }
            (
                "(section)".to_owned(),
                format!("{}: {}", e.field(), e.problem()),
            )
        })
    }

    /// The layer's configuration.
    pub(crate) fn to_config(&self) -> AdmissionConfig {
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
                redis: r.redis.clone(),
                ..RateLimitConfig::new(r.burst, Duration::from_millis(r.period_ms))
            }),
            ..AdmissionConfig::default()
        }
    }
}
