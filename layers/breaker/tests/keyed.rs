//! Per-key breakers: isolation, the bound on keys, idle eviction.

use std::time::Duration;
use tokio::time::advance;
use tollgate_breaker::{KeyLimits, KeyedBreakerLayer, State};
use tower::{Layer, Service, service_fn};

mod common;
use common::{Req, backend, open_err, quick_trip, send};

#[tokio::test(start_paused = true)]
async fn keys_are_isolated_bounded_and_evicted_when_idle() {
    let limits = KeyLimits {
        max_keys: 2,
        idle_timeout: Duration::from_secs(60),
    };
    let layer =
        KeyedBreakerLayer::new(quick_trip(1), limits, |r: &(&'static str, Req)| r.0).unwrap();
    let keys = layer.handle();
    let mut svc = layer.layer(service_fn(|(_, r): (&'static str, Req)| {
        let mut b = backend();
        async move { b.call(r).await }
    }));
    for _ in 0..4 {
        send(&mut svc, ("a", Req::Fail)).await.unwrap_err();
    }
    assert_eq!(keys.get(&"a").unwrap().state(), State::Open);
    open_err(send(&mut svc, ("a", Req::Ok)).await);
    assert_eq!(
        send(&mut svc, ("b", Req::Ok)).await.unwrap(),
        200,
        "b has its own breaker"
    );
    assert_eq!(keys.get(&"b").unwrap().state(), State::Closed);

    // A third key evicts one: not a, whose breaker is open (evicting it would bring it back
    // closed), but b, the closed one.
    advance(Duration::from_secs(1)).await;
    send(&mut svc, ("b", Req::Ok)).await.unwrap();
    send(&mut svc, ("c", Req::Ok)).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.get(&"b").is_none());
    assert_eq!(keys.get(&"a").unwrap().state(), State::Open);
    open_err(send(&mut svc, ("a", Req::Ok)).await);
    assert_eq!(
        send(&mut svc, ("b", Req::Ok)).await.unwrap(),
        200,
        "b evicted: a fresh, closed breaker"
    );
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.get(&"a").unwrap().state(), State::Open);

    // Keys idle past the timeout are swept when a new key arrives.
    advance(Duration::from_secs(61)).await;
    send(&mut svc, ("d", Req::Ok)).await.unwrap();
    let mut left = keys.keys();
    left.sort();
    assert_eq!(left, ["d"]);
}

/// A client minting a new key per request: the map stays at `max_keys`, each new key evicts
/// one (a few steps, not a scan of the map), the keys in use are the last to go, and the
/// breaker of a failing key stays open through the flood.
#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_neither_grows_the_map_nor_reopens_a_failing_key() {
    let limits = KeyLimits {
        max_keys: 8,
        idle_timeout: Duration::from_secs(600),
    };
    let layer =
        KeyedBreakerLayer::new(quick_trip(1), limits, |r: &(String, Req)| r.0.clone()).unwrap();
    let keys = layer.handle();
    let mut svc = layer.layer(service_fn(|(_, r): (String, Req)| {
        let mut b = backend();
        async move { b.call(r).await }
    }));
    for _ in 0..4 {
        send(&mut svc, ("failing".to_string(), Req::Fail))
            .await
            .unwrap_err();
    }
    assert_eq!(
        keys.get(&"failing".to_string()).unwrap().state(),
        State::Open
    );
    for i in 0..2_000 {
        advance(Duration::from_millis(1)).await;
        send(&mut svc, (format!("minted-{i}"), Req::Ok))
            .await
            .unwrap();
        // A key in steady use alongside.
        send(&mut svc, ("steady".to_string(), Req::Ok))
            .await
            .unwrap();
        assert!(keys.len() <= 8, "{} keys", keys.len());
    }
    assert_eq!(
        keys.get(&"failing".to_string()).unwrap().state(),
        State::Open,
        "the failing key's breaker was not pushed out"
    );
    assert!(
        keys.get(&"steady".to_string()).is_some(),
        "the key in use was not pushed out"
    );
    open_err(send(&mut svc, ("failing".to_string(), Req::Ok)).await);
}
