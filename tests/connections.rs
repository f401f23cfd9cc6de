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
        let parked = |gw: &tollgate::gateway::Gateway| {
            serde_json::to_value(gw.shared().stats.snapshot()).unwrap()["connections_parked"]
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
        let state = serde_json::to_value(gw.shared().stats.snapshot()).unwrap();
        assert!(
            state["connections_timed_out"].as_i64().unwrap() >= 1,
            "{state}"
        );
        stop(gw).await;
    })
    .await;
}
