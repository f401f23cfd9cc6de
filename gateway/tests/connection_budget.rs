//! Bounded work per client connection (`limits.max_requests_per_connection`,
//! `limits.max_abandoned_per_connection`), with a real HTTP/2 client (hyper's) over h2c:
//!
//! - the "rapid reset" pattern: rounds of requests that reach the upstream and are then reset
//!   by the client get the connection GOAWAY after about the budget, where nothing stopped it
//!   before (5,000 upstream requests in 5 s on one connection);
//! - a client that cancels some of its calls (5%, as hedging or a browser navigating away
//!   does) keeps its connection;
//! - a connection that made its maximum of requests gets GOAWAY, its last answer arrives, and a
//!   new connection works.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// An upstream that counts the requests it receives and answers each after `delay`.
async fn slow_upstream(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let addr = upstream(move |_req| {
        // Relaxed: a count read by the test after the requests it counts arrived.
        count.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(delay).await;
            text(StatusCode::OK, "ok")
        }
    })
    .await;
    (addr, seen)
}

/// One h2c connection to the gateway, its driver running on a task.
async fn h2_connection(addr: SocketAddr) -> (http2::SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://t/").body(Full::default()).unwrap()
}

/// Sends one request and reads its answer; `None` when the connection refused it.
async fn call(send: &mut http2::SendRequest<Full<Bytes>>) -> Option<StatusCode> {
    send.ready().await.ok()?;
    let resp = send.send_request(get()).await.ok()?;
    let status = resp.status();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// A gateway in front of `upstream` with the shipped connection budget, or with
/// `max_requests` requests a connection.
fn gateway(upstream: SocketAddr, max_requests: Option<u64>) -> tollgate_gateway::Gateway {
    let mut config = config(&single(upstream, "http1"));
    if let Some(max) = max_requests {
        config.limits.max_requests_per_connection = max;
    }
    start(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_get_goaway_within_the_budget() {
    bounded(async {
        let (up, seen) = slow_upstream(Duration::from_secs(2)).await;
        // The shipped defaults: 100 abandoned requests, 10,000 requests.
        let gw = gateway(up, None);
        let (send, driver) = h2_connection(addr(&gw)).await;
        let mut rounds = 0;
        // 40 rounds of 100 would be 4,000 upstream requests with no budget.
        while rounds < 40 && !driver.is_finished() {
            rounds += 1;
            let before = seen.load(Ordering::Relaxed);
            let mut calls = Vec::new();
            for _ in 0..100 {
                let mut send = send.clone();
                calls.push(tokio::spawn(async move { call(&mut send).await }));
            }
            // Until they reach the upstream (or the connection refuses them)...
            for _ in 0..200 {
                if seen.load(Ordering::Relaxed) >= before + 100 || driver.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // ...then reset them all.
            for c in calls {
                c.abort();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // GOAWAY: the connection ends once the streams in flight are done.
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("the connection got GOAWAY and closed")
            .unwrap();
        let upstream_requests = seen.load(Ordering::Relaxed);
        assert!(
            rounds <= 4,
            "GOAWAY came after {rounds} rounds of 100 resets"
        );
        assert!(
            upstream_requests <= 400,
            "{upstream_requests} upstream requests from one connection"
        );
        assert_eq!(gw.state()["stats"]["connections_over_budget"], 1);
        // A new connection is served.
        let (mut send, _driver) = h2_connection(addr(&gw)).await;
        assert_eq!(call(&mut send).await, Some(StatusCode::OK));
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_some_calls_keeps_its_connection() {
    bounded(async {
        let (up, _seen) = slow_upstream(Duration::from_millis(5)).await;
        let gw = gateway(up, None);
        let (send, driver) = h2_connection(addr(&gw)).await;
        // 2,000 calls, 10 at a time; every 20th is cancelled while it waits for its answer.
        for batch in 0..200 {
            let mut calls = Vec::new();
            for i in 0..10 {
                let mut send = send.clone();
                let call = tokio::spawn(async move { call(&mut send).await });
                if (batch * 10 + i) % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    call.abort();
                } else {
                    calls.push(call);
                }
            }
            for c in calls {
                assert_eq!(c.await.unwrap(), Some(StatusCode::OK), "batch {batch}");
            }
        }
        assert!(!driver.is_finished(), "the connection is still open");
        assert_eq!(gw.state()["stats"]["connections_over_budget"], 0);
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_ends_after_its_maximum_of_requests() {
    bounded(async {
        let (up, seen) = slow_upstream(Duration::ZERO).await;
        let gw = gateway(up, Some(20));
        let (mut send, driver) = h2_connection(addr(&gw)).await;
        for i in 0..20 {
            assert_eq!(call(&mut send).await, Some(StatusCode::OK), "request {i}");
        }
        // GOAWAY after the twentieth: no twenty-first on this connection.
        tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the connection closed")
            .unwrap();
        assert_eq!(call(&mut send).await, None);
        assert_eq!(seen.load(Ordering::Relaxed), 20);
        let (mut send, _driver) = h2_connection(addr(&gw)).await;
        assert_eq!(call(&mut send).await, Some(StatusCode::OK));
        stop(gw).await;
    })
    .await;
}
