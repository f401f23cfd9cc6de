//! tonic servers with server-side tollgate layers, and clients with balance + breaker + pool
//! over three local servers, one of them failing, and with budgeted retries and hedging over
//! two (one of them down, the other slow now and then). Needs no `protoc`: the service is
//! written by hand in `examples/support/echo.rs`. Stops by itself in about two seconds.
//!
//! ```text
//! cargo run --example tonic-stack --features full,grpc
//! ```

#[path = "support/echo.rs"]
mod echo;

use echo::{EchoClient, EchoReply, EchoServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tollgate::ServiceBuilderExt;
use tollgate::admission::{AdmissionConfig, AdmissionLayer, ClassConfig, ReadyMode};
use tollgate::balance::{Balance, BalanceConfig, OutlierConfig};
use tollgate::breaker::{Breaker, BreakerConfig, BreakerLayer};
use tollgate::core::BoxError;
use tollgate::grpc::{GrpcFailures, PUSHBACK_HEADER, named};
use tollgate::http::RejectionLayer;
use tollgate::pool::{PoolConfig, PoolSizerLayer};
use tollgate::retry::http::{DEFAULT_REPLAY_LIMIT, HttpPolicy, ReplayBody};
use tollgate::retry::{HedgeConfig, RetryConfig, RetryLayer};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // --- three servers, each behind its own admission limit ----------------------------------
    let mut addrs = Vec::new();
    for name in ["a", "b", "c"] {
        let server = EchoServer::new(move |req| async move {
            if name == "c" {
                // The failing one, and fast at it: it looks cheap to the balancer.
                return Err(Status::internal("disk on fire"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(EchoReply {
                message: req.message,
                server: name.into(),
            })
        });
        addrs.push(spawn_server(server, 64).await?);
    }
    println!("servers a, b, c (failing) on {addrs:?}\n");

    // --- the client: pool -> balance -> one breaker per server -> channel ---------------------
    let mut endpoints = Vec::new();
    let mut breakers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let breaker = BreakerLayer::new(BreakerConfig {
            name: format!("server-{i}"),
            consecutive_failures: Some(2),
            wait_in_open: Duration::from_secs(30),
            ..BreakerConfig::default()
        })?
        .with_classifier(GrpcFailures); // INTERNAL, UNAVAILABLE... count as failures
        breakers.push(breaker.handle());
        // Connected up front, so no call's latency includes the handshake.
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        endpoints.push((i, breaker.layer(channel)));
    }
    let balance: Balance<usize, Breaker<Channel, GrpcFailures>, GrpcFailures> = Balance::new(
        endpoints,
        BalanceConfig {
            // Optimistic about endpoints not measured yet (and failures never lower an
            // estimate), so the fast-failing server keeps looking cheap until it is ejected.
            default_rtt: Duration::from_micros(1),
            outlier: OutlierConfig {
                consecutive_failures: 3,
                ..OutlierConfig::default()
            },
            ..BalanceConfig::default()
        },
    )?
    .with_classifier(GrpcFailures);
    let balance_stats = balance.handle();
    let stack = ServiceBuilder::new()
        .layer(RejectionLayer::grpc()) // local rejections reach the caller as gRPC statuses
        .pool(PoolSizerLayer::from_config(PoolConfig::default())?) // bound in-flight calls
        .service(balance);
    let mut client = EchoClient::new(stack);

    println!("1. 40 calls through the client stack:");
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..40 {
        let key = match client.echo(&format!("call {i}")).await {
            Ok(reply) => format!("ok from {}", reply.server),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        *tally.entry(key).or_default() += 1;
    }
    for (outcome, n) in &tally {
        println!("   {n:>2} x {outcome}");
    }
    for e in balance_stats.endpoints() {
        println!(
            "   server {} ({:?}): {:.0}% of picks, breaker {:?}",
            ["a", "b", "c"][e.key],
            e.state,
            e.share * 100.0,
            breakers[e.key].state()
        );
    }

    // --- server-side shedding ----------------------------------------------------------------
    println!("\n2. 6 concurrent calls to a server that takes one at a time and queues none:");
    let slow = EchoServer::new(|req| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(EchoReply {
            message: req.message,
            server: "slow".into(),
        })
    });
    let addr = spawn_server(slow, 1).await?;
    let client = EchoClient::new(Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy());
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.echo(&format!("call {i}")).await })
        })
        .collect();
    for call in calls {
        match call.await? {
            Ok(reply) => println!("   ok from {}", reply.server),
            Err(status) => println!(
                "   {:?} \"{}\", {PUSHBACK_HEADER}: {:?}",
                status.code(),
                status.message(),
                status
                    .metadata()
                    .get(PUSHBACK_HEADER)
                    .and_then(|v| v.to_str().ok())
            ),
        }
    }
    retries_and_hedges().await
}

/// Part 3: a client that retries and hedges within one budget, over a balancer that sends a
/// request's retry or hedge to a server it has not tried.
async fn retries_and_hedges() -> Result<(), BoxError> {
    println!(
        "\n3. 60 calls with retries and hedging, over server \"down\" (always UNAVAILABLE) and"
    );
    println!("   servers \"d\" and \"e\" (10 ms, but 300 ms on every 25th call each):");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut servers = vec![EchoServer::new(|_| async {
        Err(Status::unavailable("restarting"))
    })];
    for name in ["d", "e"] {
        let (served, seq) = (
            served.clone(),
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        );
        servers.push(EchoServer::new(move |req| {
            // Relaxed: counts and a sequence number.
            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let pause = if n % 25 == 24 { 300 } else { 10 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                Ok(EchoReply {
                    message: req.message,
                    server: name.into(),
                })
            }
        }));
    }
    let mut channels = Vec::new();
    for (i, server) in servers.into_iter().enumerate() {
        let addr = spawn_server(server, 64).await?;
        channels.push((
            i,
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        ));
    }
    // The balancer records the server each attempt went to (in the request's `Attempt`
    // marker, which the retry layer's HTTP policy puts in the extensions) and sends the
    // request's next attempt elsewhere when it can.
    // A server that fails twice in a row is ejected for a while, so hedges go to one that
    // answers.
    let balance = Balance::new(
        channels,
        BalanceConfig {
            outlier: OutlierConfig {
                consecutive_failures: 2,
                ..OutlierConfig::default()
            },
            ..BalanceConfig::default()
        },
    )?
    .with_classifier(GrpcFailures)
    .avoid_tried();
    // UNAVAILABLE is retried (gRPC's own advice), within a budget of 10% of the calls plus a
    // floor; a call still unanswered after the p95 of recent latencies is hedged.
    let retry = RetryLayer::new(RetryConfig {
        hedge: Some(HedgeConfig::default()),
        ..RetryConfig::default()
    })?
    .with_policy(HttpPolicy::default());
    let budget = retry.budget().clone();
    let retrying = ServiceBuilder::new()
        .layer(retry)
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(balance);
    // Request bodies are streams: buffer each (up to 64 KiB) so that attempts can replay it.
    let stack = tower::service_fn(move |req: http::Request<Body>| {
        let mut svc = retrying.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = ReplayBody::buffer(body, DEFAULT_REPLAY_LIMIT).await?;
            svc.ready()
                .await?
                .call(http::Request::from_parts(parts, body))
                .await
        }
    });
    let mut client = EchoClient::new(stack);
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    let mut took = Vec::new();
    for i in 0..100 {
        let started = tokio::time::Instant::now();
        let key = match client.echo(&format!("call {i}")).await {
            Ok(reply) => format!("ok from {}", reply.server),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        took.push(started.elapsed());
        *tally.entry(key).or_default() += 1;
    }
    for (outcome, n) in &tally {
        println!("   {n:>2} x {outcome}");
    }
    let b = budget.snapshot();
    println!(
        "   retries and hedges spent from the budget: {} of the {} it allows for {} calls",
        b.spent, b.allowance, b.requests
    );
    let mut sorted = took.clone();
    sorted.sort_unstable();
    println!(
        "   attempts served by d and e: {}; median call {:?}; calls over 100 ms: {} (every \
         25th attempt on d or e takes 300 ms; a call still waiting after the p95 of recent \
         latencies is hedged on the other)",
        // Relaxed: read after the calls.
        served.load(std::sync::atomic::Ordering::Relaxed),
        sorted[sorted.len() / 2],
        took.iter()
            .filter(|t| **t > Duration::from_millis(100))
            .count(),
    );
    Ok(())
}

/// Serves `server` on a free loopback port behind admission (`limit` calls at once, none
/// queued), answering rejections with gRPC statuses.
async fn spawn_server(server: EchoServer, limit: usize) -> Result<SocketAddr, BoxError> {
    let admission = AdmissionLayer::new(AdmissionConfig {
        classes: vec![ClassConfig::new("all").with_queue_capacity(0)],
        limit,
        ready_mode: ReadyMode::Always,
        ..AdmissionConfig::default()
    })?;
    // `named` keeps the server's gRPC name on the whole stack, as `add_service` needs.
    let stack = named(
        ServiceBuilder::new()
            .layer(RejectionLayer::grpc()) // shed -> UNAVAILABLE, not UNKNOWN
            .admission(admission),
        server,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Server::builder().add_service(stack);
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    Ok(addr)
}
