//! The wire: a raw HTTP/1.1 reader and writer for both the client and the upstream side.

use crate::STEP;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

/// A message head: the start line and the header fields in wire order.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) first: String,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) raw: String,
}

impl Head {
    pub(crate) fn parse(bytes: &[u8]) -> io::Result<Head> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let mut lines = raw.split("\r\n").filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.to_owned()))?;
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        Ok(Head { first, fields, raw })
    }

    /// Every value of `name` (case-insensitive), in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    /// Whether a comma-separated field `name` lists `token` (case-insensitive).
    pub(crate) fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub(crate) fn chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }

    pub(crate) fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad content-length in {:?}", self.raw))
        })
    }

    /// The status code of a response head.
    pub(crate) fn status(&self) -> u16 {
        self.first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.first))
    }

    /// Method and target of a request head, e.g. `GET /a?b`.
    pub(crate) fn request_line(&self) -> String {
        let mut parts = self.first.split(' ');
        format!(
            "{} {}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        )
    }

    pub(crate) fn target(&self) -> &str {
        self.first.split(' ').nth(1).unwrap_or_default()
    }
}

/// A response as the client read it.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) head: Head,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Vec<(String, String)>,
}

impl Resp {
    pub(crate) fn status(&self) -> u16 {
        self.head.status()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and the body.
    #[track_caller]
    pub(crate) fn expect(&self, status: u16, body: &str, path: &str) {
        assert_eq!(
            (self.status(), self.text().as_str()),
            (status, body),
            "{path}: head {:?}",
            self.head.raw
        );
    }
}

/// A request as the upstream read it.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) head: Head,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn eof() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The read side of a connection, with the bytes read but not yet consumed.
pub(crate) struct Reader {
    pub(crate) r: OwnedReadHalf,
    pub(crate) buf: Vec<u8>,
}

impl Reader {
    /// Reads more bytes; the peer closing is `UnexpectedEof`.
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.r.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    pub(crate) async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    pub(crate) async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// The next head; `None` when the peer closed cleanly before sending any of it.
    pub(crate) async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let bytes: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Head::parse(&bytes).map(Some);
            }
            match self.fill().await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                    return Ok(None);
                }
                r => r?,
            }
        }
    }

    /// A chunked body: its data and its trailer fields.
    pub(crate) async fn chunked(&mut self) -> io::Result<(Vec<u8>, Vec<(String, String)>)> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let line = self.line().await?;
                    if line.is_empty() {
                        return Ok((body, trailers));
                    }
                    let (n, v) = line
                        .split_once(':')
                        .ok_or_else(|| invalid(format!("bad trailer {line:?}")))?;
                    trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            body.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    /// Everything until the peer closes.
    pub(crate) async fn until_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill().await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(std::mem::take(&mut self.buf));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One response (informational ones included) to a request with `method`.
    pub(crate) async fn response(&mut self, method: &str) -> io::Result<Resp> {
        let head = self.head().await?.ok_or_else(eof)?;
        let status = head.status();
        let bodiless =
            (100..200).contains(&status) || status == 204 || status == 304 || method == "HEAD";
        let (body, trailers) = if bodiless {
            (Vec::new(), Vec::new())
        } else if head.chunked() {
            self.chunked().await?
        } else if let Some(n) = head.content_length() {
            (self.take(n).await?, Vec::new())
        } else {
            (self.until_close().await?, Vec::new())
        };
        Ok(Resp {
            head,
            body,
            trailers,
        })
    }

    /// The final response to a request with `method`, informational ones skipped.
    pub(crate) async fn final_response(&mut self, method: &str) -> io::Result<Resp> {
        loop {
            let r = self.response(method).await?;
            if !(100..200).contains(&r.status()) || r.status() == 101 {
                return Ok(r);
            }
        }
    }

    /// The next request; `None` when the peer closed between requests.
    pub(crate) async fn request(&mut self) -> io::Result<Option<Req>> {
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let body = if head.chunked() {
            self.chunked().await?.0
        } else if let Some(n) = head.content_length() {
            self.take(n).await?
        } else {
            Vec::new()
        };
        Ok(Some(Req { head, body }))
    }
}

/// A raw connection: client to gateway, or gateway to a scripted upstream.
pub(crate) struct Wire {
    pub(crate) rd: Reader,
    pub(crate) w: OwnedWriteHalf,
}

impl Wire {
    pub(crate) fn new(s: TcpStream) -> Wire {
        // Small writes go out as they are (the dribbling scenarios rely on it).
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Wire {
            rd: Reader { r, buf: Vec::new() },
            w,
        }
    }

    pub(crate) async fn connect(addr: SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.expect("gateway accepts"))
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write");
    }

    /// The final response to a request with `method`, within [`STEP`].
    pub(crate) async fn reply(&mut self, method: &str) -> Resp {
        timeout(STEP, self.rd.final_response(method))
            .await
            .unwrap_or_else(|_| panic!("no response within {STEP:?}"))
            .unwrap_or_else(|e| panic!("incomplete response: {e}"))
    }

    /// Writes `bytes` while reading the final response (for bodies larger than the socket
    /// buffers).
    pub(crate) async fn send_and_reply(&mut self, bytes: &[u8], method: &str) -> Resp {
        let (written, resp) = timeout(STEP, async {
            tokio::join!(self.w.write_all(bytes), self.rd.final_response(method))
        })
        .await
        .unwrap_or_else(|_| panic!("no response within {STEP:?}"));
        written.expect("request written");
        resp.unwrap_or_else(|e| panic!("incomplete response: {e}"))
    }

    /// Asserts the peer closes (EOF or reset) within [`STEP`], sending nothing more.
    pub(crate) async fn expect_closed(&mut self, path: &str) {
        let r = timeout(STEP, self.rd.fill())
            .await
            .unwrap_or_else(|_| panic!("{path}: connection still open after {STEP:?}"));
        assert!(
            r.is_err(),
            "{path}: bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.rd.buf)
        );
    }
}
