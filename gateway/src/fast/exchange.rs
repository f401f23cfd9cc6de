//! One request's upstream exchange: a pooled or new connection, the request written, the
//! answer head read (1xx skipped), a bodyless idempotent request retried once.

use super::bufs::Buf;
use super::response::{self, RespHead, RespStep};
use super::{MAX_RESPONSE_HEAD, date};
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
    Connect(std::io::Error),
    /// Reset, closed or garbage before an answer head.
    Reset,
    /// No answer head within the route timeout.
    Timeout,
}

/// One request's upstream exchange: `out` holds the whole request (head and body); the
/// answer head is read into `uin`, and `out` then holds the client's head.
pub(super) struct Exchange {
    pub(super) addr: SocketAddr,
    /// The request is a `HEAD`: its answer has no body.
    pub(super) head_method: bool,
    /// The request may be sent again on a new connection when a pooled one turns out closed
    /// (an idempotent method without a body, as on the hyper path).
    pub(super) replayable: bool,
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

impl Exchange {
    pub(super) async fn run(&self, out: &mut Vec<u8>, uin: &mut Buf) -> Failure {
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
                        Ok(Err(e)) => return Failure::Connect(e),
                        Err(_) => return Failure::ConnectTimeout,
                    }
                }
            };
            match self.once(&mut up, out, uin).await {
                Attempt::Answered(resp) => return Failure::Answered(up, resp),
                Attempt::Unanswered if reused && self.replayable => continue,
                Attempt::Unanswered | Attempt::Reset => return Failure::Reset,
            }
        }
        Failure::Reset
    }

    async fn once(&self, up: &mut TcpStream, out: &mut Vec<u8>, uin: &mut Buf) -> Attempt {
        uin.clear();
        // A failed write still reads: an upstream may answer (say, 413) and close before
        // reading the whole request.
        let _ = up.write_all(out).await;
        loop {
            let Some(room) = uin.room(MAX_RESPONSE_HEAD) else {
                return Attempt::Reset;
            };
            let n = match up.read(room).await {
                Ok(0) | Err(_) if uin.end == 0 => return Attempt::Unanswered,
                Ok(0) | Err(_) => return Attempt::Reset,
                Ok(n) => n,
            };
            uin.end += n;
            loop {
                match response::prepare(
                    uin.pending(),
                    self.head_method,
                    self.close,
                    &self.date,
                    out,
                ) {
                    RespStep::Partial => break,
                    RespStep::Informational(len) => uin.start += len,
                    RespStep::Bad => return Attempt::Reset,
                    RespStep::Head(resp) => {
                        uin.start += resp.len;
                        // A malformed start of the body is a bad answer, as a bad head is.
                        if !response::first_piece_is_valid(uin.pending(), resp.framing) {
                            return Attempt::Reset;
                        }
                        return Attempt::Answered(resp);
                    }
                }
            }
        }
    }
}
