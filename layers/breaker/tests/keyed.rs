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

    // A third key evicts the least recently used one (a, last used before b).
    advance(Duration::from_secs(1)).await;
    send(&mut svc, ("b", Req::Ok)).await.unwrap();
    send(&mut svc, ("c", Req::Ok)).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.get(&"a").is_none());
    assert_eq!(
        send(&mut svc, ("a", Req::Ok)).await.unwrap(),
        200,
        "a evicted: a fresh, closed breaker"
    );
    assert_eq!(keys.len(), 2);

    // Keys idle past the timeout are swept when a new key arrives.
    advance(Duration::from_secs(61)).await;
    send(&mut svc, ("d", Req::Ok)).await.unwrap();
    let mut left = keys.keys();
    left.sort();
    assert_eq!(left, ["d"]);
}
