//! An upstream *process* killed mid-run under steady load loses no request (#19).
//!
//! Two `tollgate demo-upstream` processes serve one cluster with `[clusters.retry]`
//! (`attempts = 2`) and health checks every 500 ms. Clients over HTTP/1.1 and over h2c send
//! idempotent requests without pause: GETs, and PUTs whose body the upstream echoes. One
//! upstream process is killed (SIGKILL) in the middle. Requests in flight on it are reset,
//! pooled connections to it die, and new connections to it are refused until the balancer
//! ejects it; every such try is retried, and the retry goes to the endpoint the request has not
//! tried yet (the balancer's tried-endpoint hint) rather than back to the dead one. So every
//! request is answered 200, and every PUT gets its own body back.
//!
//! Layered clusters are served on hyper's path for both client protocols (the HTTP/1.1 fast
//! path hands a route with a layered cluster to hyper), so the HTTP/1.1 client here covers the
//! fast path's hand-over and the h2c client hyper's own connection handling.

mod common;

use bytes::Bytes;
use common::{addr, config, h1_client, h2_client, send, start, stop};
use http::{Request, StatusCode};
use http_body_util::Full;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A `tollgate demo-upstream` child process on a free loopback port.
struct DemoProcess {
    child: Child,
    addr: SocketAddr,
}

impl DemoProcess {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["demo-upstream", "--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo upstream starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .next()
            .expect("the demo upstream announces its address")
            .unwrap();
        let addr = line
            .rsplit("://")
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        self.child.kill().expect("kill the demo upstream");
        self.child.wait().expect("reap the demo upstream");
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_endpoint_process_under_load_fails_no_request() {
    let a = DemoProcess::start();
    let mut b = DemoProcess::start();
    let rest = format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\", \"{}\"]\n\
         [clusters.retry]\nattempts = 2\nbackoff = {{ base = \"1ms\", max = \"10ms\" }}\n\
         [clusters.health_check]\npath = \"/\"\n\
         [clusters.balance.health]\ninterval = \"500ms\"\n\
         [[routes]]\ncluster = \"up\"\n",
        a.addr, b.addr
    );
    let gw = start(config(&rest));
    let base = format!("http://{}", addr(&gw));
    let stop_load = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let client = if c % 2 == 0 { h1_client() } else { h2_client() };
        let (base, stop_load, sent) = (base.clone(), stop_load.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop_load.load(Ordering::Relaxed) {
                i += 1;
                let body = format!("client {c} request {i}");
                let req = if i.is_multiple_of(2) {
                    Request::put(format!("{base}/items/{c}/{i}"))
                        .body(Full::new(Bytes::from(body.clone())))
                        .unwrap()
                } else {
                    Request::get(format!("{base}/items/{c}/{i}"))
                        .body(Full::default())
                        .unwrap()
                };
                let (status, _, got, _) =
                    tokio::time::timeout(Duration::from_secs(10), send(&client, req))
                        .await
                        .expect("every request is answered");
                // Relaxed: a progress counter the test only reads to pace the kill.
                sent.fetch_add(1, Ordering::Relaxed);
                let echoed = !i.is_multiple_of(2) || got == body.as_bytes();
                if status != StatusCode::OK || !echoed {
                    failures.push(format!(
                        "{c}/{i}: {status} {}",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            (i, failures)
        }));
    }
    let wait_for = |n: u64| {
        let sent = sent.clone();
        async move {
            while sent.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let bounded = |n: u64| tokio::time::timeout(Duration::from_secs(30), wait_for(n));
    bounded(300).await.expect("load before the kill");
    b.kill();
    let at_kill = sent.load(Ordering::Relaxed);
    // 600 more requests: the first of them still find the dead endpoint in rotation (until
    // its failures eject it or a health check marks it down).
    bounded(at_kill + 600).await.expect("load after the kill");
    stop_load.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (n, f) = c.await.unwrap();
        total += n;
        failures.extend(f);
    }
    assert!(total >= 900, "{total} requests");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    stop(gw).await;
    drop(a);
}
