//! What an admitted request learns of its key's quota ([`RateLimitState`], through
//! [`Prioritize::rate_checked`]): the local GCRA on tokio's paused clock over several burst
//! and period settings, and the Redis-shared one against a real `redis-server` (skipped when
//! it is not installed, unless `TOLLGATE_REQUIRE_REDIS=1`).

use std::time::Duration;
use tollgate_admission::{
    AdmissionConfig, AdmissionLayer, Prioritize, RateLimitConfig, RateLimitState, Reason, Rejected,
    Ticket,
};
use tollgate_core::BoxError;
use tower::ServiceExt;
use tower_layer::Layer;

/// A request for a key; the layer writes what the key has left into it.
struct Req {
    key: &'static str,
    left: Option<RateLimitState>,
}

/// Keys requests by `key` and keeps the reported state in the request.
struct Keyed;

impl Prioritize<Req> for Keyed {
    fn prioritize(&self, req: &Req) -> Ticket {
        Ticket::new(0).with_key(req.key)
    }

    fn rate_checked(req: &mut Req, state: RateLimitState) {
        req.left = Some(state);
    }
}

/// What one request was told: `Ok(state)` from the inner service (the request's own copy),
/// or the rejection's reason.
async fn send<S>(svc: &S, key: &'static str) -> Result<Option<RateLimitState>, Reason>
where
    S: tower_service::Service<Req, Response = Option<RateLimitState>, Error = BoxError> + Clone,
{
    match svc.clone().oneshot(Req { key, left: None }).await {
        Ok(left) => Ok(left),
        Err(e) => Err(e.downcast_ref::<Rejected>().expect("a rejection").reason()),
    }
}

fn layer(rate: RateLimitConfig) -> AdmissionLayer<Keyed> {
    AdmissionLayer::new(AdmissionConfig {
        rate_limit: Some(rate),
        ..AdmissionConfig::default()
    })
    .unwrap()
    .prioritize(Keyed)
}

fn echo(req: Req) -> std::future::Ready<Result<Option<RateLimitState>, BoxError>> {
    std::future::ready(Ok(req.left))
}

fn state(remaining: u32, reset: Duration) -> Option<RateLimitState> {
    Some(RateLimitState { remaining, reset })
}

#[tokio::test(start_paused = true)]
async fn the_remaining_count_follows_the_gcra_over_a_sequence() {
    for (burst, period_ms) in [(1u32, 1000u64), (3, 3000), (5, 1000), (10, 60_000)] {
        let svc = layer(RateLimitConfig::new(
            burst,
            Duration::from_millis(period_ms),
        ))
        .layer(tower::service_fn(echo));
        let interval = Duration::from_millis(period_ms / u64::from(burst));
        // The whole burst at once: one fewer left each time, the next one an interval away.
        for left in (0..burst).rev() {
            assert_eq!(
                send(&svc, "a").await,
                Ok(state(left, interval)),
                "burst {burst}, period {period_ms} ms"
            );
        }
        assert_eq!(send(&svc, "a").await, Err(Reason::RateLimited));
        // Another key is untouched.
        assert_eq!(send(&svc, "b").await, Ok(state(burst - 1, interval)));
        // A quarter interval short of the next token: still refused; at it, one goes and
        // none is left, the next a whole interval away.
        tokio::time::advance(interval * 3 / 4).await;
        assert_eq!(send(&svc, "a").await, Err(Reason::RateLimited));
        tokio::time::advance(interval / 4).await;
        assert_eq!(send(&svc, "a").await, Ok(state(0, interval)));
        // Seven quarters of an interval on (with room for two tokens), one and three
        // quarters are back: this request takes one, none whole is left, and the next is a
        // quarter interval away.
        if burst >= 2 {
            tokio::time::advance(interval * 7 / 4).await;
            assert_eq!(send(&svc, "a").await, Ok(state(0, interval / 4)));
            tokio::time::advance(interval / 4).await;
            assert_eq!(send(&svc, "a").await, Ok(state(0, interval)));
        }
        // A whole period idle: the whole burst again.
        tokio::time::advance(Duration::from_millis(period_ms) * 2).await;
        assert_eq!(send(&svc, "a").await, Ok(state(burst - 1, interval)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_learns_nothing() {
    let svc = AdmissionLayer::new(AdmissionConfig {
        rate_limit: Some(RateLimitConfig::new(2, Duration::from_secs(1))),
        ..AdmissionConfig::default()
    })
    .unwrap()
    .prioritize(|_: &Req| Ticket::new(0))
    .layer(tower::service_fn(echo));
    for _ in 0..4 {
        assert_eq!(send(&svc, "a").await, Ok(None));
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_shared_quota_reports_the_count_redis_keeps() {
    use tollgate_admission::RedisConfig;
    use tollgate_core::testing::redis::RedisServer;
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two instances, 4 per minute per key, one quota in Redis: each answer counts what both
    // spent. Real time: a reset is at most the 15 s interval, and close to it.
    let instance = || {
        let rate = RateLimitConfig {
            redis: Some(RedisConfig::new(server.url())),
            ..RateLimitConfig::new(4, Duration::from_secs(60))
        };
        layer(rate).layer(tower::service_fn(echo))
    };
    let (a, b) = (instance(), instance());
    let interval = Duration::from_secs(15);
    for (svc, left) in [(&a, 3), (&b, 2), (&a, 1), (&b, 0)] {
        let got = send(svc, "acme").await.unwrap().expect("a state");
        assert_eq!(got.remaining, left);
        assert!(
            got.reset <= interval && got.reset > interval - Duration::from_secs(5),
            "{got:?}"
        );
    }
    assert_eq!(send(&a, "acme").await, Err(Reason::RateLimited));
    let other = send(&b, "globex").await.unwrap().expect("a state");
    assert_eq!(other.remaining, 3);
}
