//! Connection handling: upstream connections are pooled per worker, idle client connections
//! are parked and woken by their next request, and closed after the idle timeout.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn one_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get_on(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    send.ready().await?;
    let req = Request::get("/")
        .header("host", "t")
        .body(Full::default())
        .unwrap();
    let resp = send.send_request(req).await?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_parked_clients_wake_up() {
    bounded(async {
        let (up, accepted) = counting_upstream().await;
        let mut cfg = config(&single(up, "http1"));
        cfg.timeouts.park_ms = 100;
        let gw = start(cfg);
        let mut send = one_connection(addr(&gw)).await;
        for _ in 0..10 {
            assert_eq!(
                get_on(&mut send).await.unwrap(),
                (StatusCode::OK, Bytes::from("ok"))
            );
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one pooled upstream connection"
        );
        // Idle past park_ms: the connection is parked, then woken by the next request.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let parked = |gw: &tollgate_gateway::Gateway| {
            gw.state()["stats"].clone()["connections_parked"]
                .as_i64()
                .unwrap()
        };
        assert_eq!(parked(&gw), 1, "the idle connection is parked");
        for _ in 0..3 {
            assert_eq!(get_on(&mut send).await.unwrap().0, StatusCode::OK);
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
        assert_eq!(parked(&gw), 0, "woken by the request");
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_after_the_idle_timeout() {
    bounded(async {
        let (up, _) = counting_upstream().await;
        let mut cfg = config(&single(up, "http1"));
        cfg.timeouts.park_ms = 100;
        cfg.timeouts.idle_ms = 300;
        let gw = start(cfg);
        let mut send = one_connection(addr(&gw)).await;
        assert_eq!(get_on(&mut send).await.unwrap().0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            send.is_closed() || get_on(&mut send).await.is_err(),
            "closed when idle"
        );
        let state = gw.state()["stats"].clone();
        assert!(
            state["connections_timed_out"].as_i64().unwrap() >= 1,
            "{state}"
        );
        stop(gw).await;
    })
    .await;
}

/// An HTTP/2 client that never answers anything (not the server's SETTINGS, not the PING that
/// follows the GOAWAY of a graceful close): the idle timeout's GOAWAY cannot complete, and the
/// connection used to stay open for ever (a descriptor per such client). It is dropped once
/// nothing is in flight and no byte has moved for a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_acknowledges_is_dropped_after_the_goaway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let (up, _) = counting_upstream().await;
        let mut cfg = config(&single(up, "http1"));
        cfg.timeouts.idle_ms = 300;
        let gw = start(cfg);
        let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        // The preface and an empty SETTINGS frame; then silence.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection was still open after 10 s");
        // Idle at 300 ms, the GOAWAY and its PING, then a second of silence.
        assert!(
            started.elapsed() >= Duration::from_millis(1200),
            "closed after {:?}, before its grace",
            started.elapsed()
        );
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_the_middle_of_a_head_survives_parking() {
    bounded(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (up, _) = counting_upstream().await;
        let mut cfg = config(&single(up, "http1"));
        cfg.timeouts.park_ms = 50;
        let gw = start(cfg);
        let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        let mut buf = vec![0u8; 4096];
        async fn reply(s: &mut tokio::net::TcpStream, buf: &mut [u8]) -> String {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(buf))
                .await
                .expect("a reply")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(reply(&mut s, &mut buf).await.starts_with("HTTP/1.1 200"));
        // The second head arrives in two parts, 300 ms apart (the connection idles past park_ms
        // with half a head buffered).
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"st: x\r\n\r\n").await.unwrap();
        let r = reply(&mut s, &mut buf).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
        stop(gw).await;
    })
    .await;
}
