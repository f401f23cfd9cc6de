//! Layers that compose under overload, end to end: a cluster with a breaker above an adaptive
//! pool, in front of a healthy upstream, driven past what the pool admits over HTTP/1.1 and
//! HTTP/2. The pool's shedding is the gateway's own rejection, not the upstream's failure: the
//! breaker stays closed, no request is answered "circuit breaker is open", and the upstream is
//! kept busy (goodput stays at what the limit admits).

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An upstream that answers after 20 ms, counting what it served.
async fn healthy() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let addr = upstream(move |_req| {
        let count = count.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Relaxed: a count read after the load.
            count.fetch_add(1, Ordering::Relaxed);
            text(StatusCode::OK, "ok")
        }
    })
    .await;
    (addr, served)
}

/// `clients` concurrent callers, each sending requests back to back for `rounds` rounds, over
/// HTTP/2 (one connection, many streams) or HTTP/1.1 (a pool of connections).
async fn drive(
    gw: std::net::SocketAddr,
    h2: bool,
    clients: usize,
    rounds: usize,
) -> (usize, usize, Vec<String>) {
    let client = if h2 { h2_client() } else { h1_client() };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = (0, 0, Vec::new());
            for _ in 0..rounds {
                let req = Request::get(format!("http://{gw}/"))
                    .body(Full::<Bytes>::default())
                    .unwrap();
                let resp = client.request(req).await.expect("an answer");
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                match status {
                    StatusCode::OK => out.0 += 1,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        out.1 += 1;
                        out.2.push(String::from_utf8_lossy(&body).into_owned());
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            out
        }));
    }
    let mut total = (0, 0, Vec::new());
    for t in tasks {
        let (ok, shed, bodies) = t.await.unwrap();
        total.0 += ok;
        total.1 += shed;
        total.2.extend(bodies);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_shedding_never_opens_the_breaker() {
    bounded(async {
        let (up, served) = healthy().await;
        for h2 in [false, true] {
            let protocol = if h2 { "HTTP/2" } else { "HTTP/1.1" };
            // The setting: a breaker that opens at a 50% failure rate over 100 calls,
            // above a pool held at 8 in flight.
            let gw = start(config(&format!(
                "[[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
                 [clusters.breaker]\nfailure_rate_threshold = 0.5\nminimum_calls = 20\nsliding_window.type = \"count\"\nsliding_window.size = 100\n\
                 [clusters.pool]\nmin_limit = 8\nmax_limit = 8\ninitial_limit = 8\n\
                 [[routes]]\ncluster = \"up\"\n"
            )));
            let before = served.load(Ordering::Relaxed);
            // 3x the limit, and more.
            for clients in [24, 64] {
                let (ok, shed, bodies) = drive(addr(&gw), h2, clients, 15).await;
                assert!(
                    shed > 0,
                    "{protocol}, {clients} clients: the pool shed nothing"
                );
                assert!(
                    bodies.iter().all(|b| !b.contains("circuit breaker")),
                    "{protocol}, {clients} clients: the breaker opened: {:?}",
                    &bodies[..bodies.len().min(3)]
                );
                assert!(ok > 0, "{protocol}");
            }
            let state = gw.state();
            let breaker = &state["clusters"][0]["layers"]["breaker"];
            assert_eq!(breaker["state"], "closed", "{protocol}: {breaker}");
            assert_eq!(breaker["failure_rate"], 0.0, "{protocol}: {breaker}");
            assert!(served.load(Ordering::Relaxed) > before, "{protocol}");
            stop(gw).await;
        }
    })
    .await;
}
