//! The Redis-shared quota, against a real `redis-server` (skipped when it is not installed,
//! unless `TOLLGATE_REQUIRE_REDIS=1`). Real I/O, so real time: no paused clock here.
#![cfg(feature = "redis")]

use std::time::Duration;
use tollgate_admission::{
    AdmissionConfig, AdmissionHandle, AdmissionLayer, RateLimitConfig, Reason, RedisConfig,
    Rejected, Ticket,
};
use tollgate_core::BoxError;
use tollgate_core::testing::redis::RedisServer;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

const BOUND: Duration = Duration::from_secs(3600);

type Svc = tollgate_admission::Admission<
    tower::util::ServiceFn<fn(&'static str) -> std::future::Ready<Result<(), BoxError>>>,
    fn(&&'static str) -> Ticket,
>;

fn ok(_: &'static str) -> std::future::Ready<Result<(), BoxError>> {
    std::future::ready(Ok(()))
}

fn by_tenant(r: &&'static str) -> Ticket {
    Ticket::new(1).with_key(*r)
}

/// A gateway instance: 5 requests per minute per tenant, kept in the Redis at `url`.
fn instance(url: &str, cooldown: Duration) -> (Svc, AdmissionHandle) {
    let redis = RedisConfig {
        cooldown,
        ..RedisConfig::new(url)
    };
    let rate = RateLimitConfig {
        redis: Some(redis),
        ..RateLimitConfig::new(5, Duration::from_secs(60))
    };
    let layer = AdmissionLayer::new(AdmissionConfig {
        rate_limit: Some(rate),
        ..AdmissionConfig::default()
    })
    .unwrap()
    .prioritize(by_tenant as fn(&&'static str) -> Ticket);
    let handle = layer.handle();
    (
        layer.layer(tower::service_fn(ok as fn(&'static str) -> _)),
        handle,
    )
}

/// Sends one request for `tenant`: `None` if it went through, else the rejection's reason.
async fn send(svc: &mut Svc, tenant: &'static str) -> Option<Reason> {
    let fut = svc.ready().await.unwrap().call(tenant);
    match tokio::time::timeout(BOUND, fut).await.expect("answered") {
        Ok(()) => None,
        Err(e) => Some(e.downcast_ref::<Rejected>().expect("a rejection").reason()),
    }
}

#[tokio::test]
async fn two_instances_share_one_quota() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (mut a, _) = instance(&server.url(), Duration::from_secs(1));
    let (mut b, _) = instance(&server.url(), Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(send(&mut a, "acme").await, None);
    }
    assert_eq!(send(&mut b, "acme").await, None);
    assert_eq!(send(&mut b, "acme").await, None);
    // Each instance alone would allow 5; together they have spent the shared 5.
    assert_eq!(send(&mut b, "acme").await, Some(Reason::RateLimited));
    assert_eq!(send(&mut a, "acme").await, Some(Reason::RateLimited));
    // Another tenant has its own quota.
    assert_eq!(send(&mut a, "globex").await, None);

    let fut = a.ready().await.unwrap().call("acme");
    let err = tokio::time::timeout(BOUND, fut).await.unwrap().unwrap_err();
    let wait = err
        .downcast_ref::<Rejected>()
        .unwrap()
        .retry_after()
        .unwrap();
    assert!(
        wait > Duration::from_secs(5) && wait <= Duration::from_secs(12),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_dead_redis_falls_back_to_the_local_limit() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (mut a, handle) = instance(&server.url(), Duration::from_millis(1));
    assert_eq!(send(&mut a, "acme").await, None);
    server.stop();
    // Requests are not failed: the local limiter (5 per minute, fresh) answers.
    for _ in 0..5 {
        assert_eq!(send(&mut a, "acme").await, None);
    }
    assert_eq!(send(&mut a, "acme").await, Some(Reason::RateLimited));
    assert_eq!(
        handle.snapshot().classes[1].rejected(Reason::RateLimited),
        1
    );

    // Back up (empty): the shared quota applies again, once the 1 ms cooldown has passed.
    server.restart();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(send(&mut a, "initech").await, None);
    let (mut b, _) = instance(&server.url(), Duration::from_millis(1));
    for _ in 0..4 {
        assert_eq!(send(&mut b, "initech").await, None);
    }
    assert_eq!(send(&mut b, "initech").await, Some(Reason::RateLimited));
}

#[tokio::test]
async fn a_frozen_redis_costs_one_short_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (mut a, _) = instance(&server.url(), Duration::from_secs(3600));
    assert_eq!(send(&mut a, "acme").await, None);
    server.pause();
    // The first `failures` (5) requests each wait out the 50 ms response timeout, then the
    // local limit answers; later ones do not try Redis at all while the guard is open.
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(send(&mut a, "acme").await, None);
    }
    assert_eq!(send(&mut a, "acme").await, Some(Reason::RateLimited));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.resume();
}

#[tokio::test]
async fn connecting_to_a_frozen_redis_waits_at_most_the_response_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A long connect timeout: a request must not wait for it, only for the response timeout.
    let redis = RedisConfig {
        connect_timeout: Duration::from_secs(30),
        response_timeout: Duration::from_millis(50),
        ..RedisConfig::new(server.url())
    };
    let layer = AdmissionLayer::new(AdmissionConfig {
        rate_limit: Some(RateLimitConfig {
            redis: Some(redis),
            ..RateLimitConfig::new(2, Duration::from_secs(60))
        }),
        ..AdmissionConfig::default()
    })
    .unwrap()
    .prioritize(by_tenant as fn(&&'static str) -> Ticket);
    let mut svc: Svc = layer.layer(tower::service_fn(ok as fn(&'static str) -> _));
    server.pause();
    let resume = Resume(&server);
    let started = tokio::time::Instant::now();
    // The local limit answers (2 a minute): the third is refused.
    assert_eq!(send(&mut svc, "acme").await, None);
    assert_eq!(send(&mut svc, "acme").await, None);
    assert_eq!(send(&mut svc, "acme").await, Some(Reason::RateLimited));
    // Three requests, each bounded by 50 ms: far below the 30 s connect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(resume);
}

/// Thaws a frozen server when dropped, even in a panic, so that its own drop can kill it.
struct Resume<'a>(&'a RedisServer);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}
