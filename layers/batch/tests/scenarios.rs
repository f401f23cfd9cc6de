//! The scenarios, deterministic under paused time.

mod common;

use common::{BAD, PANIC, PANIC_IN_CALL, Recorder, bounded};
use futures_util::future::{BoxFuture, join_all};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_batch::{BatchConfig, BatchLayer, Batcher, Overflow, QueueFull};
use tollgate_core::error::{Panicked, is_caused_by};
use tower::{Layer, ServiceExt, service_fn};

const MAX_ITEMS: usize = 64;
const LINGER: Duration = Duration::from_millis(100);
/// One batch call takes this long, whatever its size.
const EXEC: Duration = Duration::from_millis(32);
const IN_FLIGHT: usize = 2;
/// Requests per millisecond the backend can take: 64 items x 2 in flight / 32 ms.
const CAPACITY_PER_MS: f64 = (MAX_ITEMS * IN_FLIGHT) as f64 / 32.0;

fn config() -> BatchConfig {
    BatchConfig {
        max_items: MAX_ITEMS,
        max_linger: LINGER,
        max_in_flight: IN_FLIGHT,
        queue_capacity: 4096,
        ..BatchConfig::default()
    }
}

struct Outcome {
    /// Per request: (submitted, answered).
    times: HashMap<u64, (Instant, Instant)>,
    rejected: usize,
    max_depth: usize,
}

/// Sends requests at `per_ms` a millisecond for `millis`, each from its own task, and waits
/// for every answer. Samples the queue depth every millisecond.
async fn drive(svc: Batcher<u64, u64>, per_ms: f64, millis: u64) -> Outcome {
    let times = Arc::new(Mutex::new(HashMap::new()));
    let rejected = Arc::new(Mutex::new(0usize));
    let handle = svc.handle();
    let mut tasks = Vec::new();
    let mut owed = 0.0;
    let mut next_id = 0u64;
    let mut max_depth = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..millis {
        tick.tick().await;
        max_depth = max_depth.max(handle.snapshot().queue_depth);
        owed += per_ms;
        while owed >= 1.0 {
            owed -= 1.0;
            let id = next_id;
            next_id += 1;
            let (svc, times, rejected) = (svc.clone(), times.clone(), rejected.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                match svc.oneshot(id).await {
                    Ok(v) => {
                        assert_eq!(v, id * 10);
                        times.lock().unwrap().insert(id, (sent, Instant::now()));
                    }
                    Err(e) if e.is::<QueueFull>() => *rejected.lock().unwrap() += 1,
                    Err(e) => panic!("request {id} failed: {e}"),
                }
            }));
        }
    }
    for t in tasks {
        bounded(t).await.unwrap();
    }
    let times = times.lock().unwrap().clone();
    let rejected = *rejected.lock().unwrap();
    Outcome {
        times,
        rejected,
        max_depth,
    }
}

async fn load_at(fraction: f64) {
    let rec = Recorder::new(EXEC);
    let svc = BatchLayer::new(config()).unwrap().layer(rec.clone());
    let handle = svc.handle();
    let out = drive(svc, CAPACITY_PER_MS * fraction, 2000).await;
    let sent = rec.sent_at();
    assert_eq!(out.rejected, 0);
    let mut worst_wait = Duration::ZERO;
    for (id, (submitted, answered)) in &out.times {
        let wait = sent[id] - *submitted;
        worst_wait = worst_wait.max(wait);
        assert!(
            wait <= LINGER + EXEC,
            "at {fraction}: request {id} waited {wait:?}"
        );
        assert!(*answered - *submitted <= LINGER + EXEC + EXEC);
    }
    let snap = handle.snapshot();
    assert!(snap.max_batch_size <= MAX_ITEMS);
    assert_eq!(snap.callers as usize, out.times.len());
    eprintln!(
        "load {fraction}: {} requests in {} batches (mean {:.1}), worst wait {worst_wait:?}, flushes {:?}",
        out.times.len(),
        snap.batches,
        snap.mean_batch_size(),
        snap.flushes
    );
}

#[tokio::test(start_paused = true)]
async fn at_10_percent_no_request_waits_past_linger_plus_one_batch() {
    load_at(0.1).await;
}

#[tokio::test(start_paused = true)]
async fn at_50_percent_no_request_waits_past_linger_plus_one_batch() {
    load_at(0.5).await;
}

#[tokio::test(start_paused = true)]
async fn at_100_percent_no_request_waits_past_linger_plus_one_batch() {
    load_at(1.0).await;
}

#[tokio::test(start_paused = true)]
async fn one_bad_item_in_64_fails_alone() {
    let rec = Recorder::new(EXEC);
    let svc = BatchLayer::new(config()).unwrap().layer(rec.clone());
    let ids: Vec<u64> = (0..63).chain([BAD]).collect();
    let answers = bounded(join_all(ids.iter().map(|&id| svc.clone().oneshot(id)))).await;
    assert_eq!(rec.calls().len(), 1, "one batch of 64");
    assert_eq!(rec.calls()[0].ids.len(), 64);
    for (id, answer) in ids.iter().zip(answers) {
        match answer {
            Ok(v) => assert_eq!(v, id * 10),
            Err(e) => {
                assert_eq!(*id, BAD);
                assert!(e.is::<common::Bad>(), "{e}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_loads_of_100_keys_fold_into_one_call() {
    let calls = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let seen = calls.clone();
    // A DataLoader-style backend answering by key.
    let backend = service_fn(move |keys: Vec<u32>| {
        seen.lock().unwrap().push(keys.clone());
        async move {
            tokio::time::sleep(EXEC).await;
            Ok::<_, Infallible>(
                keys.into_iter()
                    .map(|k| (k, Ok::<_, Infallible>(format!("user-{k}"))))
                    .collect::<HashMap<_, _>>(),
            )
        }
    });
    // With folding `max_items` counts distinct keys: 100 of them fit one batch of 128.
    let cfg = BatchConfig {
        max_items: 128,
        queue_capacity: 1024,
        ..config()
    };
    let svc = BatchLayer::new(cfg).unwrap().with_folding().layer(backend);
    let answers = bounded(join_all((0..1000u32).map(|i| svc.clone().oneshot(i % 100)))).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), format!("user-{}", i % 100));
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "{} batch calls", calls.len());
    assert_eq!(calls[0].len(), 100);
    let snap = svc.handle().snapshot();
    assert_eq!((snap.items, snap.callers), (100, 1000));
}

#[tokio::test(start_paused = true)]
async fn overload_at_twice_the_throughput_rejects_and_keeps_the_queue_at_its_cap() {
    const CAP: usize = 256;
    let rec = Recorder::new(EXEC);
    let cfg = BatchConfig {
        queue_capacity: CAP,
        overflow: Overflow::Reject,
        ..config()
    };
    let svc = BatchLayer::new(cfg).unwrap().layer(rec.clone());
    let handle = svc.handle();
    let out = drive(svc, CAPACITY_PER_MS * 2.0, 2000).await;
    let snap = handle.snapshot();
    assert!(out.rejected > 0);
    assert_eq!(snap.rejected as usize, out.rejected);
    assert!(out.max_depth <= CAP, "depth {} over the cap", out.max_depth);
    assert!(
        out.max_depth >= CAP - 2 * CAPACITY_PER_MS as usize,
        "depth {} never near the cap",
        out.max_depth
    );
    // An accepted request waits at most for the queue ahead of it to drain, plus a batch.
    let drain = Duration::from_secs_f64(CAP as f64 / CAPACITY_PER_MS / 1000.0);
    let bound = drain + LINGER + EXEC + EXEC;
    for (id, (submitted, answered)) in &out.times {
        assert!(
            *answered - *submitted <= bound,
            "request {id} took {:?}",
            *answered - *submitted
        );
    }
    // The backend ran at full batches while overloaded.
    assert!(snap.mean_batch_size() > 0.9 * MAX_ITEMS as f64, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn overload_with_backpressure_holds_callers_and_the_queue_at_its_cap() {
    const CAP: usize = 256;
    let rec = Recorder::new(EXEC);
    let cfg = BatchConfig {
        queue_capacity: CAP,
        overflow: Overflow::Wait,
        ..config()
    };
    let svc = BatchLayer::new(cfg).unwrap().layer(rec.clone());
    let handle = svc.handle();
    let out = drive(svc, CAPACITY_PER_MS * 2.0, 500).await;
    assert_eq!(out.rejected, 0);
    assert!(out.max_depth <= CAP, "depth {} over the cap", out.max_depth);
    assert!(out.max_depth >= CAP - 2 * CAPACITY_PER_MS as usize);
    assert_eq!(handle.snapshot().queue_depth, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_batch_fails_its_callers_and_the_next_batch_succeeds() {
    let rec = Recorder::new(EXEC);
    let svc = BatchLayer::new(config()).unwrap().layer(rec.clone());
    for poison in [PANIC, PANIC_IN_CALL] {
        let ids: Vec<u64> = (0..9).chain([poison]).collect();
        let answers = bounded(join_all(ids.iter().map(|&id| svc.clone().oneshot(id)))).await;
        for a in answers {
            let e = a.unwrap_err();
            assert!(is_caused_by::<Panicked>(&*e), "{e}");
        }
        let answers = bounded(join_all((100..110u64).map(|id| svc.clone().oneshot(id)))).await;
        for (id, a) in (100..110u64).zip(answers) {
            assert_eq!(a.unwrap(), id * 10);
        }
    }
    assert_eq!(svc.handle().snapshot().panicked_batches, 2);
}

/// A batch service whose `poll_ready` panics once.
#[derive(Clone)]
struct PanicsWhenPolled(Arc<Mutex<bool>>);

impl tower::Service<Vec<u64>> for PanicsWhenPolled {
    type Response = Vec<Result<u64, Infallible>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        let mut armed = self.0.lock().unwrap();
        if std::mem::take(&mut *armed) {
            drop(armed);
            panic!("poll_ready panics");
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ids: Vec<u64>) -> Self::Future {
        Box::pin(async move { Ok(ids.into_iter().map(Ok).collect()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_poll_ready_fails_one_batch_only() {
    let svc = BatchLayer::new(config())
        .unwrap()
        .layer(PanicsWhenPolled(Arc::new(Mutex::new(true))));
    let err = bounded(svc.clone().oneshot(1)).await.unwrap_err();
    assert!(err.is::<Panicked>(), "{err}");
    assert_eq!(bounded(svc.clone().oneshot(2)).await.unwrap(), 2);
}
