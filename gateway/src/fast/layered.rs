//! Requests the fast path reads but neither forwards nor sends through the layers itself
//! ([`stacked`](super::stacked)): routes with a cache, a batcher or retries of their own
//! (`[routes.retry]`), HTTP/2 and TLS upstreams, and every layered route while the gateway
//! traces.
//!
//! The head parsed by [`head::prepare`](super::head::prepare) becomes an [`http::Request`]
//! with its body held whole, and goes through the very function hyper's requests go through
//! ([`proxy::handle`]): the same routing, request ids, trace context, layers, answers, access
//! log and counters. Only the two ends differ: no hyper connection reads the request, and the
//! answer is written here with HTTP/1.1 framing, as hyper's server would write it:
//!
//! - a body of known length is framed by `Content-Length` (the one the answer carries, or its
//!   size), any other by chunks, with trailers only when the client sent `TE: trailers`;
//! - `HEAD`, `204` and `304` answers have no body (a `HEAD` answer keeps its `Content-Length`);
//! - `Date` is added when missing, `Connection: close` when the connection ends after this
//!   answer (the client asked, the gateway is draining, or this was the connection's last
//!   request);
//! - a body that fails, or gives more or fewer bytes than its `Content-Length`, cuts the
//!   connection (the framing cannot say "error"), as hyper does.
//!
//! Small answers go out in one write with their head; the body's frames are gathered while
//! they come at once and written when the body has to wait, or when 64 KiB are waiting.

use super::head::Head;
use super::{Bufs, Next, date, write_all};
use crate::answer::RespBody;
use crate::ctx::ConnCtx;
use crate::proxy;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes gathered before they are written, whether or not the next frame is ready.
const FLUSH_AT: usize = 64 * 1024;

/// Serves `req` (the request whose head is `head`) through the route's layers and writes the
/// answer, a write failing when no byte moves for `idle`.
pub(super) async fn serve(
    client: &mut TcpStream,
    ctx: &Arc<ConnCtx>,
    b: &mut Bufs,
    head: &Head,
    req: Request<Full<Bytes>>,
    idle: Duration,
) -> Next {
    let trailers = te_trailers(req.headers());
    let Ok(resp) = proxy::handle(ctx.clone(), req).await;
    let to = To {
        head_method: head.head_method,
        close: head.close || ctx.shared.is_draining(),
        trailers,
        idle,
    };
    let next = respond(client, b, resp, to).await;
    ctx.touch();
    next
}

/// Whether the client takes trailers (`TE: trailers`, RFC 9110 §10.1.4).
fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .any(|v| crate::headers::names_trailers(v.as_bytes()))
}

/// What the answer is written for.
#[derive(Debug, Clone, Copy)]
pub(super) struct To {
    /// The request was a `HEAD`.
    pub(super) head_method: bool,
    /// The connection ends after this answer.
    pub(super) close: bool,
    /// The client takes trailers.
    pub(super) trailers: bool,
    /// How long a write may stall.
    pub(super) idle: Duration,
}

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 204, 304, 1xx).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks.
    Chunked,
}

/// Writes `resp` to the client; `Next::Close` when the connection must end (asked for, or
/// the body failed).
pub(super) async fn respond(
    client: &mut TcpStream,
    b: &mut Bufs,
    resp: Response<RespBody>,
    to: To,
) -> Next {
    let (parts, mut body) = resp.into_parts();
    let close = to.close || says_close(&parts.headers);
    let framing = write_head(&mut b.out, &parts, &body, to, close);
    // Written: the map serves the next request's fields.
    super::head::request::recycle(parts.headers);
    if framing == Framing::None || to.head_method {
        let written = write_all(client, &b.out, to.idle).await;
        b.out.clear();
        return if written.is_err() || close {
            Next::Close
        } else {
            Next::Done
        };
    }
    let mut sent: u64 = 0;
    let mut trailers: Option<HeaderMap> = None;
    loop {
        // Frames that are ready join the bytes waiting; the bytes go out when the body has
        // to wait.
        let frame = match poll_now(&mut body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if flush(client, &mut b.out, to.idle).await.is_err() {
                    return Next::Close;
                }
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "answer body failed; cutting the client's connection");
                return Next::Close;
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        let len = data.len() as u64;
        match framing {
            Framing::Length(n) if sent + len > n => {
                tracing::debug!("answer body longer than its Content-Length; cutting");
                return Next::Close;
            }
            Framing::Chunked => {
                let _ = write!(b.out, "{len:x}\r\n");
            }
            _ => {}
        }
        sent += len;
        if b.out.len() + data.len() > FLUSH_AT {
            // A large frame goes out as it is, not copied.
            if flush(client, &mut b.out, to.idle).await.is_err()
                || write_all(client, &data, to.idle).await.is_err()
            {
                return Next::Close;
            }
        } else {
            b.out.extend_from_slice(&data);
        }
        if framing == Framing::Chunked {
            b.out.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        Framing::Length(n) if sent < n => {
            tracing::debug!(sent, declared = n, "answer body ended short; cutting");
            let _ = flush(client, &mut b.out, to.idle).await;
            return Next::Close;
        }
        Framing::Chunked => {
            b.out.extend_from_slice(b"0\r\n");
            if let Some(t) = trailers.filter(|_| to.trailers) {
                write_fields(&mut b.out, &t);
            }
            b.out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    if flush(client, &mut b.out, to.idle).await.is_err() || close {
        Next::Close
    } else {
        Next::Done
    }
}

/// Polls `body` once without waiting (a frame already there, or the end).
fn poll_now(body: &mut RespBody) -> Poll<Option<Result<http_body::Frame<Bytes>, tower::BoxError>>> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(body).poll_frame(&mut cx)
}

async fn flush(client: &mut TcpStream, out: &mut Vec<u8>, idle: Duration) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = write_all(client, out, idle).await;
    out.clear();
    written
}

/// Whether a `Connection` field of the answer says `close`.
fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| super::head::tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")))
}

fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        write_field(out, name, value);
    }
}

fn write_field(out: &mut Vec<u8>, name: &http::HeaderName, value: &http::HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the answer's head into `out` (cleared first) and returns the body's framing.
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &RespBody,
    to: To,
    close: bool,
) -> Framing {
    let status = parts.status;
    let headers = &parts.headers;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u64>().ok());
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let exact = body.size_hint().exact();
    // The framing, and whether the head needs its field beyond the answer's own.
    let (framing, add) = if no_body {
        (Framing::None, false)
    } else if let Some(n) = declared {
        (Framing::Length(n), false)
    } else if let Some(n) = exact.filter(|n| !to.head_method || *n > 0) {
        (Framing::Length(n), true)
    } else if to.head_method {
        (Framing::None, false)
    } else {
        (Framing::Chunked, true)
    };
    // The gateway frames the body itself: a transfer coding is its own, an unreadable
    // length is dropped, and a 204 or 1xx has none (a 304 keeps the one it describes).
    let length_dropped = declared.is_none() || (no_body && status != StatusCode::NOT_MODIFIED);
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING || (name == header::CONTENT_LENGTH && length_dropped) {
            continue;
        }
        has_date |= name == header::DATE;
        write_field(out, name, value);
    }
    match framing {
        Framing::Length(n) if add => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&date::value(Instant::now()));
        out.extend_from_slice(b"\r\n");
    }
    if close && !says_close(headers) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

#[cfg(test)]
mod tests;
