//! The scenarios, on paused time: single-flight, TTL, negative TTL,
//! stale-while-revalidate, stale-if-error, hot-key expiry, invalidation, take-over.

mod support;

use std::time::Duration;
use support::{Origin, Resp, get, policy};
use tokio::time::{Instant, advance};
use tollgate_cache::{CacheConfig, CacheLayer};
use tollgate_core::testing::{Probe, ProbeRequest};
use tower::ServiceExt;
use tower_layer::Layer;

const S: fn(u64) -> Duration = Duration::from_secs;

fn cfg() -> CacheConfig {
    CacheConfig {
        default_ttl: S(10),
        negative_ttl: S(2),
        xfetch_beta: 0.0,
        ..CacheConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_misses_make_one_inner_call() {
    let layer = CacheLayer::new(cfg(), policy()).unwrap();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(100));
    let svc = layer.layer(origin.clone());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn({
                let svc = svc.clone();
                async move { get(&svc, 7).await }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Resp::Found(7, 1));
    }
    assert_eq!(origin.calls(), 1);
    let st = layer.handle().stats();
    assert_eq!(st.coalesced, 999, "{st:?}");
    assert_eq!(st.inner_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let layer = CacheLayer::new(cfg(), policy()).unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    advance(S(9)).await;
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    advance(S(1)).await;
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 2));
    assert_eq!(origin.calls(), 2);
    let st = layer.handle().stats();
    assert_eq!((st.lookups, st.l1_hits + st.l2_hits), (3, 1), "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn negative_answers_keep_their_own_ttl() {
    let layer = CacheLayer::new(cfg(), policy()).unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    assert_eq!(get(&svc, 1234).await.unwrap(), Resp::NotFound);
    advance(Duration::from_millis(1900)).await;
    assert_eq!(get(&svc, 1234).await.unwrap(), Resp::NotFound);
    assert_eq!(origin.calls(), 1);
    advance(Duration::from_millis(100)).await;
    assert_eq!(get(&svc, 1234).await.unwrap(), Resp::NotFound);
    assert_eq!(origin.calls(), 2);
    // Off when its TTL is zero.
    let layer = CacheLayer::new(
        CacheConfig {
            negative_ttl: Duration::ZERO,
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    get(&svc, 1234).await.unwrap();
    get(&svc, 1234).await.unwrap();
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let layer = CacheLayer::new(
        CacheConfig {
            stale_while_revalidate: S(20),
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    origin.set_delay(S(1));
    let svc = layer.layer(origin.clone());
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    advance(S(15)).await;
    // Many requests in the window: each is answered at once from the stale entry ...
    let t0 = Instant::now();
    for _ in 0..50 {
        assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    }
    assert_eq!(
        Instant::now(),
        t0,
        "stale answers must not wait for the refresh"
    );
    // ... and one background refresh replaces it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(origin.calls(), 2);
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 2));
    let st = layer.handle().stats();
    assert_eq!((st.refreshes, st.stale_served), (1, 50), "{st:?}");
    // Past the window, it is a plain miss.
    advance(S(40)).await;
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 3));
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_rides_out_a_30s_outage() {
    let layer = CacheLayer::new(
        CacheConfig {
            stale_if_error: S(60),
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    for k in 0..50 {
        assert_eq!(get(&svc, k).await.unwrap(), Resp::Found(k, k as usize + 1));
    }
    advance(S(10)).await;
    // The origin fails every request for 30 s (errors for 15 s, then 5xx answers).
    origin.set_fail(true);
    for second in 0..30 {
        if second == 15 {
            origin.set_fail(false);
            origin.set_server_error(true);
        }
        for k in 0..50 {
            let res = get(&svc, k)
                .await
                .unwrap_or_else(|e| panic!("key {k} at +{second}s failed: {e}"));
            assert_eq!(res, Resp::Found(k, k as usize + 1));
        }
        advance(S(1)).await;
    }
    assert!(layer.handle().stats().stale_if_error >= 1500);
    origin.set_server_error(false);
    assert!(matches!(get(&svc, 3).await.unwrap(), Resp::Found(3, n) if n > 50));
    // Keys never cached still see the failure.
    origin.set_fail(true);
    assert!(get(&svc, 999).await.is_err());
    // And past the window the error comes through.
    advance(S(60)).await;
    assert!(get(&svc, 4).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn waiters_holding_stale_entries_serve_them_when_the_leader_fails() {
    let layer = CacheLayer::new(
        CacheConfig {
            stale_if_error: S(60),
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    get(&svc, 1).await.unwrap();
    advance(S(11)).await;
    origin.set_fail(true);
    origin.set_delay(S(1));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let svc = svc.clone();
                async move { get(&svc, 1).await }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Resp::Found(1, 1));
    }
    assert_eq!(
        origin.calls(),
        2,
        "the failed leader's waiters served stale instead of retrying"
    );
}

/// Steady load on one hot key: every expiry costs the origin exactly one call.
async fn hot_key_under_load(config: CacheConfig) -> (usize, u64) {
    let layer = CacheLayer::new(config, policy()).unwrap();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(50));
    let svc = layer.layer(origin.clone());
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            tokio::spawn({
                let svc = svc.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(i)).await;
                    let end = Instant::now() + S(100);
                    while Instant::now() < end {
                        assert!(matches!(get(&svc, 42).await.unwrap(), Resp::Found(42, _)));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (origin.calls(), layer.handle().stats().coalesced)
}

#[tokio::test(start_paused = true)]
async fn hot_key_expiry_costs_one_origin_call() {
    // 100 s of load, a 10 s TTL: the first fill and one call per expiry.
    let (calls, coalesced) = hot_key_under_load(cfg()).await;
    assert!(
        (10..=11).contains(&calls),
        "{calls} origin calls for ~10 expiries"
    );
    assert!(coalesced > 0);
    // With XFetch the refresh starts early, still once per expiry, and nobody waits.
    let (calls, _) = hot_key_under_load(CacheConfig {
        xfetch_beta: 1.0,
        ..cfg()
    })
    .await;
    assert!(
        (10..=11).contains(&calls),
        "{calls} origin calls with XFetch"
    );
    // With stale-while-revalidate likewise.
    let (calls, coalesced) = hot_key_under_load(CacheConfig {
        stale_while_revalidate: S(5),
        ..cfg()
    })
    .await;
    assert!((10..=11).contains(&calls), "{calls} origin calls with SWR");
    assert_eq!(
        coalesced, 7,
        "SWR: only the first fill has waiters, nobody waits for a refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_before_expiry() {
    let layer = CacheLayer::new(
        CacheConfig {
            xfetch_beta: 3.0,
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    origin.set_delay(S(1));
    let svc = layer.layer(origin.clone());
    get(&svc, 5).await.unwrap();
    let expiry = Instant::now() + S(10);
    let mut refreshed_at = None;
    while Instant::now() < expiry {
        get(&svc, 5).await.unwrap();
        if refreshed_at.is_none() && origin.calls() == 2 {
            refreshed_at = Some(expiry - Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let early = refreshed_at.expect("XFetch started a refresh before expiry");
    assert!(
        early < S(8),
        "refreshed {early:?} before expiry: too early for delta = 1 s"
    );
    // The refreshed value is in place at the old expiry: no miss, no wait.
    let t = Instant::now();
    assert_eq!(get(&svc, 5).await.unwrap(), Resp::Found(5, 2));
    assert_eq!(Instant::now(), t);
}

#[tokio::test(start_paused = true)]
async fn invalidation_drops_a_key_everywhere_locally() {
    let layer = CacheLayer::new(cfg(), policy()).unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    get(&svc, 1).await.unwrap();
    get(&svc, 2).await.unwrap();
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    layer.handle().invalidate(&1);
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 3));
    assert_eq!(get(&svc, 2).await.unwrap(), Resp::Found(2, 2));
    // A fetch in flight during the invalidation answers but does not store its value.
    origin.set_delay(S(1));
    layer.handle().invalidate(&1);
    let pending = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 1).await }
    });
    tokio::task::yield_now().await;
    layer.handle().invalidate(&1);
    assert_eq!(pending.await.unwrap().unwrap(), Resp::Found(1, 4));
    origin.set_delay(Duration::ZERO);
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 5));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_takes_over_from_a_dropped_leader() {
    let layer = CacheLayer::new(
        cfg(),
        tollgate_cache::FnPolicy::new(
            |r: &ProbeRequest| Some(r.clone()),
            |_: &u64| tollgate_cache::Cacheability::Store(Default::default()),
        ),
    )
    .unwrap();
    let (probe, handle) = Probe::new();
    let svc = layer.layer(probe);
    let req = ProbeRequest::Delay(S(10), 9);
    let leader = tokio::spawn(svc.clone().oneshot(req.clone()));
    tokio::task::yield_now().await;
    let waiter = tokio::spawn(svc.clone().oneshot(req.clone()));
    advance(S(1)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let res = tokio::time::timeout(support::HOUR, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(res, 9);
    assert_eq!(handle.calls(), 2);
    assert_eq!(layer.handle().stats().takeovers, 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_takes_over_from_a_failed_leader_and_waits_are_bounded() {
    let layer = CacheLayer::new(
        CacheConfig {
            coalesce_timeout: S(2),
            ..cfg()
        },
        policy(),
    )
    .unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    origin.set_fail(true);
    origin.set_next_delay(S(1));
    let leader = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 1).await }
    });
    tokio::task::yield_now().await;
    origin.set_fail(false);
    let waiter = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 1).await }
    });
    assert!(leader.await.unwrap().is_err());
    assert_eq!(waiter.await.unwrap().unwrap(), Resp::Found(1, 2));
    // A leader that takes too long: the waiter gives up waiting after 2 s and asks itself.
    origin.set_next_delay(S(100));
    let slow = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, 2).await }
    });
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    assert_eq!(get(&svc, 2).await.unwrap(), Resp::Found(2, 4));
    assert_eq!(Instant::now() - t0, S(2));
    assert_eq!(layer.handle().stats().wait_timeouts, 1);
    assert_eq!(slow.await.unwrap().unwrap(), Resp::Found(2, 3));
}

#[tokio::test(start_paused = true)]
async fn unkeyed_and_uncacheable_requests_pass_through() {
    let layer = CacheLayer::new(
        cfg(),
        tollgate_cache::FnPolicy::new(
            |k: &u64| (*k != 0).then_some(*k),
            |_: &Resp| tollgate_cache::Cacheability::Pass,
        ),
    )
    .unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    get(&svc, 0).await.unwrap();
    get(&svc, 1).await.unwrap();
    get(&svc, 1).await.unwrap();
    assert_eq!(origin.calls(), 3);
    let st = layer.handle().stats();
    assert_eq!((st.bypassed, st.lookups), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn idle_entries_expire_after_time_to_idle() {
    let cfg = CacheConfig {
        default_ttl: S(60),
        time_to_idle: Some(S(5)),
        ..cfg()
    };
    let layer = CacheLayer::new(cfg, policy()).unwrap();
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    get(&svc, 1).await.unwrap();
    // Read every 4 s: it stays.
    for _ in 0..5 {
        advance(S(4)).await;
        assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 1));
    }
    // Left alone for 6 s: gone, though its TTL has 36 s left.
    advance(S(6)).await;
    assert_eq!(get(&svc, 1).await.unwrap(), Resp::Found(1, 2));
}

#[test]
fn config_is_checked_when_the_layer_is_built() {
    let err = CacheLayer::new(
        CacheConfig {
            l2_capacity: 0,
            ..cfg()
        },
        policy(),
    )
    .unwrap_err();
    assert_eq!(err.field(), "l2_capacity");
}
