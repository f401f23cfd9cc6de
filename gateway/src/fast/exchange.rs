//! One request's upstream exchange: a pooled or new connection, the request written, the
//! answer head read (1xx skipped), a bodyless idempotent request retried once.

use super::head::Head;
use super::response::{self, RespHead, RespStep};
use super::{Bufs, MAX_RESPONSE_HEAD, date};
use crate::pool::sockets as upstream;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How the upstream part of a request ended.
pub(super) enum Failure {
    /// An answer head: relay it.
    Answered(TcpStream, RespHead),
    ConnectTimeout,
    Connect,
    /// Reset, closed or garbage before an answer head.
    Reset,
    /// No answer head within the route timeout.
    Timeout,
}

/// One request's upstream exchange: `out` holds the whole request (head and body).
pub(super) struct Exchange<'a> {
    pub(super) addr: SocketAddr,
    pub(super) head: &'a Head,
    /// Tell the client the connection closes after this answer.
    pub(super) close: bool,
    pub(super) start: Instant,
    pub(super) connect_timeout: Duration,
    pub(super) idle: Duration,
    /// For an answer without a `Date`.
    pub(super) date: date::HttpDate,
}

/// How one attempt ended before an answer head.
enum Attempt {
    Answered(RespHead),
    /// Closed or reset with no byte of answer: the request may not have been seen.
    Unanswered,
    Reset,
}

impl Exchange<'_> {
    pub(super) async fn run(&self, b: &mut Bufs) -> Failure {
        // Sent again only what may be sent twice and has no body, as on the hyper path.
        let replayable = self.head.idempotent && self.head.body_len == 0;
        for attempt in 0..2 {
            let pooled = if attempt == 0 {
                upstream::checkout(self.addr, self.start, self.idle)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(s) => s,
                None => {
                    match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
                        .await
                    {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            s
                        }
                        Ok(Err(_)) => return Failure::Connect,
                        Err(_) => return Failure::ConnectTimeout,
                    }
                }
            };
            match self.once(&mut up, b).await {
                Attempt::Answered(resp) => return Failure::Answered(up, resp),
                Attempt::Unanswered if reused && replayable => continue,
                Attempt::Unanswered | Attempt::Reset => return Failure::Reset,
            }
        }
        Failure::Reset
    }

    async fn once(&self, up: &mut TcpStream, b: &mut Bufs) -> Attempt {
        b.uin.clear();
        // A failed write still reads: an upstream may answer (say, 413) and close before
        // reading the whole request.
        let _ = up.write_all(&b.out).await;
        loop {
            let Some(room) = b.uin.room(MAX_RESPONSE_HEAD) else {
                return Attempt::Reset;
            };
            let n = match up.read(room).await {
                Ok(0) | Err(_) if b.uin.end == 0 => return Attempt::Unanswered,
                Ok(0) | Err(_) => return Attempt::Reset,
                Ok(n) => n,
            };
            b.uin.end += n;
            loop {
                match response::prepare(
                    b.uin.pending(),
                    self.head.head_method,
                    self.close,
                    &self.date,
                    &mut b.out,
                ) {
                    RespStep::Partial => break,
                    RespStep::Informational(len) => b.uin.start += len,
                    RespStep::Bad => return Attempt::Reset,
                    RespStep::Head(resp) => {
                        b.uin.start += resp.len;
                        return Attempt::Answered(resp);
                    }
                }
            }
        }
    }
}
