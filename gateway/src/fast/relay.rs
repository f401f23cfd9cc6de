//! Relaying an answer's body to the client by its framing.

use super::response::{self, Chunked, Framing, RespHead};
use super::{Bufs, read, write_all};
use std::time::Duration;
use tokio::net::TcpStream;

/// How relaying a body ended.
pub(super) enum Relayed {
    /// The client has the whole answer; `reusable`: the upstream connection may be kept.
    Done { reusable: bool },
    /// A side failed or stalled mid-body: the client's connection must be cut.
    Cut,
}

/// Sends the answer head (in `out`) and its body (the first bytes in `uin`) to the client.
pub(super) async fn relay(
    client: &mut TcpStream,
    up: &mut TcpStream,
    b: &mut Bufs,
    resp: RespHead,
    idle: Duration,
) -> Relayed {
    let mut reusable = resp.reusable;
    let mut chunked = Chunked::default();
    // Body bytes still to come after the ones read with the head; `None`: until the end.
    let mut left: Option<u64> = match resp.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::Close => None,
    };
    let mut ended = left == Some(0);
    // The first piece goes out with the head.
    let first = take_body(
        b.uin.pending(),
        resp.framing,
        &mut left,
        &mut chunked,
        &mut ended,
    );
    let Ok(first) = first else {
        return Relayed::Cut;
    };
    if first < b.uin.pending().len() {
        // Bytes past the end of the answer: the upstream is out of step.
        reusable = false;
    }
    let body_at = b.uin.start;
    b.out
        .extend_from_slice(&b.uin.data[body_at..body_at + first]);
    if write_all(client, &b.out, idle).await.is_err() {
        return Relayed::Cut;
    }
    while !ended {
        let n = match read(up, &mut b.uin.data, idle).await {
            Ok(0) if resp.framing == Framing::Close => {
                return Relayed::Done { reusable: false };
            }
            Ok(0) | Err(_) => return Relayed::Cut,
            Ok(n) => n,
        };
        let Ok(take) = take_body(
            &b.uin.data[..n],
            resp.framing,
            &mut left,
            &mut chunked,
            &mut ended,
        ) else {
            return Relayed::Cut;
        };
        if take < n {
            reusable = false;
        }
        if write_all(client, &b.uin.data[..take], idle).await.is_err() {
            return Relayed::Cut;
        }
    }
    Relayed::Done { reusable }
}

/// How many of `bytes` belong to the body, updating the framing state; `ended` once the body
/// is complete.
fn take_body(
    bytes: &[u8],
    framing: Framing,
    left: &mut Option<u64>,
    chunked: &mut Chunked,
    ended: &mut bool,
) -> Result<usize, response::BadChunk> {
    if *ended {
        return Ok(0);
    }
    match framing {
        Framing::Empty => {
            *ended = true;
            Ok(0)
        }
        Framing::Length(_) => {
            let l = left.unwrap_or(0);
            let take = l.min(bytes.len() as u64);
            *left = Some(l - take);
            *ended = l == take;
            Ok(take as usize)
        }
        Framing::Chunked => match chunked.feed(bytes)? {
            Some(n) => {
                *ended = true;
                Ok(n)
            }
            None => Ok(bytes.len()),
        },
        Framing::Close => Ok(bytes.len()),
    }
}
