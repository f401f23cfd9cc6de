//! Consistent hashing with bounded load (`Balance::hash_by`): the same key lands on the same
//! endpoint while loads are even, keys spread evenly, a change of the set moves few keys, a hot
//! key spills within the bound, and endpoints out of rotation are skipped. All deterministic:
//! seeded balancers on paused time, endpoints that answer at once (or never, to hold load).

mod common;

use std::future::{Pending, Ready, pending, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tollgate_balance::{Balance, EndpointSignal};
use tower::{Service, ServiceExt};

/// An endpoint that answers with its name at once.
#[derive(Clone, Copy, Debug)]
struct Named(u32);

impl Service<u64> for Named {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Ready<Result<u32, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.0))
    }
}

/// An endpoint whose answers never come: each request stays in flight until dropped.
#[derive(Clone, Copy, Debug)]
struct Stuck;

impl Service<u64> for Stuck {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Pending<Result<u32, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        pending()
    }
}

use common::without_ejection as config;

type Keyed<S> = Balance<
    u32,
    S,
    tollgate_core::ErrorsAreFailures,
    tollgate_balance::IgnoreTried,
    Option<tollgate_balance::KeyFn<fn(&u64) -> Option<u64>>>,
>;

/// The request is its own key.
fn by_request(req: &u64) -> Option<u64> {
    Some(*req)
}

fn hashed<S>(endpoints: impl IntoIterator<Item = (u32, S)>, seed: u64) -> Keyed<S> {
    Balance::new(endpoints, config(seed))
        .unwrap()
        .hash_by(by_request as fn(&u64) -> Option<u64>)
}

async fn send(svc: &mut Keyed<Named>, key: u64) -> u32 {
    svc.ready().await.unwrap().call(key).await.unwrap()
}

/// Where each of `keys` goes, one request at a time.
async fn placement(svc: &mut Keyed<Named>, keys: u64) -> Vec<u32> {
    let mut out = Vec::new();
    for k in 0..keys {
        out.push(send(svc, k).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_same_key_always_lands_on_the_same_endpoint_while_loads_are_even() {
    let mut svc = hashed((0..5).map(|i| (i, Named(i))), 1);
    let first = placement(&mut svc, 500).await;
    for round in 0..5 {
        assert_eq!(placement(&mut svc, 500).await, first, "round {round}");
    }
    // Another balancer over the same endpoints, seeded otherwise, maps keys the same way.
    let mut other = hashed((0..5).map(|i| (i, Named(i))), 99);
    assert_eq!(placement(&mut other, 500).await, first);
    let stats = svc.handle().endpoints();
    assert!(stats.iter().all(|e| e.in_flight == 0), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn keys_spread_evenly_over_the_endpoints() {
    let n = 5u32;
    let keys = 20_000u64;
    let mut svc = hashed((0..n).map(|i| (i, Named(i))), 2);
    let placed = placement(&mut svc, keys).await;
    let fair = keys as f64 / f64::from(n);
    for i in 0..n {
        let got = placed.iter().filter(|&&e| e == i).count() as f64;
        assert!(
            (got / fair - 1.0).abs() < 0.25,
            "endpoint {i} got {got} keys, fair is {fair}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn adding_or_removing_one_endpoint_of_n_moves_about_one_nth_of_the_keys() {
    let keys = 10_000u64;
    let mut svc = hashed((0..5).map(|i| (i, Named(i))), 3);
    let before = placement(&mut svc, keys).await;

    svc.handle().insert(5, Named(5));
    let added = placement(&mut svc, keys).await;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&k| added[k] != before[k])
        .collect();
    let share = moved.len() as f64 / keys as f64;
    assert!(
        (0.1..0.25).contains(&share),
        "adding the 6th moved {share:.3}"
    );
    assert!(
        moved.iter().all(|&k| added[k] == 5),
        "keys moved only to the new endpoint"
    );

    assert!(svc.handle().remove(&2));
    let removed = placement(&mut svc, keys).await;
    let moved: Vec<usize> = (0..added.len())
        .filter(|&k| removed[k] != added[k])
        .collect();
    let share = moved.len() as f64 / keys as f64;
    assert!(
        (0.1..0.25).contains(&share),
        "removing one of 6 moved {share:.3}"
    );
    assert!(
        moved.iter().all(|&k| added[k] == 2),
        "only the removed endpoint's keys moved"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hot_key_spills_to_other_endpoints_and_no_endpoint_passes_the_bound() {
    let n = 4usize;
    let mut svc = hashed((0..n as u32).map(|i| (i, Stuck)), 4);
    let handle = svc.handle();
    let mut held = Vec::new();
    for sent in 1..=200usize {
        let fut = svc.ready().await.unwrap().call(77);
        held.push(fut);
        let stats = handle.endpoints();
        let total: usize = stats.iter().map(|e| e.in_flight).sum();
        assert_eq!(total, sent);
        // c = 1.25 (the default): ceil(1.25 × total ÷ endpoints).
        let bound = (1.25 * total as f64 / n as f64).ceil() as usize;
        for e in &stats {
            assert!(
                e.in_flight <= bound,
                "{} in flight on {} with {total} in all (bound {bound})",
                e.in_flight,
                e.key
            );
        }
    }
    // The key fills its home to the bound, then the next endpoints clockwise in turn.
    let loads: Vec<usize> = handle.endpoints().iter().map(|e| e.in_flight).collect();
    let bound = (1.25 * 200.0 / n as f64).ceil() as usize;
    assert_eq!(loads.iter().max(), Some(&bound), "{loads:?}");
    assert!(
        loads.iter().filter(|&&l| l + 1 >= bound).count() >= 3,
        "{loads:?}"
    );
    assert_eq!(loads.iter().filter(|&&l| l > 0).count(), n, "{loads:?}");
    drop(held);
    assert!(handle.endpoints().iter().all(|e| e.in_flight == 0));
}

#[tokio::test(start_paused = true)]
async fn a_single_hot_key_keeps_its_home_while_under_the_bound() {
    // With other keys in flight, the hot key's home takes it up to its bound, not beyond.
    let n = 4usize;
    let mut svc = hashed((0..n as u32).map(|i| (i, Stuck)), 5);
    let handle = svc.handle();
    let mut held = Vec::new();
    // Fill the fleet evenly with many cold keys first.
    for k in 0..400u64 {
        held.push(svc.ready().await.unwrap().call(1_000 + k));
    }
    let home_before: Vec<usize> = handle.endpoints().iter().map(|e| e.in_flight).collect();
    held.push(svc.ready().await.unwrap().call(5));
    let after: Vec<usize> = handle.endpoints().iter().map(|e| e.in_flight).collect();
    let grew: Vec<usize> = (0..n).filter(|&i| after[i] > home_before[i]).collect();
    assert_eq!(grew.len(), 1, "{home_before:?} -> {after:?}");
}

/// A signal that can take its endpoint out of rotation.
#[derive(Debug, Clone, Default)]
struct Switch(Arc<AtomicBool>);

impl EndpointSignal for Switch {
    fn is_available(&self) -> bool {
        !self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn endpoints_out_of_rotation_are_skipped_and_only_their_keys_move() {
    let mut svc = hashed(std::iter::empty(), 6);
    let handle = svc.handle();
    let switches: Vec<Switch> = (0..5).map(|_| Switch::default()).collect();
    for (i, s) in switches.iter().enumerate() {
        handle
            .insert_with_signal(i as u32, Named(i as u32), 1.0, s.clone())
            .unwrap();
    }
    let before = placement(&mut svc, 2_000).await;
    switches[3].0.store(true, Ordering::SeqCst);
    let during = placement(&mut svc, 2_000).await;
    for k in 0..before.len() {
        assert_ne!(during[k], 3, "key {k} went to the unavailable endpoint");
        if before[k] != 3 {
            assert_eq!(
                during[k], before[k],
                "key {k} moved though its endpoint stayed"
            );
        }
    }
    switches[3].0.store(false, Ordering::SeqCst);
    assert_eq!(placement(&mut svc, 2_000).await, before, "keys come back");
}

#[tokio::test(start_paused = true)]
async fn weights_give_an_endpoint_its_share_of_the_keys() {
    let mut svc = hashed(std::iter::empty(), 7);
    let handle = svc.handle();
    handle.insert_weighted(0, Named(0), 1.0).unwrap();
    handle.insert_weighted(1, Named(1), 3.0).unwrap();
    let placed = placement(&mut svc, 8_000).await;
    let heavy = placed.iter().filter(|&&e| e == 1).count() as f64 / 8_000.0;
    assert!(
        (0.65..0.85).contains(&heavy),
        "weight 3 of 4 got {heavy:.3}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_are_picked_as_without_hashing() {
    let eps = || (0..4).map(|i| (i, Named(i)));
    let mut plain = Balance::new(eps(), config(8)).unwrap();
    let mut keyless = Balance::new(eps(), config(8))
        .unwrap()
        .hash_by(|_: &u64| None);
    for i in 0..300 {
        let a = plain.ready().await.unwrap().call(i).await.unwrap();
        let b = keyless.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(a, b);
    }
}

#[tokio::test(start_paused = true)]
async fn hash_with_none_builds_no_ring_and_picks_by_p2c() {
    let eps = || (0..4).map(|i| (i, Named(i)));
    let mut plain = Balance::new(eps(), config(9)).unwrap();
    let mut none = Balance::new(eps(), config(9))
        .unwrap()
        .hash_with(None::<tollgate_balance::KeyFn<fn(&u64) -> Option<u64>>>);
    for i in 0..300 {
        let a = plain.ready().await.unwrap().call(i).await.unwrap();
        let b = none.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(a, b);
    }
}

/// An endpoint that answers with its name at once, ready unless told otherwise (never woken:
/// the balancer polls a replacement once, with a no-op waker).
#[derive(Clone, Debug)]
struct Gated(u32, Arc<AtomicBool>);

impl Service<u64> for Gated {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Ready<Result<u32, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        if self.1.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.0))
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_not_ready_at_once_is_skipped_for_the_next_one_on_the_ring() {
    let gates: Vec<Arc<AtomicBool>> = (0..4).map(|_| Arc::new(AtomicBool::new(true))).collect();
    let mut svc = hashed((0..4).map(|i| (i, Gated(i, gates[i as usize].clone()))), 10);
    let mut home = Vec::new();
    for k in 0..400u64 {
        home.push(svc.ready().await.unwrap().call(k).await.unwrap());
    }
    gates[1].store(false, Ordering::SeqCst);
    for k in 0..400u64 {
        // `poll_ready` may pick the unready endpoint and wait on it: a fresh clone picks again.
        let mut ready = loop {
            let mut clone = svc.clone();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(r) = clone.poll_ready(&mut cx) {
                r.unwrap();
                break clone;
            }
        };
        let to = ready.call(k).await.unwrap();
        assert_ne!(to, 1, "key {k} went to the unready endpoint");
        if home[k as usize] != 1 {
            assert_eq!(
                to, home[k as usize],
                "key {k} moved though its endpoint was ready"
            );
        }
    }
    let stats = svc.handle().endpoints();
    assert!(stats.iter().all(|e| e.in_flight == 0), "{stats:?}");
}
