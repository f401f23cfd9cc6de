//! A request's ticket (class, deadline, rate-limit key) from its headers and what the gateway
//! knows of it.

use super::AdmitCtx;
use crate::config::admission::{AdmissionSection, KeyFrom, Net, header_name, parse_key};
use http::{HeaderMap, HeaderName, Request};
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_admission::http::parse_grpc_timeout;
use tollgate_admission::{Key, Ticket};

/// A policy's section compiled for the request path: how a request gets its ticket.
#[derive(Debug)]
pub(super) struct Rules {
    names: Box<[Box<str>]>,
    class_header: Option<HeaderName>,
    default_class: usize,
    deadline_header: Option<HeaderName>,
    grpc_timeout: bool,
    clients: Box<[(Net, usize)]>,
    key: Option<KeyFrom>,
    /// Every field the ticket reads.
    reads: Box<[HeaderName]>,
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
pub(super) fn ip_key(ip: IpAddr) -> Key {
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
    pub(super) fn new(s: &AdmissionSection) -> Result<Self, (String, String)> {
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
        let mut rules = Self {
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
            reads: Box::default(),
        };
        let key = match &rules.key {
            Some(KeyFrom::Header(h)) => Some(h.clone()),
            _ => None,
        };
        rules.reads = [
            rules.class_header.clone(),
            rules.deadline_header.clone(),
            key,
        ]
        .into_iter()
        .flatten()
        .chain(
            rules
                .grpc_timeout
                .then(|| HeaderName::from_static("grpc-timeout")),
        )
        .collect();
        Ok(rules)
    }

    /// Every field a request's ticket is read from.
    pub(super) fn reads(&self) -> &[HeaderName] {
        &self.reads
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
    pub(super) fn ticket<B>(&self, req: &Request<B>, ctx: &AdmitCtx) -> Ticket {
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
