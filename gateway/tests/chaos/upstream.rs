//! A chaos upstream: a raw-TCP HTTP/1.1 server on loopback whose behaviour is switched at
//! runtime, so one test can break an endpoint, watch the gateway react, and heal it again.
//!
//! It is written on bare tokio sockets rather than hyper because hyper cannot misbehave on
//! purpose: reset a connection mid-exchange, answer bytes that are not HTTP, or hold a request
//! forever while the connection stays open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the upstream does with each request it reads (`GET /healthz` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// `200 OK`, body `ok from <addr>`.
    Ok = 0,
    /// Reads the request, then resets the connection (RST, no answer).
    Reset = 1,
    /// Reads the request and never answers; the connection stays open until the peer closes it.
    Hang = 2,
    /// Answers bytes that are not HTTP, then closes.
    Garbage = 3,
    /// `200 OK` after the delay set with [`ChaosUpstream::set_delay`].
    Slow = 4,
    /// `503 Service Unavailable`.
    Unavailable = 5,
    /// Sends a `200 OK` head and part of the body it announces, then stalls; the connection
    /// stays open until the peer closes it.
    StallBody = 6,
}

impl Mode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Reset,
            2 => Self::Hang,
            3 => Self::Garbage,
            4 => Self::Slow,
            5 => Self::Unavailable,
            6 => Self::StallBody,
            _ => Self::Ok,
        }
    }
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    requests: AtomicU64,
    health_checks: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    connections: AtomicU64,
}

/// A running chaos upstream; dropping it stops accepting (open connections finish their
/// current request).
#[derive(Debug)]
pub struct ChaosUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// Relaxed on every counter and switch below: each is a single independent value read by the
// test after the gateway answered; no other memory is published through them.
impl ChaosUpstream {
    /// Starts one on a free loopback port, in `mode`.
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            addr,
            mode: AtomicU8::new(mode as u8),
            delay_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                s.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// Switches what it does with the next request read.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// The delay of [`Mode::Slow`].
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests read so far, health checks not counted.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// `GET /healthz` requests read so far.
    pub fn health_checks(&self) -> u64 {
        self.shared.health_checks.load(Ordering::Relaxed)
    }

    /// The most requests (health checks not counted) it held at once.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

/// Counts a request in flight until dropped.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(s: &'a Shared) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        s.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The parts of a request head the server needs.
struct Head {
    path: String,
    content_length: usize,
    chunked: bool,
    close: bool,
}

/// Reads more bytes into `buf`; false at end of stream or on an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request head; `None` when the peer closed or sent something unusable.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 || !fill(stream, buf).await {
            return None;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut head = Head {
        path,
        content_length: 0,
        chunked: false,
        close: false,
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.content_length = value.parse().ok()?,
            "transfer-encoding" => head.chunked = value.contains("chunked"),
            "connection" => head.close = value.contains("close"),
            _ => {}
        }
    }
    Some(head)
}

/// Reads (and drops) the request body; false when the peer closed first.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, head: &Head) -> bool {
    if !head.chunked {
        while buf.len() < head.content_length {
            if !fill(stream, buf).await {
                return false;
            }
        }
        buf.drain(..head.content_length);
        return true;
    }
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !fill(stream, buf).await {
                return false;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return false;
        };
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let Some(i) = find(buf, b"\r\n") else {
                    if !fill(stream, buf).await {
                        return false;
                    }
                    continue;
                };
                buf.drain(..i + 2);
                if i == 0 {
                    return true;
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return false;
            }
        }
        buf.drain(..size + 2);
    }
}

async fn answer(stream: &mut TcpStream, status: &str, body: &str) -> bool {
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await.is_ok()
}

/// Serves one connection, request after request, each as the mode says at the time it is read.
async fn serve(mut stream: TcpStream, s: Arc<Shared>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        if !read_body(&mut stream, &mut buf, &head).await {
            return;
        }
        let _counted = if head.path == "/healthz" {
            s.health_checks.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            s.requests.fetch_add(1, Ordering::Relaxed);
            Some(InFlight::enter(&s))
        };
        let ok = format!("ok from {}\n", s.addr);
        let sent = match Mode::from_u8(s.mode.load(Ordering::Relaxed)) {
            Mode::Ok => answer(&mut stream, "200 OK", &ok).await,
            Mode::Slow => {
                let delay = s.delay_ms.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                answer(&mut stream, "200 OK", &ok).await
            }
            Mode::Unavailable => {
                let body = format!("unavailable from {}\n", s.addr);
                answer(&mut stream, "503 Service Unavailable", &body).await
            }
            Mode::Reset => {
                // A zero linger turns the close into an RST.
                let _ = stream.set_zero_linger();
                return;
            }
            Mode::Hang => {
                hold(&mut stream).await;
                return;
            }
            Mode::StallBody => {
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(b"partial...").await;
                hold(&mut stream).await;
                return;
            }
            Mode::Garbage => {
                let _ = stream
                    .write_all(b"\x16\x03\x01\x00\xffthis is not http\r\n\r\n\x00\x01")
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        if !sent || head.close {
            return;
        }
    }
}

/// Holds a connection until the peer gives up and closes it.
async fn hold(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
