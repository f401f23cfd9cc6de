//! Behaviour on paused time with a recording backend: priority order, bounded queues, shedding,
//! reservations, CoDel, deadlines, rate limits, throttling, snapshots.

mod common;

use common::{Job, build, send, settle};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{Instant, advance};
use tollgate_admission::{
    AdmissionConfig, AdmissionLayer, Capacity, ClassConfig, CodelConfig, RateLimitConfig, Reason,
    Rejected, ThrottleConfig, Ticket,
};
use tollgate_core::error::{DeadlineExceeded, Overloaded, RateLimited, is_caused_by};
use tollgate_core::{BoxError, Outcome};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

const HOUR: Duration = Duration::from_secs(3600);

fn config(limit: usize) -> AdmissionConfig {
    AdmissionConfig {
        limit,
        ..AdmissionConfig::default()
    }
}

fn reason(r: Result<u64, BoxError>) -> Reason {
    r.expect_err("expected a rejection")
        .downcast_ref::<Rejected>()
        .expect("a Rejected")
        .reason()
}

async fn join(h: tokio::task::JoinHandle<Result<u64, BoxError>>) -> Result<u64, BoxError> {
    tokio::time::timeout(HOUR, h)
        .await
        .expect("answered within a virtual hour")
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_highest_waiting_class_goes_first() {
    let (svc, handle, log) = build(config(1));
    let first = send(&svc, Job::new(3, 10, 0)).await;
    let low = send(&svc, Job::new(3, 10, 1)).await;
    let mid = send(&svc, Job::new(2, 10, 2)).await;
    let high = send(&svc, Job::new(0, 10, 3)).await;
    let high2 = send(&svc, Job::new(0, 10, 4)).await;
    assert_eq!(handle.snapshot().queued, 4);
    for h in [first, low, mid, high, high2] {
        join(h).await.unwrap();
    }
    // FIFO within a class, highest class first.
    assert_eq!(log.started(), vec![0, 3, 4, 2, 1]);
    let snap = handle.snapshot();
    assert_eq!(snap.in_flight, 0);
    assert_eq!(snap.queued, 0);
    assert_eq!(snap.classes.iter().map(|c| c.admitted).sum::<u64>(), 5);
    assert_eq!(snap.class("sheddable").unwrap().admitted, 2);
    // The sheddable request waited 40 ms; the first went straight in.
    let w = snap.class("sheddable").unwrap().queue_wait;
    assert!(
        w.max >= Duration::from_millis(39) && w.max <= Duration::from_millis(41),
        "{w:?}"
    );
    assert_eq!(w.p50, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once() {
    let mut c = config(1);
    c.classes[1].queue_capacity = 1;
    let (svc, handle, _log) = build(c);
    let busy = send(&svc, Job::new(0, 10, 0)).await;
    let waiting = send(&svc, Job::new(1, 10, 1)).await;
    let start = Instant::now();
    let rejected = send(&svc, Job::new(1, 10, 2)).await;
    let err = join(rejected).await.unwrap_err();
    assert_eq!(Instant::now(), start, "rejected without waiting");
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(
        (r.reason(), r.class(), r.class_name()),
        (Reason::QueueFull, 1, "critical")
    );
    assert!(r.retry_after().is_some());
    assert!(is_caused_by::<Overloaded>(&*err));
    join(busy).await.unwrap();
    join(waiting).await.unwrap();
    assert_eq!(
        handle
            .snapshot()
            .class("critical")
            .unwrap()
            .rejected(Reason::QueueFull),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_lowest_class_is_shed_first_at_the_overall_bound() {
    let mut c = config(1);
    c.max_queued = 2;
    let (svc, handle, _log) = build(c);
    let busy = send(&svc, Job::new(0, 10, 0)).await;
    let low = send(&svc, Job::new(3, 10, 1)).await;
    let mid = send(&svc, Job::new(2, 10, 2)).await;
    // The queue is full: a high request sheds the sheddable one, then the sheddable_plus one.
    let high = send(&svc, Job::new(0, 10, 3)).await;
    assert_eq!(reason(join(low).await), Reason::Shed);
    let high2 = send(&svc, Job::new(1, 10, 4)).await;
    assert_eq!(reason(join(mid).await), Reason::Shed);
    // Nobody below the lowest waiting class: a low request is turned away.
    let low2 = send(&svc, Job::new(3, 10, 5)).await;
    assert_eq!(reason(join(low2).await), Reason::QueueFull);
    for h in [busy, high, high2] {
        join(h).await.unwrap();
    }
    let snap = handle.snapshot();
    assert_eq!(snap.class("sheddable").unwrap().rejected(Reason::Shed), 1);
    assert_eq!(
        snap.class("sheddable_plus").unwrap().rejected(Reason::Shed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn reserved_capacity_is_kept_for_its_class_and_lent_while_idle() {
    let mut c = config(2);
    c.classes[3].reserved = 1;
    let (svc, handle, log) = build(c);
    // The sheddable class is idle: the top class borrows its slot.
    let a = send(&svc, Job::new(0, 10, 0)).await;
    let b = send(&svc, Job::new(0, 10, 1)).await;
    assert_eq!(handle.in_flight(), 2);
    // Both classes wait; the first freed slot goes to the class owed its reservation.
    let high = send(&svc, Job::new(0, 10, 2)).await;
    let low = send(&svc, Job::new(3, 10, 3)).await;
    let high2 = send(&svc, Job::new(0, 10, 4)).await;
    for h in [a, b, high, low, high2] {
        join(h).await.unwrap();
    }
    let started = log.started();
    assert_eq!(
        &started[..3],
        &[0, 1, 3],
        "the reserved class went first: {started:?}"
    );
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_standing_queue_serves_newest_first_within_the_target() {
    // One slot, 1 ms of work, a request every 0.5 ms: a 2x overload for 300 ms.
    let (svc, handle, log) = build(config(1));
    let mut tasks = Vec::new();
    for i in 0..600u64 {
        tasks.push(send(&svc, Job::new(2, 1, i)).await);
        advance(Duration::from_micros(500)).await;
    }
    let mut served = 0;
    let mut timed_out = 0;
    for t in tasks {
        match join(t).await {
            Ok(_) => served += 1,
            Err(e) => {
                assert_eq!(
                    e.downcast_ref::<Rejected>().unwrap().reason(),
                    Reason::QueueTimeout
                );
                timed_out += 1;
            }
        }
    }
    // About one request per ms was served while requests came (the slot never idled), and
    // after they stopped, the queue drained what had waited less than the interval.
    assert!(
        (295..=400).contains(&served),
        "{served} served, {timed_out} timed out"
    );
    let snap = handle.snapshot();
    let c = snap.class("sheddable_plus").unwrap();
    // The queue stood after 100 ms; then waits stayed near the 5 ms target.
    assert!(
        c.queue_wait.max <= Duration::from_millis(101),
        "{:?}",
        c.queue_wait
    );
    assert!(
        c.queue_wait.p50 <= Duration::from_millis(5),
        "{:?}",
        c.queue_wait
    );
    // Late in the run, newer requests were served before older ones (LIFO).
    let started = log.started();
    let tail = &started[started.len() - 50..];
    assert!(
        tail.windows(2).any(|w| w[1] < w[0]),
        "no LIFO order in {tail:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fifo_queues_give_up_after_the_interval() {
    let mut c = config(1);
    c.codel = CodelConfig {
        adaptive_lifo: false,
        ..CodelConfig::default()
    };
    let (svc, _handle, _log) = build(c);
    let busy = send(&svc, Job::new(0, 1000, 0)).await;
    let waiting = send(&svc, Job::new(1, 1, 1)).await;
    let start = Instant::now();
    assert_eq!(reason(join(waiting).await), Reason::QueueTimeout);
    assert_eq!(Instant::now() - start, Duration::from_millis(100));
    join(busy).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn deadlines_that_cannot_be_met_are_rejected_before_taking_capacity() {
    let (svc, handle, log) = build(config(1));
    // Teach the layer the service time: requests with deadlines are measured.
    let far = Instant::now() + HOUR;
    let mut job = Job::new(0, 20, 0);
    job.ticket = Ticket::new(0).with_deadline(far);
    join(send(&svc, job).await).await.unwrap();

    // 10 ms left, 20 ms of work: rejected at once, never sent.
    let mut job = Job::new(0, 20, 1);
    job.ticket = Ticket::new(0).with_deadline(Instant::now() + Duration::from_millis(10));
    let err = join(send(&svc, job).await).await.unwrap_err();
    assert!(is_caused_by::<DeadlineExceeded>(&*err));
    assert_eq!(err.downcast_ref::<Rejected>().unwrap().retry_after(), None);
    assert_eq!(log.started(), vec![0]);

    // A queued request leaves the queue once its deadline can no longer be met.
    let busy = send(&svc, Job::new(0, 50, 2)).await;
    let mut job = Job::new(0, 20, 3);
    job.ticket = Ticket::new(0).with_deadline(Instant::now() + Duration::from_millis(30));
    let start = Instant::now();
    let queued = send(&svc, job).await;
    assert_eq!(reason(join(queued).await), Reason::Deadline);
    assert_eq!(Instant::now() - start, Duration::from_millis(10));
    join(busy).await.unwrap();
    assert_eq!(
        handle
            .snapshot()
            .class("critical_plus")
            .unwrap()
            .rejected(Reason::Deadline),
        2
    );
    assert_eq!(log.started(), vec![0, 2]);
}

#[tokio::test(start_paused = true)]
async fn keys_are_rate_limited_and_their_number_bounded() {
    let mut c = config(64);
    c.rate_limit = Some(RateLimitConfig {
        max_keys: 32,
        ..RateLimitConfig::new(2, Duration::from_secs(1))
    });
    let (svc, handle, _log) = build(c);
    let keyed = |key: &str, id| {
        let mut j = Job::new(1, 0, id);
        j.ticket = Ticket::new(1).with_key(key);
        j
    };
    join(send(&svc, keyed("acme", 0)).await).await.unwrap();
    join(send(&svc, keyed("acme", 1)).await).await.unwrap();
    let err = join(send(&svc, keyed("acme", 2)).await).await.unwrap_err();
    assert!(is_caused_by::<RateLimited>(&*err));
    let wait = err
        .downcast_ref::<Rejected>()
        .unwrap()
        .retry_after()
        .unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    join(send(&svc, keyed("globex", 3)).await).await.unwrap();
    advance(wait).await;
    join(send(&svc, keyed("acme", 4)).await).await.unwrap();

    // Many distinct keys: memory stays bounded.
    for i in 0..2000 {
        join(send(&svc, keyed(&format!("tenant-{i}"), 10 + i)).await)
            .await
            .unwrap();
    }
    assert!(
        handle.snapshot().rate_limit_keys <= 32,
        "{}",
        handle.snapshot().rate_limit_keys
    );
    advance(Duration::from_secs(2)).await;
    handle.forget_idle_keys();
    assert_eq!(handle.snapshot().rate_limit_keys, 0);
    assert_eq!(
        handle
            .snapshot()
            .class("critical")
            .unwrap()
            .rejected(Reason::RateLimited),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn client_side_throttling_backs_off_from_a_rejecting_backend() {
    let c = AdmissionConfig {
        throttle: Some(ThrottleConfig {
            seed: 42,
            ..ThrottleConfig::default()
        }),
        ..config(64)
    };
    let layer = AdmissionLayer::new(c).unwrap();
    let handle = layer.handle();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    // The backend rejects everything as overloaded.
    let backend = tower::service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Err::<u32, BoxError>(Box::new(Overloaded::new(None))) }
    });
    let mut svc = layer.layer(backend);
    let mut throttled = 0;
    for _ in 0..1000 {
        let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
        if err
            .downcast_ref::<Rejected>()
            .is_some_and(|r| r.reason() == Reason::Throttled)
        {
            throttled += 1;
        }
    }
    assert!(throttled > 900, "{throttled} throttled");
    assert_eq!(sent.load(Ordering::Relaxed) + throttled, 1000);
    assert_eq!(
        handle.snapshot().classes[0].rejected(Reason::Throttled),
        throttled as u64
    );
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_admits_waiters_at_once() {
    let (svc, handle, log) = build(config(1));
    let a = send(&svc, Job::new(0, 100, 0)).await;
    let b = send(&svc, Job::new(0, 100, 1)).await;
    assert_eq!(log.started(), vec![0]);
    assert!(handle.set_limit(2));
    settle().await;
    assert_eq!(log.started(), vec![0, 1]);
    assert_eq!(handle.limit(), 2);
    join(a).await.unwrap();
    join(b).await.unwrap();
}

#[derive(Debug, Default)]
struct Adaptive {
    limit: AtomicUsize,
    releases: AtomicUsize,
    measured: AtomicUsize,
}

impl Capacity for Adaptive {
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
    fn wants_latency(&self) -> bool {
        true
    }
    fn on_release(&self, _: tollgate_admission::Slot, latency: Option<Duration>, outcome: Outcome) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        if latency == Some(Duration::from_millis(10)) && outcome == Outcome::Success {
            self.measured.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_capacity_sets_the_limit_and_learns_latencies() {
    let cap = Arc::new(Adaptive {
        limit: AtomicUsize::new(1),
        ..Default::default()
    });
    let layer = AdmissionLayer::with_capacity(config(1), cap.clone()).unwrap();
    let handle = layer.handle();
    let log = common::Log::default();
    let svc = layer
        .prioritize((|j: &Job| j.ticket) as fn(&Job) -> Ticket)
        .layer(common::backend(log.clone()));
    let a = send(&svc, Job::new(0, 10, 0)).await;
    let b = send(&svc, Job::new(0, 10, 1)).await;
    assert_eq!(handle.in_flight(), 1);
    assert!(
        !handle.set_limit(5),
        "a dynamic limit is not set through the handle"
    );
    cap.limit.store(2, Ordering::Relaxed);
    handle.capacity_changed();
    settle().await;
    assert_eq!(handle.in_flight(), 2);
    join(a).await.unwrap();
    join(b).await.unwrap();
    assert_eq!(cap.releases.load(Ordering::Relaxed), 2);
    assert_eq!(cap.measured.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn dropped_waiters_leave_the_queue() {
    let (svc, handle, log) = build(config(1));
    let busy = send(&svc, Job::new(0, 10, 0)).await;
    let gone = send(&svc, Job::new(0, 10, 1)).await;
    let kept = send(&svc, Job::new(1, 10, 2)).await;
    assert_eq!(handle.snapshot().queued, 2);
    gone.abort();
    settle().await;
    assert_eq!(handle.snapshot().queued, 1);
    join(busy).await.unwrap();
    join(kept).await.unwrap();
    assert_eq!(log.started(), vec![0, 2]);
    assert_eq!(handle.in_flight(), 0);
}

#[test]
fn bad_configs_are_rejected_when_the_layer_is_built() {
    let mut c = AdmissionConfig::default();
    c.classes.push(ClassConfig::new("sheddable"));
    assert_eq!(AdmissionLayer::new(c).unwrap_err().field(), "classes.name");
}

#[tokio::test(start_paused = true)]
async fn always_ready_mode_admits_in_the_response_future() {
    let config = AdmissionConfig {
        ready_mode: tollgate_admission::ReadyMode::Always,
        ..config(1)
    };
    let (mut svc, handle, log) = build(config);
    // No `poll_ready` at all, as a server that treats services as always ready.
    let a = tokio::spawn(svc.call(Job::new(3, 10, 0)));
    let b = tokio::spawn(svc.call(Job::new(3, 10, 1)));
    let c = tokio::spawn(svc.call(Job::new(0, 10, 2)));
    settle().await;
    assert_eq!((handle.in_flight(), handle.snapshot().queued), (1, 2));
    for h in [a, b, c] {
        join(h).await.unwrap();
    }
    assert_eq!(log.started(), vec![0, 2, 1]);
    assert_eq!(handle.in_flight(), 0);
}
