//! Tickets from HTTP requests: class from an extension or a header, deadline from an extension
//! or the `grpc-timeout` header, rate-limit key from a header.

use crate::classify::{Key, Prioritize, Ticket};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use std::time::Duration;
use tokio::time::Instant;

/// A request extension naming the class index directly; wins over the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority(pub usize);

/// A request extension giving the deadline; wins over `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
///
/// ```
/// # use std::time::Duration;
/// use tollgate_admission::http::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = digits
        .iter()
        .fold(0, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Reads a [`Ticket`] from an `http::Request`.
///
/// - Class: the [`Priority`] extension; else the class header (default `x-priority`) holding a
///   class name or index; else `default_class`.
/// - Deadline: the [`Deadline`] extension; else now plus `grpc-timeout`.
/// - Key: the key header's value (default none), hashed with [`Key::from_bytes`].
#[derive(Debug, Clone)]
pub struct HttpPrioritizer {
    names: Vec<String>,
    class_header: HeaderName,
    key_header: Option<HeaderName>,
    default_class: usize,
}

impl HttpPrioritizer {
    /// Class names in priority order (those of the config), the default class being the last.
    pub fn new<I, N>(names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let default_class = names.len().saturating_sub(1);
        Self {
            names,
            class_header: HeaderName::from_static("x-priority"),
            key_header: None,
            default_class,
        }
    }

    /// Reads the class from `header` instead of `x-priority`.
    pub fn with_class_header(mut self, header: HeaderName) -> Self {
        self.class_header = header;
        self
    }

    /// Rate-limits by the value of `header` (a tenant or API key).
    pub fn with_key_header(mut self, header: HeaderName) -> Self {
        self.key_header = Some(header);
        self
    }

    /// The class of requests that name none (or an unknown one).
    pub fn with_default_class(mut self, class: usize) -> Self {
        self.default_class = class;
        self
    }

    fn class_from(&self, v: &HeaderValue) -> Option<usize> {
        let b = v.as_bytes();
        self.names
            .iter()
            .position(|n| n.as_bytes() == b)
            .or_else(|| std::str::from_utf8(b).ok()?.parse::<usize>().ok())
    }

    fn ticket(&self, ext: &http::Extensions, headers: &HeaderMap) -> Ticket {
        let class = ext
            .get::<Priority>()
            .map(|p| p.0)
            .or_else(|| {
                headers
                    .get(&self.class_header)
                    .and_then(|v| self.class_from(v))
            })
            .unwrap_or(self.default_class);
        let deadline = ext.get::<Deadline>().map(|d| d.0).or_else(|| {
            let t = parse_grpc_timeout(headers.get("grpc-timeout")?.as_bytes())?;
            Instant::now().checked_add(t)
        });
        let key = self
            .key_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .map(|v| Key::from_bytes(v.as_bytes()));
        Ticket {
            class,
            deadline,
            key,
        }
    }
}

impl<B> Prioritize<Request<B>> for HttpPrioritizer {
    fn prioritize(&self, req: &Request<B>) -> Ticket {
        self.ticket(req.extensions(), req.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        assert_eq!(
            parse_grpc_timeout(b"99999999m"),
            Some(Duration::from_millis(99_999_999))
        );
        for bad in [&b""[..], b"S", b"5", b"5x", b"-5S", b"1.5S", b"123456789m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_come_from_extensions_then_headers() {
        let p = HttpPrioritizer::new(["gold", "silver", "bronze"])
            .with_key_header(HeaderName::from_static("x-tenant"));
        let now = Instant::now();
        let req = Request::builder()
            .header("x-priority", "silver")
            .header("grpc-timeout", "100m")
            .header("x-tenant", "acme")
            .body(())
            .unwrap();
        let t = p.prioritize(&req);
        assert_eq!(t.class, 1);
        assert_eq!(t.deadline, Some(now + Duration::from_millis(100)));
        assert_eq!(t.key, Some(Key::from("acme")));

        let mut req = Request::builder()
            .header("x-priority", "0")
            .body(())
            .unwrap();
        assert_eq!(p.prioritize(&req).class, 0);
        req.extensions_mut().insert(Priority(2));
        req.extensions_mut().insert(Deadline(now));
        let t = p.prioritize(&req);
        assert_eq!((t.class, t.deadline, t.key), (2, Some(now), None));

        let req = Request::builder()
            .header("x-priority", "platinum")
            .body(())
            .unwrap();
        assert_eq!(
            p.prioritize(&req).class,
            2,
            "unknown names fall to the default class"
        );
        assert_eq!(p.clone().with_default_class(1).prioritize(&req).class, 1);
        let p2 =
            HttpPrioritizer::new(["a", "b"]).with_class_header(HeaderName::from_static("x-class"));
        let req = Request::builder().header("x-class", "a").body(()).unwrap();
        assert_eq!(p2.prioritize(&req).class, 0);
    }
}
