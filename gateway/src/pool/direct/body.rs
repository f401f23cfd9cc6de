//! The body of an answer on the direct client: read from its socket as it is polled, the
//! chunked coding taken off, the socket given back to the thread's idle ones at its end.

use super::{Back, MAX_HEAD, READ_ROOM, bad};
use crate::fast::response::Framing;
use crate::pool::body::Stall;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;

/// The longest chunk-size line taken (with its extensions).
const MAX_SIZE_LINE: usize = 4 * 1024;

/// An answer body read from its socket (see the module docs).
#[derive(Debug)]
pub(crate) struct DirectBody {
    /// `None` once the body ended (the socket went back or was closed) or failed.
    stream: Option<TcpStream>,
    /// Bytes read with the answer head and not yet handed out (in a shared block: a small
    /// body read with its head costs no allocation).
    pre: Bytes,
    /// Bytes read since and not yet handed out.
    buf: BytesMut,
    state: State,
    /// Where the socket goes at the end, when it can carry another request.
    back: Option<Back>,
    stall: Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

/// Where a chunked body's reader is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    /// This many bytes of the chunk still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// What the buffered bytes give.
enum Step {
    Frame(Frame<Bytes>),
    /// The body ended with no further frame.
    End,
    /// More bytes are needed.
    More,
}

impl DirectBody {
    /// The body framed by `framing`, read from `stream` after the bytes in `pre`; the socket
    /// goes `back` at the end (when set), and the body fails after `idle` without a byte.
    pub(super) fn new(
        stream: TcpStream,
        pre: Bytes,
        framing: Framing,
        back: Option<Back>,
        idle: Duration,
    ) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = Self {
            stream: Some(stream),
            pre,
            buf: BytesMut::new(),
            state,
            back,
            stall: Stall::new(idle),
        };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The body ended: the socket goes back if it may carry another request (nothing
    /// unread after the body), else it closes.
    fn finish(&mut self) {
        self.state = State::Done;
        let stream = self.stream.take();
        if let (Some(stream), Some(back)) = (stream, self.back.take())
            && self.pre.is_empty()
            && self.buf.is_empty()
        {
            back.give(stream);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.stream = None;
        self.back = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }

    /// The next frame from the buffered bytes.
    fn step(&mut self) -> io::Result<Step> {
        Ok(match self.state {
            State::Done => Step::End,
            State::Length(n) => {
                let data = if !self.pre.is_empty() {
                    let take = n.min(self.pre.len() as u64);
                    self.pre.split_to(take as usize)
                } else if !self.buf.is_empty() {
                    let take = n.min(self.buf.len() as u64);
                    self.buf.split_to(take as usize).freeze()
                } else {
                    return Ok(Step::More);
                };
                if data.len() as u64 == n {
                    self.finish();
                } else {
                    self.state = State::Length(n - data.len() as u64);
                }
                Step::Frame(Frame::data(data))
            }
            State::Close if !self.pre.is_empty() => {
                Step::Frame(Frame::data(std::mem::take(&mut self.pre)))
            }
            State::Close if self.buf.is_empty() => Step::More,
            State::Close => Step::Frame(Frame::data(self.buf.split().freeze())),
            State::Chunked(chunk) => {
                if !self.pre.is_empty() {
                    self.buf.extend_from_slice(&self.pre);
                    self.pre = Bytes::new();
                }
                self.chunk(chunk)?
            }
        })
    }

    fn chunk(&mut self, mut chunk: Chunk) -> io::Result<Step> {
        loop {
            let (next, step) = chunk_step(chunk, &mut self.buf)?;
            chunk = next;
            match step {
                None => {}
                Some(Step::End) => {
                    self.finish();
                    return Ok(Step::End);
                }
                Some(Step::Frame(f)) if f.is_trailers() => {
                    self.finish();
                    return Ok(Step::Frame(f));
                }
                Some(step) => {
                    self.state = State::Chunked(chunk);
                    return Ok(step);
                }
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One step of the chunked reader at `chunk` over `buf`: the next state, and what it gave
/// (`None`: go on from the next state).
fn chunk_step(chunk: Chunk, buf: &mut BytesMut) -> io::Result<(Chunk, Option<Step>)> {
    match chunk {
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                if buf.len() > MAX_SIZE_LINE {
                    return Err(bad("upstream chunk size line too long"));
                }
                // Refused as soon as it cannot become a size line, as the fast path does.
                let (line, cr) = match buf.split_last() {
                    Some((b'\r', line)) => (line, true),
                    _ => (&buf[..], false),
                };
                if (cr || !line.is_empty()) && chunk_size(line).is_none() {
                    return Err(bad("malformed upstream chunk size"));
                }
                return Ok((chunk, Some(Step::More)));
            };
            if lf > MAX_SIZE_LINE || lf == 0 || buf[lf - 1] != b'\r' {
                return Err(bad("malformed upstream chunk size"));
            }
            let size =
                chunk_size(&buf[..lf - 1]).ok_or_else(|| bad("malformed upstream chunk size"))?;
            buf.advance(lf + 1);
            Ok(match size {
                0 => (Chunk::Trailers, None),
                n => (Chunk::Data(n), None),
            })
        }
        Chunk::Data(_) if buf.is_empty() => Ok((chunk, Some(Step::More))),
        Chunk::Data(n) => {
            let take = n.min(buf.len() as u64);
            let data = buf.split_to(take as usize).freeze();
            let next = if take == n {
                Chunk::DataEnd
            } else {
                Chunk::Data(n - take)
            };
            Ok((next, Some(Step::Frame(Frame::data(data)))))
        }
        Chunk::DataEnd if buf.first().is_some_and(|&b| b != b'\r') => {
            Err(bad("malformed upstream chunk end"))
        }
        Chunk::DataEnd if buf.len() < 2 => Ok((chunk, Some(Step::More))),
        Chunk::DataEnd => {
            if &buf[..2] != b"\r\n" {
                return Err(bad("malformed upstream chunk end"));
            }
            buf.advance(2);
            Ok((Chunk::Size, None))
        }
        Chunk::Trailers => match trailer_section(buf)? {
            None => Ok((chunk, Some(Step::More))),
            Some(0) => {
                buf.advance(2);
                Ok((chunk, Some(Step::End)))
            }
            Some(len) => {
                let trailers = trailers(&buf[..len]);
                buf.advance(len);
                Ok((chunk, Some(Step::Frame(Frame::trailers(trailers)))))
            }
        },
    }
}

/// The length of the trailer section at the start of `buf` (its lines and the blank line
/// that ends it; 0 when there is no field, only that line), `None` when it is not all there
/// yet. Framed as the fast path frames it ([`Chunked`](crate::fast::response::Chunked)):
/// lines of any bytes, each ended by CRLF, a bare LF refused.
fn trailer_section(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    while let Some(lf) = buf[at..].iter().position(|&b| b == b'\n') {
        let line = &buf[at..at + lf];
        if line.last() != Some(&b'\r') || line[..line.len() - 1].contains(&b'\r') {
            return Err(bad("malformed upstream trailers"));
        }
        if line.len() == 1 {
            return Ok(Some(if at == 0 { 0 } else { at + lf + 1 }));
        }
        at += lf + 1;
    }
    // Refused as soon as a CR is not followed by LF, as the fast path does.
    let tail = &buf[at..];
    if tail.len() > 1 && tail[..tail.len() - 1].contains(&b'\r') {
        return Err(bad("malformed upstream trailers"));
    }
    if buf.len() > MAX_HEAD {
        return Err(bad("upstream trailers too large"));
    }
    Ok(None)
}

/// The fields of a trailer section (lines that are not a valid field are left out, as
/// they carry nothing a client could read).
fn trailers(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// The size of a chunk-size line (without its CRLF): hex digits, then optional whitespace and
/// extensions (anything after a `;`), as the fast path takes them (RFC 9112 §7.1; hyper's
/// decoder likewise refuses anything but a `;` after the whitespace).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let lws = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let ext = &rest[lws..];
    if digits == 0
        || ext.first().is_some_and(|&b| b != b';')
        || rest.iter().any(|&b| b == b'\r' || b == b'\n')
    {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |v, &b| {
        let d = (b as char).to_digit(16)?;
        v.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// How a chunked body fed in the pieces between `cuts` (sorted offsets) decodes: its data,
/// whether trailers came, and the offset where it ended (`None`: not yet). For the fuzz
/// harness, which checks it against the fast path's framing.
///
/// # Errors
/// When the reader refuses the bytes.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub(crate) fn dechunk(wire: &[u8], cuts: &[usize]) -> io::Result<(Vec<u8>, bool, Option<usize>)> {
    let mut buf = BytesMut::new();
    let mut chunk = Chunk::Size;
    let mut data = Vec::new();
    let mut fed = 0;
    let mut pieces = cuts.iter().copied().chain([wire.len()]);
    loop {
        let (next, step) = chunk_step(chunk, &mut buf)?;
        chunk = next;
        match step {
            None => {}
            Some(Step::End) => return Ok((data, false, Some(fed - buf.len()))),
            Some(Step::Frame(f)) if f.is_trailers() => {
                return Ok((data, true, Some(fed - buf.len())));
            }
            Some(Step::Frame(f)) => data.extend_from_slice(&f.into_data().unwrap_or_default()),
            Some(Step::More) => match pieces.find(|&to| to > fed) {
                Some(to) => {
                    buf.extend_from_slice(&wire[fed..to]);
                    fed = to;
                }
                None => return Ok((data, false, None)),
            },
        }
    }
}

impl http_body::Body for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            match this.step() {
                Ok(Step::Frame(f)) => {
                    this.stall.progressed();
                    return Poll::Ready(Some(Ok(f)));
                }
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(e) => return this.fail(e),
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < READ_ROOM / 4 {
                this.buf.reserve(READ_ROOM);
            }
            match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) if this.state == State::Close => {
                    this.back = None;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return this.fail(bad("upstream closed before the end of the body"));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Pending => {
                    ready!(this.stall.pending(cx));
                    this.state = State::Done;
                    this.stream = None;
                    this.back = None;
                    return Poll::Ready(Some(Err(Box::new(crate::pool::body::BodyStalled))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `wire` gives when it arrives split at `at`, and how many of its bytes are
    /// left after the body.
    fn dechunk(wire: &[u8], at: usize) -> io::Result<(Vec<u8>, Option<HeaderMap>, usize)> {
        let mut buf = BytesMut::new();
        let mut chunk = Chunk::Size;
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match chunk_step(chunk, &mut buf)? {
                (_, Some(Step::End)) => return Ok((data, trailers, buf.len() + wire.len() - fed)),
                (_, Some(Step::Frame(f))) if f.is_trailers() => {
                    trailers = f.into_trailers().ok();
                    return Ok((data, trailers, buf.len() + wire.len() - fed));
                }
                (next, Some(Step::Frame(f))) => {
                    data.extend_from_slice(&f.into_data().unwrap());
                    chunk = next;
                }
                (next, Some(Step::More)) => {
                    chunk = next;
                    if fed == wire.len() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let end = if fed < at { at } else { wire.len() };
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                (next, None) => chunk = next,
            }
        }
    }

    #[test]
    fn chunks_are_decoded_at_any_split() {
        let wire = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\n\r\nNEXT";
        for at in 0..wire.len() {
            let (data, trailers, left) = dechunk(wire, at).unwrap();
            assert_eq!(data, b"hello, world", "split at {at}");
            assert!(trailers.is_none());
            assert_eq!(
                left, 4,
                "what follows the body stays unread (split at {at})"
            );
        }
    }

    #[test]
    fn trailers_become_a_frame() {
        let wire = b"3\r\nabc\r\n0\r\nx-checksum: 42\r\nx-other: y\r\n\r\n";
        for at in 0..wire.len() {
            let (data, trailers, left) = dechunk(wire, at).unwrap();
            assert_eq!(data, b"abc");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-checksum"], "42");
            assert_eq!(t["x-other"], "y");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn bad_chunks_are_refused() {
        for wire in [
            &b"z\r\nabc\r\n0\r\n\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"3x\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nx: y\n\r\n",
            b"\r\n",
        ] {
            let err = dechunk(wire, wire.len()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{wire:?}");
        }
        assert_eq!(chunk_size(b"1f ; ext"), Some(31));
        assert_eq!(chunk_size(b"00000000000000000001"), Some(1));
        assert_eq!(chunk_size(b"0"), Some(0));
    }
}
