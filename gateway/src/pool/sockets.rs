//! Plain HTTP/1.1 upstream connections without a driver task: `TcpStream`s kept idle per
//! worker thread and endpoint, shared by the fast path and the gateway's own HTTP/1.1 client
//! ([`direct`](super::direct)). A connection is checked before reuse without a system call in
//! the usual case (tokio knows from its last read whether the socket has news); one the
//! upstream closed while idle is dropped then.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A thread's idle connections. Endpoints are few, so a vector scan beats hashing.
#[derive(Default)]
struct Idle {
    by_endpoint: Vec<(SocketAddr, Vec<(TcpStream, Instant)>)>,
    /// When every idle connection was last checked.
    swept: Option<Instant>,
}

/// How often a thread checks all its idle connections (closing those the upstream closed or
/// that idled too long, and forgetting endpoints with none left).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// Whether an idle connection is still usable: nothing to read and not closed.
fn alive(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The most recently used idle connection to `addr` that is still open and was idle less
/// than `idle`.
pub(crate) fn checkout(addr: SocketAddr, now: Instant, idle: Duration) -> Option<TcpStream> {
    IDLE.with(|cell| {
        let mut pool = cell.borrow_mut();
        let list = &mut pool.by_endpoint.iter_mut().find(|(a, _)| *a == addr)?.1;
        while let Some((stream, since)) = list.pop() {
            if now.saturating_duration_since(since) < idle && alive(&stream) {
                return Some(stream);
            }
        }
        None
    })
}

/// Keeps `stream` for the next request to `addr`, unless `max` are idle already. Also closes
/// the oldest idle connection if it has been idle longer than `idle`, and once a second every
/// idle connection that is closed or stale (to any endpoint), so that neither a burst's
/// connections nor ones the upstream closed linger.
pub(crate) fn checkin(
    addr: SocketAddr,
    stream: TcpStream,
    now: Instant,
    idle: Duration,
    max: usize,
) {
    // `try_with`: a connection may be given back while its thread exits.
    let _ = IDLE.try_with(|cell| {
        let mut pool = cell.borrow_mut();
        if pool
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            pool.swept = Some(now);
            for (_, list) in &mut pool.by_endpoint {
                list.retain(|(s, since)| now.saturating_duration_since(*since) < idle && alive(s));
            }
            pool.by_endpoint.retain(|(_, list)| !list.is_empty());
        }
        let i = match pool.by_endpoint.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                pool.by_endpoint.push((addr, Vec::new()));
                pool.by_endpoint.len() - 1
            }
        };
        let list = &mut pool.by_endpoint[i].1;
        if list
            .first()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= idle)
        {
            list.remove(0);
        }
        if list.len() < max {
            list.push((stream, now));
        }
    });
}

/// Idle connections this thread holds to `addr` (for tests).
#[cfg(test)]
pub(super) fn idle_count(addr: SocketAddr) -> usize {
    IDLE.with(|cell| {
        cell.borrow()
            .by_endpoint
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(0, |(_, l)| l.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn closed_and_stale_connections_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idle = Duration::from_secs(60);
        let a = TcpStream::connect(addr).await.unwrap();
        let (mut a_peer, _) = listener.accept().await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let (b_peer, _) = listener.accept().await.unwrap();
        let now = Instant::now();
        checkin(addr, a, now, idle, 8);
        checkin(addr, b, now, idle, 8);
        assert_eq!(idle_count(addr), 2);
        // `b` (most recent) is closed by its peer; `a` gets an unexpected byte.
        drop(b_peer);
        a_peer.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(checkout(addr, Instant::now(), idle).is_none());
        assert_eq!(idle_count(addr), 0);
        // A live one is reused, a stale one is not; past `max` nothing is kept.
        let c = TcpStream::connect(addr).await.unwrap();
        let _c_peer = listener.accept().await.unwrap();
        checkin(addr, c, now, idle, 1);
        assert!(checkout(addr, now + Duration::from_secs(1), idle).is_some());
        let d = TcpStream::connect(addr).await.unwrap();
        let _d_peer = listener.accept().await.unwrap();
        let e = TcpStream::connect(addr).await.unwrap();
        checkin(addr, d, now, idle, 1);
        checkin(addr, e, now, idle, 1);
        assert_eq!(idle_count(addr), 1);
        assert!(checkout(addr, now + idle, idle).is_none());
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_upstream_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let idle = Duration::from_secs(60);
        let mut peers = Vec::new();
        let now = Instant::now();
        for _ in 0..3 {
            let s = TcpStream::connect(addr).await.unwrap();
            peers.push(listener.accept().await.unwrap().0);
            checkin(addr, s, now, idle, 8);
        }
        assert_eq!(idle_count(addr), 3);
        peers.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A check-in to another endpoint a second later sweeps them.
        let s = TcpStream::connect(addr).await.unwrap();
        let _peer = listener.accept().await.unwrap();
        checkin(other, s, now + SWEEP_EVERY, idle, 8);
        assert_eq!(idle_count(addr), 0);
        assert_eq!(idle_count(other), 1);
    }
}
