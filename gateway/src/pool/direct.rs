//! The gateway's own HTTP/1.1 client for plain-TCP endpoints, for requests whose body is held
//! whole (the fast path's layered requests, bodyless requests, retried copies, batches).
//!
//! hyper's client drives each connection from a task of its own: a request goes to it through
//! a channel, the answer head comes back through another, and the body through a third, so
//! every request wakes two tasks several times. Here the request's own task writes the
//! request on a pooled socket and parses the answer head (httparse, as the fast path does),
//! and the body ([`DirectBody`]) reads the socket as it is polled and gives it back to the
//! thread's idle sockets ([`sockets`], shared with the fast path) at its end.
//!
//! What it does not take goes to hyper's client as before ([`split`]): a streamed request
//! body, a request with `Transfer-Encoding`, or one whose `Content-Length` disagrees with its
//! body; upgrades and TLS never come here. Its rules are hyper's: a `Content-Length` is added
//! for a body of known non-zero size; a `HEAD`, 204 or 304 answer has no body; a response
//! framed by the upstream's close ends the connection; 1xx heads are skipped. A reused
//! connection that fails before any answer byte is tried again on another when the request
//! could not have been taken (the write failed) or may be sent twice (idempotent, no body).

mod body;

use super::{
    MAX_IDLE_PER_ENDPOINT, ReqBody, Settings, UpBody, UpstreamError, connect, idempotent, sockets,
};
use crate::fast::head::MAX_HEADERS;
use crate::fast::response::{Fields, Framing};
use crate::held::held;
pub(crate) use body::DirectBody;
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub(crate) use body::dechunk;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt as _;
use http_body_util::Either;
use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The largest answer head read (as on the fast path).
const MAX_HEAD: usize = 64 * 1024;

/// The smallest free room a read is given in the answer's buffer.
const READ_ROOM: usize = 8 * 1024;

/// A streamed request body of known size is read whole first up to this size (as the fast
/// path reads bodies with their heads).
const MAX_COLLECTED: u64 = 64 * 1024;

/// Bodies up to this size leave in one write with their head.
const INLINE_BODY: usize = 16 * 1024;

/// Scratch buffers kept per thread at most (one per request waiting for its answer head).
const KEEP_SCRATCH: usize = 256;

thread_local! {
    /// Buffers a request is written from and its answer head read into, kept for the next
    /// requests: each is held from the request's write until its answer head is parsed and
    /// copied out ([`held`]), so a thread needs about as many as it has requests waiting.
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_scratch() -> Vec<u8> {
    SCRATCH
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_ROOM))
}

fn give_scratch(mut buf: Vec<u8>) {
    if buf.capacity() <= MAX_HEAD + READ_ROOM {
        buf.clear();
        // `try_with`: a request may end while its thread exits.
        let _ = SCRATCH.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEEP_SCRATCH {
                s.push(buf);
            }
        });
    }
}

/// Which client a request goes on.
pub(crate) enum Split {
    /// The direct client: the request's head and its whole body.
    Direct(Parts, Bytes),
    /// hyper's (see the module docs).
    Hyper(Request<ReqBody>),
}

/// `req` as the direct client takes it, or back unchanged when it must go to hyper's client.
/// A streamed body of known size up to [`MAX_COLLECTED`] is read whole first (as nginx
/// buffers request bodies), so that requests with and without bodies share one pool.
///
/// # Errors
/// [`UpstreamError::Body`] when reading the client's body failed.
pub(crate) async fn split(req: Request<ReqBody>) -> Result<Split, UpstreamError> {
    if req.headers().contains_key(header::TRANSFER_ENCODING) || req.version() != Version::HTTP_11 {
        return Ok(Split::Hyper(req));
    }
    let declared = {
        let mut lengths = req.headers().get_all(header::CONTENT_LENGTH).iter();
        match (lengths.next(), lengths.next()) {
            (None, _) => None,
            (Some(v), None) => match v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => Some(n),
                None => return Ok(Split::Hyper(req)),
            },
            (Some(_), Some(_)) => return Ok(Split::Hyper(req)),
        }
    };
    let (parts, body) = req.into_parts();
    let data = match body {
        Either::Right(mut full) => {
            // A `Full` body gives its one frame at once; no waker is ever woken.
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut full).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            }
        }
        Either::Left(streamed) if streamed.is_end_stream() => Bytes::new(),
        Either::Left(streamed)
            if declared.is_some_and(|n| n <= MAX_COLLECTED)
                && streamed.size_hint().exact() == declared =>
        {
            // Boxed: the collecting state stays out of every request's future.
            Box::pin(streamed.collect())
                .await
                .map_err(UpstreamError::Body)?
                .to_bytes()
        }
        streamed => return Ok(Split::Hyper(Request::from_parts(parts, streamed))),
    };
    if declared.is_some_and(|n| n != data.len() as u64) {
        let body = Either::Right(http_body_util::Full::new(data));
        return Ok(Split::Hyper(Request::from_parts(parts, body)));
    }
    Ok(Split::Direct(parts, data))
}

/// Sends the request `parts` with `body` to `addr` over HTTP/1.1 on a pooled or new socket.
///
/// # Errors
/// [`UpstreamError`] when no answer head arrives: the connect failed or timed out, or the
/// exchange did ([`UpstreamError::Exchange`]).
pub(crate) async fn send(
    addr: SocketAddr,
    mut parts: Parts,
    body: Bytes,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let head_method = parts.method == Method::HEAD;
    let replayable = body.is_empty() && idempotent(&parts.method);
    let keep = !asks_close(&parts.headers);
    let mut buf = take_scratch();
    let mut last = io::Error::from(io::ErrorKind::ConnectionAborted);
    // Up to two pooled sockets, then a new one.
    for attempt in 0..3 {
        let pooled = if attempt < 2 {
            sockets::checkout(addr, Instant::now(), s.idle_timeout)
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut stream = match pooled {
            Some(stream) => stream,
            // Boxed: the connect's state would make every request's future larger.
            None => match Box::pin(connect(addr, s)).await {
                Ok(stream) => stream,
                Err(e) => {
                    give_scratch(buf);
                    return Err(e);
                }
            },
        };
        encode(&parts, &body, &mut buf);
        let written = write(
            &mut stream,
            &buf,
            (body.len() > INLINE_BODY).then_some(&body),
        )
        .await;
        buf.clear();
        // The answer's fields go into the request's map (written out), as hyper's server
        // reuses one map per connection.
        match read_head(&mut stream, &mut buf, head_method, &mut parts.headers).await {
            Ok((len, head)) => {
                let rest = held(&buf[len..]);
                give_scratch(buf);
                return Ok(answer(head, parts.headers, stream, rest, addr, keep, s));
            }
            Err(Failed::Unanswered(e)) if reused && (written.is_err() || replayable) => {
                tracing::debug!(
                    upstream = %addr, error = %e,
                    "reused connection closed unanswered; sending again"
                );
                last = e;
                buf.clear();
            }
            Err(Failed::Unanswered(e) | Failed::Broken(e)) => {
                give_scratch(buf);
                return Err(UpstreamError::Exchange(e));
            }
        }
    }
    give_scratch(buf);
    Err(UpstreamError::Exchange(last))
}

/// Whether the request's `Connection` asks to close after the answer.
fn asks_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| crate::fast::head::tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")))
}

/// Writes the request head (and a small body) into `out`, cleared first.
fn encode(parts: &Parts, body: &Bytes, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    if body.len() <= INLINE_BODY {
        out.extend_from_slice(body);
    }
}

/// Writes the request: `out`, then `body` when it was too large to go with the head.
async fn write(stream: &mut TcpStream, out: &[u8], body: Option<&Bytes>) -> io::Result<()> {
    stream.write_all(out).await?;
    if let Some(body) = body {
        stream.write_all(body).await?;
    }
    Ok(())
}

/// How an exchange failed before its answer head.
enum Failed {
    /// Closed or reset with no byte of answer: the request may not have been seen.
    Unanswered(io::Error),
    /// Closed, reset or malformed after part of an answer.
    Broken(io::Error),
}

/// A final answer head, parsed.
struct Head {
    status: StatusCode,
    version: Version,
    framing: Framing,
    reusable: bool,
}

/// What [`parse`] found at the start of a buffer.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A 1xx head of this length.
    Informational(usize),
    /// The final head, of this length (its fields in the map given).
    Final(usize, Head),
}

/// Reads into `buf` until it holds a final answer head (after any 1xx heads, taken out),
/// whose fields go into `fields` (cleared first); returns the head and its length.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_method: bool,
    fields: &mut HeaderMap,
) -> Result<(usize, Head), Failed> {
    // A failed write still reads: an upstream may answer (say, 413) and close before
    // reading the whole request.
    let mut answered = false;
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(Failed::Broken(bad("upstream answer head too large")));
        }
        if buf.capacity() - buf.len() < READ_ROOM / 4 {
            buf.reserve(READ_ROOM);
        }
        match stream.read_buf(buf).await {
            Ok(0) if !answered => {
                return Err(Failed::Unanswered(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(Failed::Broken(bad("upstream closed in the answer head")));
            }
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Failed::Unanswered(e)),
            Err(e) => return Err(Failed::Broken(e)),
        }
        loop {
            match parse(buf, head_method, fields).map_err(Failed::Broken)? {
                Parsed::Partial => break,
                Parsed::Informational(len) => {
                    buf.drain(..len);
                }
                Parsed::Final(len, head) => {
                    // A chunked body whose first chunk-size line is already malformed: a bad
                    // answer, refused before its head goes to the client (as the fast path
                    // does), not a head and then a cut body.
                    if !crate::fast::response::first_piece_is_valid(&buf[len..], head.framing) {
                        return Err(Failed::Broken(bad(
                            "bad chunk size at the start of the upstream answer body",
                        )));
                    }
                    return Ok((len, head));
                }
            }
        }
    }
}

/// Parses a head at the start of `buf`; a final head's fields go into `fields` (cleared
/// first), as views into one shared copy of the head ([`held`]: no copy per value).
fn parse(buf: &[u8], head_method: bool, fields: &mut HeaderMap) -> io::Result<Parsed> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(bad_owned(format!("malformed upstream answer head: {e}"))),
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return Err(bad("malformed upstream answer head"));
    };
    match code {
        101 => return Err(bad("unexpected 101 from upstream")),
        // Status codes are 100 to 599 (RFC 9110 §15).
        0..=99 | 600.. => return Err(bad("upstream status outside 100..=599")),
        100..=199 => return Ok(Parsed::Informational(len)),
        _ => {}
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad("bad upstream status"))?;
    let framing = Fields::read(resp.headers, version, code, head_method)
        .ok_or_else(|| bad("upstream answer framing unknown"))?;
    let head = held(&buf[..len]);
    let base = buf.as_ptr() as usize;
    fields.clear();
    fields.reserve(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad("bad field name in upstream answer"))?;
        let at = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + h.value.len()))
            .map_err(|_| bad("bad field value in upstream answer"))?;
        fields.append(name, value);
    }
    // A coding overrides a length, and a proxy drops the length before passing the answer on
    // (RFC 9112 §6.1), as the fast path does.
    if framing.encoded {
        fields.remove(header::CONTENT_LENGTH);
    }
    Ok(Parsed::Final(
        len,
        Head {
            status,
            version: if version == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            },
            framing: framing.framing,
            reusable: !framing.upstream_close && framing.framing != Framing::Close,
        },
    ))
}

/// The answer to build from `head` and its `fields`, its body read from `stream` after the
/// bytes `rest` already read.
fn answer(
    head: Head,
    fields: HeaderMap,
    stream: TcpStream,
    rest: Bytes,
    addr: SocketAddr,
    keep: bool,
    s: Settings,
) -> Response<UpBody> {
    let back = (head.reusable && keep).then_some(Back {
        addr,
        idle: s.idle_timeout,
        max_idle: s.max_idle.min(MAX_IDLE_PER_ENDPOINT),
    });
    let body = DirectBody::new(stream, rest, head.framing, back, s.idle_timeout);
    let mut resp = Response::new(UpBody::direct(body));
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = fields;
    resp
}

/// Where a socket goes back at the end of its answer's body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Back {
    addr: SocketAddr,
    idle: std::time::Duration,
    max_idle: usize,
}

impl Back {
    fn give(self, stream: TcpStream) {
        sockets::checkin(self.addr, stream, Instant::now(), self.idle, self.max_idle);
    }
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn bad_owned(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests;
