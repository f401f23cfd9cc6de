//! An axum app behind admission, a circuit breaker, an adaptive pool and a cache, with a small
//! load driver that shows what clients see: shedding by priority (503), a rate limit (429), an
//! open breaker (503 with the time to the next probe) and cache hits; and a client with
//! budgeted retries in front of a route that fails now and then. Stops by itself in a few
//! seconds.
//!
//! ```text
//! cargo run --example axum-stack --features full,http
//! ```

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tollgate::ServiceBuilderExt;
use tollgate::admission::http::HttpPrioritizer;
use tollgate::admission::{
    AdmissionConfig, AdmissionLayer, ClassConfig, RateLimitConfig, ReadyMode,
};
use tollgate::breaker::{BreakerConfig, BreakerLayer};
use tollgate::cache::http::HttpPolicy;
use tollgate::cache::{CacheConfig, CacheLayer};
use tollgate::core::BoxError;
use tollgate::core::classify::ServerErrorsAreFailures;
use tollgate::http::RejectionLayer;
use tollgate::pool::{PoolConfig, PoolSizerLayer};
use tollgate::retry::http::{HttpPolicy as RetryPolicy, ReplayBody};
use tollgate::retry::{RetryConfig, RetryLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // --- the app ------------------------------------------------------------------------------
    // `/work`: two classes from the `x-priority` header; 4 requests in flight, short queues.
    let classes = ["critical", "sheddable"];
    let admission = AdmissionLayer::new(AdmissionConfig {
        classes: vec![
            ClassConfig::new("critical").with_queue_capacity(64),
            ClassConfig::new("sheddable").with_queue_capacity(4),
        ],
        limit: 4,
        ready_mode: ReadyMode::Always, // axum calls services without waiting on `poll_ready`
        ..AdmissionConfig::default()
    })?
    .prioritize(HttpPrioritizer::new(classes));
    let admission_stats = admission.handle();
    let pool = PoolSizerLayer::from_config(PoolConfig {
        initial_limit: 16,
        ..PoolConfig::default()
    })?;
    let pool_limiter = pool.limiter().clone();
    let work = ServiceBuilder::new()
        .layer(RejectionLayer::http()) // outermost: rejections become 503/429/504
        .admission(admission) // shed low priority before any work
        .breaker(work_breaker()?) // fail fast if the backend keeps failing
        .pool(pool.deferred()); // learn how much concurrency the backend takes

    // `/flaky`: its own breaker (per-route state: a layer per route).
    let flaky_breaker = BreakerLayer::new(BreakerConfig {
        name: "flaky".into(),
        consecutive_failures: Some(3),
        wait_in_open: Duration::from_secs(5),
        ..BreakerConfig::default()
    })?
    .with_classifier(ServerErrorsAreFailures);
    let flaky = ServiceBuilder::new()
        .layer(RejectionLayer::http())
        .breaker(flaky_breaker);

    // `/quota`: 5 requests per 10 s for each `x-tenant`.
    let quota = AdmissionLayer::new(AdmissionConfig {
        classes: vec![ClassConfig::new("all")],
        rate_limit: Some(RateLimitConfig::new(5, Duration::from_secs(10))),
        ready_mode: ReadyMode::Always,
        ..AdmissionConfig::default()
    })?
    .prioritize(HttpPrioritizer::new(["all"]).with_key_header("x-tenant".parse()?));
    let quota = ServiceBuilder::new()
        .layer(RejectionLayer::http())
        .admission(quota);

    // `/report`: an expensive page cached by its `Cache-Control`. The HTTP cache policy stores
    // `Response<Bytes>`, so the handler answers bytes and the stack turns them into a body.
    let renders = Arc::new(AtomicU64::new(0));
    let cache = CacheLayer::new(CacheConfig::default(), HttpPolicy::new())?;
    let cache_stats = cache.handle();
    let report = ServiceBuilder::new()
        .layer(RejectionLayer::http())
        .map_response(|res: Response<Bytes>| res.map(Body::from))
        .cache(cache)
        .service_fn({
            let renders = renders.clone();
            move |_req: Request<Body>| {
                let renders = renders.clone();
                async move {
                    renders.fetch_add(1, Ordering::Relaxed); // a count for the printout
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(http::header::CACHE_CONTROL, "max-age=60")
                            .body(Bytes::from_static(b"quarterly report"))
                            .expect("valid response"),
                    )
                }
            }
        });

    // `/sometimes` answers 503 to every third request it sees.
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = attempts.clone();
    let app = Router::new()
        .route("/work", get(handle_work).layer(work))
        .route(
            "/flaky",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database down") }).layer(flaky),
        )
        .route("/quota", get(|| async { "ok" }).layer(quota))
        .route(
            "/sometimes",
            get(move || {
                // Relaxed: a sequence number.
                let n = attempts.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n % 3 == 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "busy, try again")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route_service("/report", report);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on http://{addr}\n");

    // --- the load driver ----------------------------------------------------------------------
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    println!("1. 80 concurrent requests to /work (4 in flight allowed, 25 ms each):");
    let mut sent = Vec::new();
    for i in 0..80 {
        let class = if i % 2 == 0 { "critical" } else { "sheddable" };
        let client = client.clone();
        sent.push(tokio::spawn(async move {
            (
                class,
                get_once(&client, addr, "/work", &[("x-priority", class)]).await,
            )
        }));
    }
    let mut outcomes: BTreeMap<(&str, u16), u32> = BTreeMap::new();
    let mut retry_afters = BTreeMap::new();
    for task in sent {
        let (class, (status, retry_after)) = task.await?;
        *outcomes.entry((class, status.as_u16())).or_default() += 1;
        if let Some(secs) = retry_after {
            retry_afters.insert(status.as_u16(), secs);
        }
    }
    for ((class, status), n) in &outcomes {
        println!("   {class:>9}: {n:>2} x {status}");
    }
    for (status, secs) in &retry_afters {
        println!("   a {status} carried Retry-After: {secs}");
    }
    let snap = admission_stats.snapshot();
    for name in classes {
        let c = snap.class(name).expect("configured class");
        println!("   admission {name:>9}: admitted {}", c.admitted);
    }
    println!("   pool limit now {:.0}", pool_limiter.snapshot().limit);

    println!("\n2. 8 quick requests to /quota from one tenant (5 per 10 s):");
    for _ in 0..8 {
        let (status, retry_after) =
            get_once(&client, addr, "/quota", &[("x-tenant", "acme")]).await;
        println!(
            "   {status} {}",
            retry_after
                .map(|s| format!("Retry-After: {s}"))
                .unwrap_or_default()
        );
    }

    println!("\n3. 5 requests to /flaky (its breaker opens after 3 failures in a row):");
    for _ in 0..5 {
        let (status, retry_after) = get_once(&client, addr, "/flaky", &[]).await;
        println!(
            "   {status} {}",
            retry_after
                .map(|s| format!("Retry-After: {s}"))
                .unwrap_or_default()
        );
    }

    println!("\n4. 20 requests to /report (cached for 60 s):");
    for _ in 0..20 {
        let (status, _) = get_once(&client, addr, "/report", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    println!(
        "   rendered {} time(s); cache hit ratio {:.2}",
        renders.load(Ordering::Relaxed),
        cache_stats.stats().hit_ratio()
    );

    println!(
        "\n5. 20 requests to /sometimes through a client that retries (503 every 3rd attempt):"
    );
    // Idempotent GETs answered 502/503/504 (or failing to connect) are tried again, after a
    // jittered backoff or the server's Retry-After, within a budget of 10% of the requests
    // plus a floor, shared by every clone of the client.
    let retry = RetryLayer::new(RetryConfig::default())?.with_policy(RetryPolicy::default());
    let budget = retry.budget().clone();
    let retry_client: Client<HttpConnector, ReplayBody<Empty<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut retrying = ServiceBuilder::new().layer(retry).service(retry_client);
    let mut ok = 0;
    for _ in 0..20 {
        let req = Request::get(format!("http://{addr}/sometimes"))
            .body(ReplayBody::empty())
            .expect("valid request");
        let res = retrying.ready().await?.call(req).await?;
        ok += u32::from(res.status() == StatusCode::OK);
    }
    println!(
        "   {ok} of 20 answered 200; the server saw {} attempts; {} retries spent from the budget",
        // Relaxed: read after the requests.
        seen.load(Ordering::Relaxed),
        budget.snapshot().spent
    );
    Ok(())
}

/// The backend of `/work`: 25 ms of work.
async fn handle_work() -> &'static str {
    tokio::time::sleep(Duration::from_millis(25)).await;
    "done"
}

fn work_breaker() -> Result<BreakerLayer<ServerErrorsAreFailures>, BoxError> {
    Ok(BreakerLayer::new(BreakerConfig {
        name: "work".into(),
        ..BreakerConfig::default()
    })?
    .with_classifier(ServerErrorsAreFailures))
}

/// One GET: the status and the `Retry-After` seconds, if any.
async fn get_once(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<u64>) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).expect("valid request"))
        .await
        .expect("the server answers");
    let retry_after = res
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let status = res.status();
    let _ = res.into_body().collect().await;
    (status, retry_after)
}
