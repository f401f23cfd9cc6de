//! Fuzzing entry point: endpoint-set updates, health checks, outcomes and time, driven through
//! the real [`Balance`] on a paused current-thread runtime.
//!
//! Invariants checked after every step:
//!
//! - a pick never panics, fails with [`NoEndpoints`] exactly when the set is empty, and never
//!   goes to a removed endpoint;
//! - outside panic mode it goes to an admitted endpoint (healthy, not ejected, available by
//!   its external signal);
//! - an ejection never makes more than `max_ejection_share` of the endpoints ejected, and
//!   lasts between the base time and the cap;
//! - each endpoint's in-flight count equals the requests held on it, and every count is back
//!   to zero (and nothing drains) once all requests are dropped.

use crate::config::BalanceConfig;
use crate::error::NoEndpoints;
use crate::handle::EndpointState;
use crate::service::Balance;
use arbitrary::{Arbitrary, Unstructured};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tower_service::Service;

/// One step of a fuzz run.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Add (or replace) endpoint `key % 16` with weight `1 + weight % 8`.
    Insert {
        /// The endpoint.
        key: u8,
        /// Its weight, less one.
        weight: u8,
    },
    /// Remove endpoint `key % 16`.
    Remove {
        /// The endpoint.
        key: u8,
    },
    /// Pick an endpoint and start a request that stays in flight.
    Start,
    /// Finish the held request `which` (modulo the number held) as a success or failure.
    Finish {
        /// Which held request.
        which: u8,
        /// Whether it fails.
        fail: bool,
    },
    /// Drop the held request `which` unfinished.
    Cancel {
        /// Which held request.
        which: u8,
    },
    /// Run `n % 32` requests that fail (or succeed) at once.
    Burst {
        /// How many.
        n: u8,
        /// Whether they fail.
        fail: bool,
    },
    /// Record a health check of endpoint `key % 16`.
    Check {
        /// The endpoint.
        key: u8,
        /// Whether it passed.
        passed: bool,
    },
    /// Set the external signal of endpoint `key % 16`.
    Signal {
        /// The endpoint.
        key: u8,
        /// Whether it lets the endpoint take requests.
        available: bool,
    },
    /// Let `ms` milliseconds pass (times 100 when `long`).
    Advance {
        /// Milliseconds.
        ms: u16,
        /// Multiply by 100.
        long: bool,
    },
}

/// An external signal the ops switch.
#[derive(Debug, Clone)]
struct Flag(Arc<std::sync::atomic::AtomicBool>);

impl crate::signal::EndpointSignal for Flag {
    fn is_available(&self) -> bool {
        // Relaxed: one thread.
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Requests carry a channel the test answers through.
type Req = oneshot::Receiver<bool>;

#[derive(Clone)]
struct Endpoint {
    key: u8,
    called: Arc<Mutex<Option<u8>>>,
}

impl Service<Req> for Endpoint {
    type Response = ();
    type Error = &'static str;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<(), &'static str>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, rx: Req) -> Self::Future {
        *self.called.lock().unwrap() = Some(self.key);
        Box::pin(async move {
            match rx.await {
                Ok(false) => Ok(()),
                _ => Err("failed"),
            }
        })
    }
}

type Fut = crate::future::ResponseFuture<
    <Endpoint as Service<Req>>::Future,
    tollgate_core::ErrorsAreFailures,
>;

struct Held {
    key: u8,
    tx: Option<oneshot::Sender<bool>>,
    fut: Pin<Box<Fut>>,
}

/// Runs one fuzz input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    run_counted(data);
}

/// [`run`], returning how many requests were routed (so a corpus can be checked to exercise
/// routing at all).
pub fn run_counted(data: &[u8]) -> usize {
    let mut u = Unstructured::new(data);
    let Ok(ops) = build(&mut u) else { return 0 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(drive(ops.0, ops.1))
}

fn build(u: &mut Unstructured<'_>) -> arbitrary::Result<(BalanceConfig, Vec<Op>)> {
    let mut c = BalanceConfig {
        seed: Some(u.arbitrary()?),
        ..Default::default()
    };
    c.outlier.consecutive_failures = u.int_in_range(0..=6)?;
    c.outlier.max_ejection_share = f64::from(u.int_in_range(0u8..=10)?) / 10.0;
    c.outlier.base_ejection_time = Duration::from_millis(u.int_in_range(1..=5_000)?);
    c.outlier.max_ejection_time = c.outlier.base_ejection_time * u.int_in_range(1..=5)?;
    c.outlier.success_rate_min_requests = u.int_in_range(1..=20)?;
    c.outlier.success_rate_min_hosts = u.int_in_range(2..=5)?;
    c.panic_threshold = f64::from(u.int_in_range(0u8..=10)?) / 10.0;
    c.slow_start = Duration::from_millis(u.int_in_range(0..=10_000)?);
    c.health.unhealthy_threshold = u.int_in_range(1..=3)?;
    c.health.healthy_threshold = u.int_in_range(1..=3)?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 512 {
        ops.push(u.arbitrary()?);
    }
    Ok((c, ops))
}

async fn drive(config: BalanceConfig, ops: Vec<Op>) -> usize {
    let cap_share = config.outlier.max_ejection_share;
    let max = config.outlier.max_ejection_time;
    let (h_bad, h_good) = (
        config.health.unhealthy_threshold,
        config.health.healthy_threshold,
    );
    let mut balance: Balance<u8, Endpoint> = Balance::new([], config).expect("a valid config");
    let handle = balance.handle();
    let called = Arc::new(Mutex::new(None));
    let mut held: Vec<Held> = Vec::new();
    let flags: Vec<Flag> = (0..16)
        .map(|_| Flag(Arc::new(std::sync::atomic::AtomicBool::new(true))))
        .collect();
    let mut routed = 0;

    for op in ops {
        let ejected_before = handle.ejected();
        match op {
            Op::Insert { key, weight } => {
                let key = key % 16;
                let ep = Endpoint {
                    key,
                    called: called.clone(),
                };
                let flag = flags[usize::from(key)].clone();
                handle
                    .insert_with_signal(key, ep, f64::from(1 + weight % 8), flag)
                    .expect("a valid weight");
            }
            Op::Remove { key } => {
                handle.remove(&(key % 16));
            }
            Op::Start => {
                let (tx, rx) = oneshot::channel();
                if let Some(fut) = pick(&mut balance, &handle, &called, rx) {
                    routed += 1;
                    held.push(Held {
                        key: fut.0,
                        tx: Some(tx),
                        fut: Box::pin(fut.1),
                    });
                }
            }
            Op::Finish { which, fail } if !held.is_empty() => {
                let mut h = held.swap_remove(usize::from(which) % held.len());
                let _ = h.tx.take().map(|tx| tx.send(fail));
                // Unconstrained: tokio's cooperative budget may run out in a long op sequence
                // and make the answered channel look pending for one poll.
                let poll = poll_fn(|cx| Poll::Ready(h.fut.as_mut().poll(cx)));
                let res = tokio::task::unconstrained(poll).await;
                assert!(res.is_ready(), "a finished request stayed pending");
            }
            Op::Cancel { which } if !held.is_empty() => {
                held.swap_remove(usize::from(which) % held.len());
            }
            Op::Finish { .. } | Op::Cancel { .. } => {}
            Op::Burst { n, fail } => {
                for _ in 0..n % 32 {
                    let (tx, rx) = oneshot::channel();
                    let Some((_, fut)) = pick(&mut balance, &handle, &called, rx) else {
                        break;
                    };
                    let _ = tx.send(fail);
                    let _ = fut.await;
                }
            }
            Op::Check { key, passed } => {
                let snap = balance.shared().fleet.load();
                if let Some(e) = snap.endpoints.iter().find(|e| e.key == key % 16) {
                    let now = balance.shared().fleet.common.now();
                    e.core.check(now, passed, h_bad, h_good);
                }
            }
            Op::Signal { key, available } => {
                // Relaxed: one thread.
                flags[usize::from(key % 16)]
                    .0
                    .store(available, std::sync::atomic::Ordering::Relaxed);
            }
            Op::Advance { ms, long } => {
                let ms = u64::from(ms) * if long { 100 } else { 1 };
                tokio::time::advance(Duration::from_millis(ms)).await;
            }
        }
        check(&balance, &handle, &held, ejected_before, cap_share, max);
    }
    drop(held);
    for e in handle.endpoints() {
        assert_eq!(e.in_flight, 0, "in flight not given back: {e:?}");
        assert_ne!(
            e.state,
            EndpointState::Draining,
            "still draining with nothing in flight"
        );
    }
    routed
}

/// Readies the balancer and sends `rx`; checks where it went.
fn pick(
    balance: &mut Balance<u8, Endpoint>,
    handle: &crate::BalanceHandle<u8, Endpoint>,
    called: &Arc<Mutex<Option<u8>>>,
    rx: Req,
) -> Option<(u8, Fut)> {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let empty = handle.is_empty();
    let ready = balance.poll_ready(&mut cx);
    // Read after `poll_ready`: it may run the success-rate sweep (ejecting endpoints) before it
    // picks, and time does not move until the request finishes.
    let panicking = handle.is_panicking();
    let before = handle.endpoints();
    match ready {
        Poll::Ready(Ok(())) => assert!(!empty, "ready with no endpoints"),
        Poll::Ready(Err(e)) => {
            assert!(empty && e.is::<NoEndpoints>(), "unexpected error: {e}");
            return None;
        }
        Poll::Pending => panic!("always-ready endpoints left the balancer pending"),
    }
    let fut = balance.call(rx);
    let key = called
        .lock()
        .unwrap()
        .take()
        .expect("the request reached an endpoint");
    let chosen = before
        .iter()
        .find(|e| e.key == key && e.state != EndpointState::Draining);
    let chosen = chosen.unwrap_or_else(|| panic!("routed to endpoint {key}, not in the set"));
    if !panicking {
        assert!(
            matches!(
                chosen.state,
                EndpointState::Healthy | EndpointState::SlowStart
            ),
            "routed outside panic mode to {chosen:?}"
        );
    }
    Some((key, fut))
}

fn check(
    balance: &Balance<u8, Endpoint>,
    handle: &crate::BalanceHandle<u8, Endpoint>,
    held: &[Held],
    ejected_before: usize,
    cap_share: f64,
    max: Duration,
) {
    let stats = handle.endpoints();
    let members = stats
        .iter()
        .filter(|e| e.state != EndpointState::Draining)
        .count();
    let ejected = handle.ejected();
    if ejected > ejected_before {
        let cap = (cap_share * members as f64 + 1e-9).floor() as usize;
        assert!(
            ejected <= cap,
            "{ejected} of {members} ejected, cap {cap_share}"
        );
    }
    let fleet = &balance.shared().fleet;
    let now = fleet.common.now();
    for e in fleet.load().endpoints.iter() {
        if e.core.ejected(now) {
            let until = e
                .core
                .ejected_until
                .load(crate::sync::atomic::Ordering::Relaxed);
            let left = Duration::from_nanos(until - now);
            assert!(left <= max, "ejected for {left:?}, cap {max:?}");
        }
    }
    for e in &stats {
        let mine = held.iter().filter(|h| h.key == e.key).count();
        if e.state != EndpointState::Draining {
            let draining: usize = stats
                .iter()
                .filter(|d| d.key == e.key && d.state == EndpointState::Draining)
                .map(|d| d.in_flight)
                .sum();
            assert_eq!(e.in_flight + draining, mine, "in flight on {}", e.key);
        }
    }
}
