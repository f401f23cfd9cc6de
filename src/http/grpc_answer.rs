//! The gRPC side of [`Rejection`]: its status code, its `grpc-retry-pushback-ms` and its
//! trailers-only answer, the one mapping the `grpc` feature and the reference gateway use.

use super::Rejection;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};

impl Rejection {
    /// The gRPC status code, as its number: `UNAVAILABLE` (14) for overloaded and unavailable,
    /// `RESOURCE_EXHAUSTED` (8) for a rate limit, `DEADLINE_EXCEEDED` (4) for a deadline.
    pub fn grpc_code(&self) -> i32 {
        match self {
            Rejection::RateLimited { .. } => 8,
            Rejection::DeadlineExceeded => 4,
            Rejection::Overloaded { .. } | Rejection::Unavailable { .. } => 14,
        }
    }

    /// The `grpc-retry-pushback-ms` value (gRFC A6): the hint rounded up to whole milliseconds,
    /// at least 1; 1000 without a hint; `None` for a deadline.
    pub fn pushback_ms(&self) -> Option<u64> {
        if matches!(self, Rejection::DeadlineExceeded) {
            return None;
        }
        Some(match self.retry_after() {
            None => 1000,
            Some(d) => u64::try_from(d.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1),
        })
    }

    /// The gRPC answer, trailers-only: HTTP 200, `content-type: application/grpc`,
    /// `grpc-status` ([`grpc_code`](Self::grpc_code)), `grpc-message` (`message`,
    /// percent-encoded as the gRPC spec asks) and `grpc-retry-pushback-ms`
    /// ([`pushback_ms`](Self::pushback_ms)) when there is one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::Rejection;
    ///
    /// let r = Rejection::RateLimited { retry_after: Duration::from_micros(1500) };
    /// let res = r.to_grpc_response_with::<()>("rate limit exceeded: 100%");
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(res.headers()["grpc-status"], "8");
    /// assert_eq!(res.headers()["grpc-message"], "rate limit exceeded: 100%25");
    /// assert_eq!(res.headers()["grpc-retry-pushback-ms"], "2");
    /// ```
    pub fn to_grpc_response_with<B: Default>(&self, message: &str) -> Response<B> {
        let mut res = Response::new(B::default());
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(self.grpc_code()));
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(message)) {
            headers.insert("grpc-message", v);
        }
        if let Some(ms) = self.pushback_ms() {
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
        res
    }
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn grpc_percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
