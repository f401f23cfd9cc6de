//! The fast path's buffers (a set per connection while it has a request, kept per thread
//! between requests) and its socket helpers.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A buffer with its bytes at `start..end` (always initialized: `data.len()` is its size).
#[derive(Debug)]
pub(super) struct Buf {
    pub(super) data: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Buf {
    pub(super) fn new() -> Self {
        Self {
            data: vec![0; BUF],
            start: 0,
            end: 0,
        }
    }

    /// A buffer that holds no memory: the place of one a request has taken along.
    pub(super) const fn taken() -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Room to read into: moves pending bytes to the front, then grows up to `max`.
    pub(super) fn room(&mut self, max: usize) -> Option<&mut [u8]> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() {
            if self.data.len() >= max {
                return None;
            }
            let size = (self.data.len() * 2).min(max);
            self.data.resize(size, 0);
        }
        Some(&mut self.data[self.end..])
    }
}

/// A connection's buffers while it has a request: client bytes in, upstream bytes in, and
/// bytes out (either way).
#[derive(Debug)]
pub(super) struct Bufs {
    pub(super) cin: Buf,
    pub(super) uin: Buf,
    pub(super) out: Vec<u8>,
}

impl Bufs {
    /// Gives back buffers that a request took along (see [`stacked`](super::stacked)) and
    /// lost, failing: a fresh one in the place of each.
    pub(super) fn refill(&mut self) {
        if self.uin.data.is_empty() {
            self.uin = Buf::new();
        }
        if self.out.capacity() == 0 {
            self.out = Vec::with_capacity(BUF);
        }
    }
}

/// Initial buffer size.
const BUF: usize = 16 * 1024;
/// Buffers grown past this (a large head) are not kept for reuse.
const KEEP: usize = 4 * BUF;
/// Spare buffer sets kept per thread.
const SPARE: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Bufs>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn take_bufs() -> Bufs {
    FREE.with(|f| f.borrow_mut().pop()).unwrap_or_else(|| Bufs {
        cin: Buf::new(),
        uin: Buf::new(),
        out: Vec::with_capacity(BUF),
    })
}

pub(super) fn give_bufs(mut b: Bufs) {
    if b.cin.data.len() > KEEP || b.uin.data.len() > KEEP || b.out.capacity() > KEEP {
        return;
    }
    b.cin.clear();
    b.uin.clear();
    b.out.clear();
    // `try_with`: a connection may end while its thread exits.
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < SPARE {
            f.push(b);
        }
    });
}

/// Reads what `s` has now, without waiting: `None` when it had nothing after all. A read that
/// leaves the socket drained tells tokio so (no extra `read` later just to learn it).
pub(super) async fn read_now(s: &mut TcpStream, into: &mut [u8]) -> Option<io::Result<usize>> {
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(into);
        match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(rb.filled().len()))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
}

/// Writes all of `bytes` to `s`, failing if no byte moves for `idle`.
pub(super) async fn write_all(s: &mut TcpStream, bytes: &[u8], idle: Duration) -> io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        // Most writes complete at once, with no timer.
        let n = match s.try_write(&bytes[off..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(idle, s.write(&bytes[off..])).await {
                    Ok(r) => r?,
                    Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                }
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        off += n;
    }
    Ok(())
}

/// Reads into `into`, failing if nothing arrives for `idle`; `Ok(0)` is the peer's close.
pub(super) async fn read(s: &mut TcpStream, into: &mut [u8], idle: Duration) -> io::Result<usize> {
    match tokio::time::timeout(idle, s.read(into)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}
