//! Operation sequences driven synchronously against the real layer, for the `admission_ops`
//! fuzz target, its corpus replay and the priority property tests.
//!
//! [`run`] reads a [`Setup`] and a list of [`Op`]s from the fuzzer's bytes; [`check`] runs
//! them on a current-thread runtime with paused time, polling by hand, after each step, every
//! response future whose waker was called (so a lost wake-up leaves a request unanswered and
//! fails the run), and asserts after every step:
//!
//! - the layer never has more requests in flight than its limit (a lowered limit is reached
//!   as requests finish), and the backend never sees more than the layer counts;
//! - without reservations, no request starts while a request of a higher class that was
//!   already waiting still waits (strict priority);
//! - queues never exceed their bounds;
//!
//! and at the end, after finishing all work and letting time run: every request was answered
//! or cancelled (none lost), counts add up, and nothing is left in flight or queued.

use crate::classify::{Key, Ticket};
use crate::config::{AdmissionConfig, ClassConfig, CodelConfig, RateLimitConfig};
use crate::layer::AdmissionLayer;
use crate::service::Admission;
use arbitrary::{Arbitrary, Unstructured};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// The layer's shape for one run.
#[derive(Debug, Clone, Arbitrary)]
pub struct Setup {
    /// Classes, 1 to 6.
    pub classes: u8,
    /// The starting limit, 1 to 8.
    pub limit: u8,
    /// Per-class queue capacities, 0 to 4 (missing ones are 2).
    pub queue_capacity: Vec<u8>,
    /// The overall queue bound, 0 to 12.
    pub max_queued: u8,
    /// Reservations (missing ones are 0); off when `false`.
    pub reserve: bool,
    /// Per-class reservations, 0 to 2, scaled down to fit the limit.
    pub reserved: Vec<u8>,
    /// Adaptive LIFO on or off.
    pub lifo: bool,
    /// A per-key rate limit of this burst per second (0: none).
    pub rate_burst: u8,
    /// Headroom kept by the top class, 0 to 2, less than the limit.
    pub headroom: u8,
}

/// One step.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// A request arrives: its class (any number; past the last means the last), work in ms,
    /// optional deadline in ms from now, optional rate-limit key.
    Arrive {
        /// The prioritizer's output.
        class: u8,
        /// Milliseconds of work once started (it finishes when [`Op::Finish`] picks it).
        work_ms: u8,
        /// Deadline, in milliseconds from now.
        deadline_ms: Option<u8>,
        /// Rate-limit key.
        key: Option<u8>,
    },
    /// The backend finishes the n-th running request (modulo how many run).
    Finish(u8),
    /// The caller drops the n-th unanswered request (modulo how many there are).
    Cancel(u8),
    /// Time passes, in milliseconds.
    Advance(u8),
    /// The limit changes (0 counts as 1).
    SetLimit(u8),
}

#[derive(Debug)]
struct Req {
    id: u64,
    ticket: Ticket,
}

/// A started request: finished yet, and the task to wake when it finishes.
#[derive(Debug, Default)]
struct Entry {
    done: bool,
    waker: Option<Waker>,
}

impl Entry {
    fn finish(&mut self) {
        self.done = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug, Default)]
struct Backend {
    /// Requests started and not yet dropped.
    live: BTreeMap<u64, Entry>,
    started: Vec<u64>,
    /// The same ids, for lookups.
    started_set: BTreeSet<u64>,
}

#[derive(Debug, Clone, Default)]
struct Inner(Rc<RefCell<Backend>>);

struct InnerFuture {
    id: u64,
    backend: Rc<RefCell<Backend>>,
}

impl Future for InnerFuture {
    type Output = Result<u64, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut b = self.backend.borrow_mut();
        let entry = b.live.get_mut(&self.id).expect("a running request is live");
        if entry.done {
            Poll::Ready(Ok(self.id))
        } else {
            entry.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for InnerFuture {
    fn drop(&mut self) {
        self.backend.borrow_mut().live.remove(&self.id);
    }
}

impl Service<Req> for Inner {
    type Response = u64;
    type Error = BoxError;
    type Future = InnerFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> InnerFuture {
        let mut b = self.0.borrow_mut();
        b.live.insert(req.id, Entry::default());
        b.started.push(req.id);
        b.started_set.insert(req.id);
        InnerFuture {
            id: req.id,
            backend: self.0.clone(),
        }
    }
}

type Fut = crate::future::ResponseFuture<Inner, Req>;

struct Pending {
    id: u64,
    class: usize,
    fut: Pin<Box<Fut>>,
    /// Set by the future's waker; only woken futures are polled, so a lost wake-up leaves a
    /// request unanswered and fails the run.
    woken: Arc<Woken>,
    waker: Waker,
}

#[derive(Debug)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: the harness is single-threaded; the flag is read on the same thread.
        self.0.store(true, Ordering::Relaxed);
    }
}

fn config(setup: &Setup) -> AdmissionConfig {
    let n = usize::from(setup.classes % 6) + 1;
    let limit = usize::from(setup.limit % 8) + 1;
    let mut budget = limit;
    let mut classes: Vec<ClassConfig> = (0..n)
        .map(|i| {
            let mut c = ClassConfig::new(format!("c{i}"));
            c.queue_capacity = setup
                .queue_capacity
                .get(i)
                .map_or(2, |q| usize::from(q % 5));
            if setup.reserve {
                let r = setup
                    .reserved
                    .get(i)
                    .map_or(0, |r| usize::from(r % 3))
                    .min(budget);
                budget -= r;
                c.reserved = r;
            }
            c
        })
        .collect();
    if n > 1 {
        classes[0].headroom = usize::from(setup.headroom % 3).min(limit - 1);
    }
    AdmissionConfig {
        classes,
        limit,
        max_queued: usize::from(setup.max_queued % 13),
        codel: CodelConfig {
            adaptive_lifo: setup.lifo,
            ..CodelConfig::default()
        },
        rate_limit: (setup.rate_burst > 0)
            .then(|| RateLimitConfig::new(u32::from(setup.rate_burst), Duration::from_secs(1))),
        ..AdmissionConfig::default()
    }
}

/// Builds a setup and ops from fuzzer bytes and checks them. Never panics unless an invariant
/// breaks.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while ops.len() < 256 {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    check(&setup, &ops);
}

/// Runs `ops` against a layer shaped by `setup`, asserting the invariants in the
/// [module docs](self).
///
/// # Panics
///
/// When an invariant breaks.
pub fn check(setup: &Setup, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let _enter = rt.enter();
    let config = config(setup);
    let reservations = config.classes.iter().any(|c| c.reserved > 0);
    let caps: Vec<usize> = config.classes.iter().map(|c| c.queue_capacity).collect();
    let max_queued = config.max_queued;
    let lowest = config.classes.len() - 1;
    let layer = AdmissionLayer::new(config)
        .expect("fuzz configs are valid")
        .prioritize(|r: &Req| r.ticket);
    let handle = layer.handle();
    let backend = Inner::default();
    let mut svc: Admission<Inner, _> = layer.layer(backend.clone());
    let mut cx = Context::from_waker(Waker::noop());

    let mut waiting: Vec<Pending> = Vec::new();
    let (mut arrived, mut answered, mut cancelled) = (0u64, 0u64, 0u64);
    let mut cap = handle.limit();
    let mut class_of: BTreeMap<u64, usize> = BTreeMap::new();

    // Polls woken futures until none is left woken: polling one (a finishing request gives
    // its slot back) may grant or reject another that was already passed over.
    let poll_all = |waiting: &mut Vec<Pending>, answered: &mut u64| {
        loop {
            let mut polled = false;
            waiting.retain_mut(|p| {
                // Relaxed: see `Woken`.
                if !p.woken.0.swap(false, Ordering::Relaxed) {
                    return true;
                }
                polled = true;
                let mut cx = Context::from_waker(&p.waker);
                match p.fut.as_mut().poll(&mut cx) {
                    Poll::Ready(r) => {
                        if let Ok(id) = r {
                            assert_eq!(id, p.id, "answer for another request");
                        }
                        *answered += 1;
                        false
                    }
                    Poll::Pending => true,
                }
            });
            if !polled {
                break;
            }
        }
    };

    for op in ops {
        let started_before = backend.0.borrow().started.len();
        // Requests waiting for capacity before this step: (id, class).
        let queued_before: Vec<(u64, usize)> = {
            let b = backend.0.borrow();
            waiting
                .iter()
                .filter(|p| !b.started_set.contains(&p.id))
                .map(|p| (p.id, p.class))
                .collect()
        };
        match op {
            Op::Arrive {
                class,
                work_ms: _,
                deadline_ms,
                key,
            } => {
                let id = arrived;
                arrived += 1;
                let mut ticket = Ticket::new(usize::from(*class));
                if let Some(ms) = deadline_ms {
                    ticket.deadline = Some(Instant::now() + Duration::from_millis(u64::from(*ms)));
                }
                ticket.key = key.map(|k| Key(u64::from(k)));
                assert!(svc.poll_ready(&mut cx).is_ready());
                class_of.insert(id, usize::from(*class).min(lowest));
                let fut = Box::pin(svc.call(Req { id, ticket }));
                let woken = Arc::new(Woken(AtomicBool::new(true)));
                let waker = Waker::from(woken.clone());
                waiting.push(Pending {
                    id,
                    class: usize::from(*class).min(lowest),
                    fut,
                    woken,
                    waker,
                });
            }
            Op::Finish(n) => {
                let mut b = backend.0.borrow_mut();
                let running: Vec<u64> = b
                    .live
                    .iter()
                    .filter(|(_, e)| !e.done)
                    .map(|(id, _)| *id)
                    .collect();
                if !running.is_empty() {
                    let id = running[usize::from(*n) % running.len()];
                    b.live.get_mut(&id).expect("listed above").finish();
                }
            }
            Op::Cancel(n) => {
                if !waiting.is_empty() {
                    let i = usize::from(*n) % waiting.len();
                    drop(waiting.remove(i));
                    cancelled += 1;
                }
            }
            Op::Advance(ms) => {
                rt.block_on(tokio::time::advance(Duration::from_millis(u64::from(*ms))))
            }
            Op::SetLimit(n) => {
                handle.set_limit(usize::from(*n));
                cap = cap
                    .max(handle.limit())
                    .min(handle.limit().max(handle.in_flight()));
            }
        }
        poll_all(&mut waiting, &mut answered);

        // Capacity.
        let in_flight = handle.in_flight();
        assert!(in_flight <= cap, "{in_flight} in flight, allowed {cap}");
        cap = handle.limit().max(in_flight);
        let at_backend = backend.0.borrow().live.len();
        assert!(
            at_backend <= in_flight,
            "backend runs {at_backend}, layer counts {in_flight}"
        );

        // Strict priority.
        if !reservations {
            let b = backend.0.borrow();
            let still_waiting: BTreeSet<u64> = waiting.iter().map(|p| p.id).collect();
            let still_queued: Vec<usize> = queued_before
                .iter()
                .filter(|(id, _)| still_waiting.contains(id) && !b.started_set.contains(id))
                .map(|(_, c)| *c)
                .collect();
            for id in &b.started[started_before..] {
                let c = class_of[id];
                assert!(
                    still_queued.iter().all(|w| *w >= c),
                    "request {id} of class {c} started while class {still_queued:?} waited"
                );
            }
        }

        // Bounded queues.
        let (queued, per_class) = handle.queued();
        assert!(queued <= max_queued, "{queued} queued, bound {max_queued}");
        for (c, q) in per_class.iter().enumerate() {
            assert!(*q <= caps[c], "class {c} queues {q} > {}", caps[c]);
        }
    }

    // Drain: finish everything, let time pass, until every request is answered.
    for _ in 0..1000 {
        if waiting.is_empty() {
            break;
        }
        for e in backend.0.borrow_mut().live.values_mut() {
            e.finish();
        }
        poll_all(&mut waiting, &mut answered);
        rt.block_on(tokio::time::advance(Duration::from_millis(50)));
        poll_all(&mut waiting, &mut answered);
    }
    assert!(
        waiting.is_empty(),
        "{} requests never answered",
        waiting.len()
    );
    assert_eq!(answered + cancelled, arrived, "a request was lost");
    let snap = handle.snapshot();
    assert_eq!(snap.in_flight, 0, "capacity leaked");
    assert_eq!(snap.queued, 0);
    let settled: u64 = snap
        .classes
        .iter()
        .map(|c| c.admitted + c.rejected_total())
        .sum();
    assert!(
        settled <= arrived && settled + cancelled >= arrived,
        "{settled} settled of {arrived}"
    );
    assert!(backend.0.borrow().live.is_empty());
}
