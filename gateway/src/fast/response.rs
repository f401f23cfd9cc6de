//! Upstream response heads and bodies on the fast path: parse the head, write the head the
//! client gets, and find where a body ends (length, chunked, or the upstream closing).
//!
//! Pure, like [`head`](super::head): unit-tested here and fuzzed.

use super::head::{MAX_HEADERS, named_in_connection, tokens};

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed as it is.
    Chunked,
    /// Until the upstream closes; the client's connection closes after it.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RespHead {
    /// Length of the head, up to and including the blank line.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// The upstream connection may carry another request afterwards.
    pub reusable: bool,
}

/// The outcome of [`prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RespStep {
    /// The head is not complete yet.
    Partial,
    /// An informational (1xx) head of this length: skip it and read on.
    Informational(usize),
    /// Not a response the gateway can relay (malformed, `101`, conflicting lengths): 502.
    Bad,
    /// The final head; `out` holds the client's head.
    Head(RespHead),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Date,
    Connection,
    ContentLength,
    TransferEncoding,
    HopByHop,
    Other,
}

fn name_of(name: &str) -> Name {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Name::HopByHop,
        4 if is("date") => Name::Date,
        7 if is("upgrade") || is("trailer") => Name::HopByHop,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::HopByHop,
        14 if is("content-length") => Name::ContentLength,
        16 if is("proxy-connection") => Name::HopByHop,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        18 if is("proxy-authenticate") => Name::HopByHop,
        19 if is("proxy-authorization") => Name::HopByHop,
        _ => Name::Other,
    }
}

/// Parses the upstream's response head at the start of `buf` (the answer to a `HEAD` request
/// when `head_method`) and writes the client's head into `out` (cleared first), with
/// `Connection: close` when `close` (or when the body ends with the upstream's close) and
/// `Date: date` when the upstream sent none.
pub(crate) fn prepare(
    buf: &[u8],
    head_method: bool,
    close: bool,
    date: &[u8],
    out: &mut Vec<u8>,
) -> RespStep {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return RespStep::Partial,
        Err(_) => return RespStep::Bad,
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return RespStep::Bad;
    };
    match status {
        // Status codes are 100 to 599 (RFC 9110 §15); `101` answers only an upgrade, which
        // this path does not take.
        0..=99 | 101 | 600.. => return RespStep::Bad,
        100..=199 => return RespStep::Informational(len),
        _ => {}
    }
    let Some(fields) = Fields::read(resp.headers, version, status, head_method) else {
        return RespStep::Bad;
    };
    let Fields {
        framing,
        encoded,
        chunked,
        names_headers,
        has_date,
        upstream_close,
    } = fields;
    let close = close || framing == Framing::Close;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let write = match name_of(h.name) {
            Name::Connection | Name::HopByHop => false,
            Name::Date => true,
            // Chunked framing is relayed as it is; the length would contradict it. A `204`
            // carries none (RFC 9110 §8.6).
            Name::ContentLength => !encoded && status != 204,
            Name::TransferEncoding => false,
            Name::Other => !(names_headers && named_in_connection(resp.headers, h.name)),
        };
        if write {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    // A `HEAD` answer keeps the coding the `GET` would have.
    if framing == Framing::Chunked || (chunked && head_method) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(if version == 0 {
        b"via: 1.0 tollgate\r\n"
    } else {
        b"via: 1.1 tollgate\r\n"
    });
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    RespStep::Head(RespHead {
        len,
        status,
        framing,
        reusable: !upstream_close && framing != Framing::Close,
    })
}

/// What a response head's fields say about its framing and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    /// How the body ends.
    pub framing: Framing,
    /// A `Transfer-Encoding` was sent (so `Content-Length` does not count).
    pub encoded: bool,
    /// `chunked` is the last coding.
    pub chunked: bool,
    /// `Connection` names fields (hop-by-hop for this connection only).
    pub names_headers: bool,
    /// A `Date` was sent.
    pub has_date: bool,
    /// The upstream closes the connection after this answer (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub upstream_close: bool,
}

impl Fields {
    /// Reads the fields of a final (non-1xx) response head: `version` as httparse gives it
    /// (0 or 1), the answer to a `HEAD` request when `head_method`. `None`: the framing
    /// cannot be known (a bad or conflicting `Content-Length`, a coding on HTTP/1.0), so the
    /// answer is not relayed (RFC 9112 §6.3).
    pub(crate) fn read(
        headers: &[httparse::Header<'_>],
        version: u8,
        status: u16,
        head_method: bool,
    ) -> Option<Self> {
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        let (mut saw_close, mut saw_keep_alive) = (false, false);
        let mut names_headers = false;
        let mut has_date = false;
        for h in headers {
            match name_of(h.name) {
                Name::Date => has_date = true,
                Name::ContentLength => {
                    let n = std::str::from_utf8(h.value)
                        .ok()
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())?;
                    if length.is_some_and(|m| m != n) {
                        return None;
                    }
                    length = Some(n);
                }
                Name::TransferEncoding => {
                    // Chunked only when it is the last coding (RFC 9112 §6.3); an empty field
                    // names no coding (RFC 9110 §5.6.1), but the field still means the length
                    // is not `Content-Length`.
                    encoded = true;
                    if let Some(last) = tokens(h.value).last() {
                        chunked = last.eq_ignore_ascii_case(b"chunked");
                    }
                }
                Name::Connection => {
                    for t in tokens(h.value) {
                        if t.eq_ignore_ascii_case(b"close") {
                            saw_close = true;
                            names_headers = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            saw_keep_alive = true;
                        } else {
                            names_headers = true;
                        }
                    }
                }
                Name::HopByHop | Name::Other => {}
            }
        }
        // `close` wins over `keep-alive`; HTTP/1.0 closes unless kept alive (RFC 9112 §9.3).
        let upstream_close = saw_close || (version == 0 && !saw_keep_alive);
        // An HTTP/1.0 message cannot be chunked; a coding there means the framing is unknown
        // (RFC 9112 §6.1).
        if encoded && version == 0 {
            return None;
        }
        let framing = if head_method || status == 204 || status == 304 {
            Framing::Empty
        } else if encoded {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            length.map_or(Framing::Close, Framing::Length)
        };
        Some(Self {
            framing,
            encoded,
            chunked,
            names_headers,
            has_date,
            upstream_close,
        })
    }
}

fn status_digits(status: u16) -> [u8; 3] {
    [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

/// Whether the body bytes read with the head (`bytes`) can start a body of `framing`: a
/// chunked body whose first chunk-size line is already malformed is refused before the head
/// goes out (by both HTTP/1.1 readers), so the client gets a `502` rather than a `200` head
/// and a cut connection.
pub(crate) fn first_piece_is_valid(bytes: &[u8], framing: Framing) -> bool {
    framing != Framing::Chunked || Chunked::default().feed(bytes).is_ok()
}

/// A chunked body's end, found as the bytes go by (RFC 9112 §7.1); the bytes themselves are
/// relayed unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Chunked {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading a chunk size; `digits` seen so far.
    #[default]
    Start,
    Size {
        value: u64,
    },
    /// Whitespace after the size digits: an extension's `;` or the CR must follow (RFC 9112
    /// §7.1: `chunk-size [ chunk-ext ] CRLF`, an extension starting `BWS ";"`), as hyper's
    /// decoder requires; `2 3` or `2 junk` is not a size.
    SizeLws {
        value: u64,
    },
    /// Chunk extensions, up to the CR.
    Ext {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadChunk;

impl Chunked {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the body ends after `data[..n]`;
    /// `Ok(None)`: all of `data` belongs to it and more follows.
    ///
    /// # Errors
    /// [`BadChunk`] when the bytes are not a chunked body.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                State::Start | State::Size { .. } => {
                    let value = match self.state {
                        State::Size { value } => value,
                        _ => 0,
                    };
                    let digit = (b as char).to_digit(16);
                    match (digit, self.state) {
                        (Some(d), _) => State::Size {
                            value: value
                                .checked_mul(16)
                                .and_then(|v| v.checked_add(u64::from(d)))
                                .ok_or(BadChunk)?,
                        },
                        (None, State::Start) => return Err(BadChunk),
                        (None, _) if b == b';' => State::Ext { value },
                        (None, _) if b == b' ' || b == b'\t' => State::SizeLws { value },
                        (None, _) if b == b'\r' => State::SizeLf { value },
                        (None, _) => return Err(BadChunk),
                    }
                }
                State::SizeLws { value } => match b {
                    b' ' | b'\t' => State::SizeLws { value },
                    b';' => State::Ext { value },
                    b'\r' => State::SizeLf { value },
                    _ => return Err(BadChunk),
                },
                State::Ext { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(BadChunk),
                    _ => State::Ext { value },
                },
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return Err(BadChunk),
                },
                State::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == n {
                        State::DataCr
                    } else {
                        State::Data(n - take)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Start,
                State::DataCr | State::DataLf => return Err(BadChunk),
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::TrailerLine if b == b'\n' => return Err(BadChunk),
                State::TrailerStart | State::TrailerLine if b == b'\r' => State::TrailerLf,
                State::TrailerStart | State::TrailerLine => State::TrailerLine,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::TrailerLf => return Err(BadChunk),
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::EndLf => return Err(BadChunk),
                State::Done => return Ok(Some(i)),
            };
            i += 1;
        }
        Ok(if self.state == State::Done {
            Some(0)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn head(resp: &[u8], head_method: bool, close: bool) -> (RespHead, String) {
        let mut out = Vec::new();
        match prepare(resp, head_method, close, DATE, &mut out) {
            RespStep::Head(h) => (h, String::from_utf8(out).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relays_a_length_response_without_hop_by_hop_headers() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-private\r\n\
            X-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: y\r\n\r\nhello";
        let (h, out) = head(resp, false, false);
        assert_eq!(h.len, resp.len() - 5);
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kept: y\r\nvia: 1.1 tollgate\r\n\
             date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_the_rules() {
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n";
        let (h, out) = head(chunked, false, false);
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!out.contains("Content-Length"), "{out}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        let until_close = b"HTTP/1.1 200 OK\r\n\r\n";
        let (h, out) = head(until_close, false, false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        assert!(out.contains("connection: close\r\n"), "{out}");
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            true,
            false,
        );
        assert_eq!(h.framing, Framing::Empty);
        for status in ["204 No Content", "304 Not Modified"] {
            let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(
                head(resp.as_bytes(), false, false).0.framing,
                Framing::Empty
            );
        }
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
            false,
        );
        assert!(!h.reusable);
        let (h, out) = head(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(!h.reusable);
        assert!(out.contains("via: 1.0 tollgate"), "{out}");
        let (h, _) = head(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            false,
            false,
        );
        assert!(h.reusable);
        let (_, out) = head(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
            true,
        );
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
    }

    #[test]
    fn informational_bad_and_partial() {
        let mut out = Vec::new();
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(
            prepare(early, false, false, DATE, &mut out),
            RespStep::Informational(40)
        );
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"NOPE\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(prepare(bad, false, false, DATE, &mut out), RespStep::Bad);
        }
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..ok.len() {
            assert_eq!(
                prepare(&ok[..cut], false, false, DATE, &mut out),
                RespStep::Partial
            );
        }
    }

    #[test]
    fn chunked_end_is_found_at_any_split() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..=body.len() {
            let mut c = Chunked::default();
            let first = c.feed(&body[..split]).unwrap();
            let got = match first {
                Some(n) => n,
                None => split + c.feed(&body[split..]).unwrap().expect("ends"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(5)));
    }

    #[test]
    fn bad_chunks_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\r\nhelloXX",
            b"5\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nX\n",
            // Something other than an extension after the size's whitespace (RFC 9112 §7.1).
            b"2 3\r\nok\r\n0\r\n\r\n",
            b"2 junk\r\nok\r\n0\r\n\r\n",
            b"2\t \tx;a\r\nok\r\n0\r\n\r\n",
        ] {
            assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
        }
        // Whitespace before an extension or the CR is allowed, as hyper allows it.
        for good in [
            &b"2 ;a=b\r\nok\r\n0\r\n\r\n"[..],
            b"2\t \r\nok\r\n0 \r\n\r\n",
            b"2;a=\"x y\"\r\nok\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                Chunked::default().feed(good),
                Ok(Some(good.len())),
                "{good:?}"
            );
        }
    }
}
