//! Tollgate layers in real tonic servers and clients on loopback: a shed or rate-limited request
//! reaches the client as `UNAVAILABLE` / `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`
//! (never `UNKNOWN` or a reset stream), and a client with balance + breaker + pool over three
//! servers, one failing, stops sending to the failing one.
//!
//! No test sleeps: handlers report when they start and wait for a release signal. Each test is
//! bounded by a timeout.

#[path = "../examples/support/echo.rs"]
mod echo;

use echo::{EchoClient, EchoReply, EchoServer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tollgate::ServiceBuilderExt;
use tollgate::admission::http::HttpPrioritizer;
use tollgate::admission::{
    AdmissionConfig, AdmissionLayer, ClassConfig, RateLimitConfig, ReadyMode,
};
use tollgate::balance::{Balance, BalanceConfig, EndpointState, OutlierConfig};
use tollgate::breaker::{Breaker, BreakerConfig, BreakerLayer, State};
use tollgate::grpc::{GrpcFailures, named};
use tollgate::http::RejectionLayer;
use tollgate::pool::{PoolConfig, PoolSizerLayer};
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::{Layer, ServiceBuilder};

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

fn pushback(status: &Status) -> u64 {
    status
        .metadata()
        .get(tollgate::grpc::PUSHBACK_HEADER)
        .expect("grpc-retry-pushback-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A server named `name` answering every call.
fn echo_server(name: &'static str) -> EchoServer {
    EchoServer::new(move |req| async move {
        Ok(EchoReply {
            message: req.message,
            server: name.into(),
        })
    })
}

/// A server named `name` answering every call after 10 ms.
fn slow_server(name: &'static str) -> EchoServer {
    EchoServer::new(move |req| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(EchoReply {
            message: req.message,
            server: name.into(),
        })
    })
}

#[tokio::test]
async fn a_shed_request_is_unavailable_not_unknown() {
    bounded(async {
        let admission = AdmissionLayer::new(AdmissionConfig {
            classes: vec![ClassConfig::new("all").with_queue_capacity(0)],
            limit: 1,
            ready_mode: ReadyMode::Always,
            ..AdmissionConfig::default()
        })
        .unwrap();
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        let server = EchoServer::new(move |req| {
            let (started, gate) = (started_tx.clone(), gate.clone());
            async move {
                let _ = started.send(());
                gate.notified().await;
                Ok(EchoReply {
                    message: req.message,
                    server: "slow".into(),
                })
            }
        });
        // `named` keeps the generated server's name on the whole stack.
        let stack = named(
            ServiceBuilder::new()
                .layer(RejectionLayer::grpc()) // outermost: rejections become statuses
                .admission(admission),
            server,
        );
        let addr = serve(Server::builder().add_service(stack)).await;
        let client = EchoClient::new(channel(addr));

        let first = tokio::spawn({
            let mut client = client.clone();
            async move { client.echo("first").await }
        });
        started.recv().await.unwrap(); // the only slot is taken
        let shed = client.clone().echo("second").await.unwrap_err();
        assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
        assert_eq!(shed.message(), "service overloaded");
        // Admission's hint, in whole milliseconds and never 0.
        assert!(pushback(&shed) >= 1);

        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().message, "first");
    })
    .await;
}

#[tokio::test]
async fn a_rate_limited_request_is_resource_exhausted_with_pushback() {
    bounded(async {
        let admission = AdmissionLayer::new(AdmissionConfig {
            classes: vec![ClassConfig::new("all")],
            rate_limit: Some(RateLimitConfig::new(1, Duration::from_secs(60))),
            ready_mode: ReadyMode::Always,
            ..AdmissionConfig::default()
        })
        .unwrap()
        .prioritize(HttpPrioritizer::new(["all"]).with_key_header("x-tenant".parse().unwrap()));
        // A server-wide layer: every service of this server shares the admission state.
        let router = Server::builder()
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionLayer::grpc())
                    .admission(admission),
            )
            .add_service(echo_server("a"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        let mut client = EchoClient::new(channel(addr));
        let request = || {
            let mut req = tonic::Request::new(echo::EchoRequest {
                message: "hi".into(),
            });
            req.metadata_mut()
                .insert("x-tenant", "acme".parse().unwrap());
            req
        };

        assert!(client.call(request()).await.is_ok());
        let limited = client.call(request()).await.unwrap_err();
        assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
        let ms = pushback(&limited);
        assert!((1..=60_000).contains(&ms), "pushback {ms} ms");
    })
    .await;
}

type Upstream = Breaker<Channel, GrpcFailures>;

#[tokio::test]
async fn a_client_with_balance_breaker_and_pool_leaves_the_failing_server() {
    bounded(async {
        let failing = EchoServer::new(|_req| async { Err(Status::internal("disk on fire")) });
        let mut endpoints = Vec::new();
        let mut breakers = Vec::new();
        // The healthy servers take 10 ms, the failing one fails at once: it looks cheapest,
        // so the balancer picks it whenever its random pair holds it, until it is ejected.
        for (i, server) in [slow_server("a"), slow_server("b"), failing]
            .into_iter()
            .enumerate()
        {
            let addr = serve(Server::builder().add_service(server)).await;
            // One breaker per server: a sick server trips only its own.
            let breaker = BreakerLayer::new(BreakerConfig {
                name: format!("server-{i}"),
                consecutive_failures: Some(2),
                wait_in_open: Duration::from_secs(60),
                ..BreakerConfig::default()
            })
            .unwrap()
            .with_classifier(GrpcFailures); // INTERNAL in a trailers-only answer is a failure
            breakers.push(breaker.handle());
            // Connected up front, so no call's latency includes the handshake.
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            endpoints.push((i, breaker.layer(channel)));
        }
        let balance: Balance<usize, Upstream, GrpcFailures> = Balance::new(
            endpoints,
            BalanceConfig {
                seed: Some(7),
                // Optimistic about endpoints not measured yet (and failures never lower an
                // estimate), so the fast-failing server keeps looking cheap until it is ejected.
                default_rtt: Duration::from_micros(1),
                outlier: OutlierConfig {
                    consecutive_failures: 3,
                    ..OutlierConfig::default()
                },
                ..BalanceConfig::default()
            },
        )
        .unwrap()
        .with_classifier(GrpcFailures);
        let balance_handle = balance.handle();
        let stack = ServiceBuilder::new()
            .layer(RejectionLayer::grpc()) // local rejections reach the client as statuses
            .pool(PoolSizerLayer::from_config(PoolConfig::default()).unwrap())
            .service(balance);
        let mut client = EchoClient::new(stack);

        let (mut ok, mut internal, mut unavailable) = (0, 0, 0);
        for i in 0..30 {
            match client.echo(&format!("call {i}")).await {
                Ok(reply) => {
                    assert_ne!(reply.server, "failing");
                    ok += 1;
                }
                Err(s) if s.code() == Code::Internal => internal += 1,
                Err(s) if s.code() == Code::Unavailable => unavailable += 1,
                Err(s) => panic!("unexpected status {s:?}"),
            }
        }
        // The failing server fails twice, which opens its breaker; the next pick gets the
        // breaker's UNAVAILABLE without a call, and three failures in a row eject it.
        assert_eq!((internal, unavailable), (2, 1));
        assert_eq!(ok, 27);
        assert_eq!(breakers[2].state(), State::Open);
        let stats = balance_handle.endpoints();
        let failing = stats.iter().find(|e| e.key == 2).unwrap();
        assert_eq!(failing.state, EndpointState::Ejected);
        assert_eq!(breakers[0].state(), State::Closed);
        assert_eq!(breakers[1].state(), State::Closed);
    })
    .await;
}

#[tokio::test]
async fn a_client_without_endpoints_gets_unavailable() {
    bounded(async {
        let balance: Balance<usize, Upstream> =
            Balance::new(std::iter::empty(), BalanceConfig::default()).unwrap();
        let stack = ServiceBuilder::new()
            .layer(RejectionLayer::grpc())
            .service(balance);
        let err = EchoClient::new(stack).echo("anyone?").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.message(), "no endpoints to balance over");
        assert_eq!(pushback(&err), 1000);
    })
    .await;
}
