//! Behaviour of the batch layer, one property per test (paused time).

mod common;

use common::{BAD, FAIL_BATCH, Recorder, SHORT, bounded};
use futures_util::future::join_all;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_batch::{
    BatchConfig, BatchFailed, BatchLayer, Batcher, FlushReason, MissingResult, Overflow, QueueFull,
};
use tollgate_core::error::{Closed, DeadlineExceeded, is_caused_by};
use tower::{Layer, Service, ServiceExt};

fn config(max_items: usize, linger_ms: u64) -> BatchConfig {
    BatchConfig {
        max_items,
        max_linger: Duration::from_millis(linger_ms),
        ..BatchConfig::default()
    }
}

fn build(config: BatchConfig, exec_ms: u64) -> (Batcher<u64, u64>, Recorder) {
    let rec = Recorder::new(Duration::from_millis(exec_ms));
    let svc = BatchLayer::new(config).unwrap().layer(rec.clone());
    (svc, rec)
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_goes_at_once() {
    let (svc, rec) = build(config(64, 100), 5);
    let start = Instant::now();
    assert_eq!(bounded(svc.clone().oneshot(4)).await.unwrap(), 40);
    assert_eq!(rec.calls()[0].at, start, "a lone request lingered");
    assert_eq!(svc.handle().snapshot().flushes.idle, 1);
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_one_batch_and_results_match() {
    let (svc, rec) = build(config(64, 100), 5);
    let answers = bounded(join_all((0..50u64).map(|i| svc.clone().oneshot(i)))).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), i as u64 * 10);
    }
    assert_eq!(rec.calls().len(), 1);
    let snap = svc.handle().snapshot();
    assert_eq!((snap.batches, snap.items, snap.max_batch_size), (1, 50, 50));
}

#[tokio::test(start_paused = true)]
async fn max_items_cuts_batches() {
    let mut cfg = config(8, 100);
    cfg.max_in_flight = 8;
    let (svc, rec) = build(cfg, 5);
    let answers = bounded(join_all((0..20u64).map(|i| svc.clone().oneshot(i)))).await;
    assert!(answers.iter().all(Result::is_ok));
    let sizes: Vec<usize> = rec.calls().iter().map(|c| c.ids.len()).collect();
    assert_eq!(sizes, vec![8, 8, 4]);
}

#[tokio::test(start_paused = true)]
async fn lingers_while_busy_then_flushes_on_linger() {
    let (svc, rec) = build(config(64, 100), 1000);
    // The first request goes at once; the backend is then busy for a second.
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t0 = Instant::now();
    let second = tokio::spawn(svc.clone().oneshot(2));
    bounded(second).await.unwrap().unwrap();
    let calls = rec.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].at - t0,
        Duration::from_millis(100),
        "the second batch waits out the linger"
    );
    assert_eq!(svc.handle().snapshot().flushes.linger, 1);
    bounded(first).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_fails_only_the_uncovered() {
    let (svc, _) = build(config(64, 100), 1);
    let answers = bounded(join_all([1, SHORT, 3].map(|i| svc.clone().oneshot(i)))).await;
    assert_eq!(*answers[0].as_ref().unwrap(), 10);
    assert!(answers[1].as_ref().unwrap_err().is::<MissingResult>());
    assert!(answers[2].as_ref().unwrap_err().is::<MissingResult>());
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_fails_every_item_and_the_next_works() {
    let (svc, _) = build(config(64, 100), 1);
    let answers = bounded(join_all(
        [1, FAIL_BATCH, BAD].map(|i| svc.clone().oneshot(i)),
    ))
    .await;
    for a in &answers {
        let err = a.as_ref().unwrap_err();
        assert!(err.is::<BatchFailed>(), "{err}");
        assert!(is_caused_by::<common::Bad>(&**err));
    }
    assert_eq!(bounded(svc.clone().oneshot(2)).await.unwrap(), 20);
    assert_eq!(svc.handle().snapshot().failed_batches, 1);
}

#[tokio::test(start_paused = true)]
async fn max_weight_cuts_batches() {
    let mut cfg = config(64, 100);
    cfg.max_weight = Some(10);
    cfg.max_in_flight = 8;
    let rec = Recorder::new(Duration::from_millis(1));
    let svc = BatchLayer::new(cfg)
        .unwrap()
        .with_weigher(|id: &u64| *id)
        .layer(rec.clone());
    let answers = bounded(join_all(
        [4u64, 4, 4, 4, 20, 1].map(|i| svc.clone().oneshot(i)),
    ))
    .await;
    assert!(answers.iter().all(Result::is_ok));
    let batches: Vec<Vec<u64>> = rec.calls().into_iter().map(|c| c.ids).collect();
    assert_eq!(batches, vec![vec![4, 4], vec![4, 4], vec![20], vec![1]]);
    assert!(svc.handle().snapshot().flushes.get(FlushReason::Weight) >= 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_triggers_an_early_flush() {
    let rec = Recorder::new(Duration::from_millis(10));
    let base = Instant::now();
    let svc = BatchLayer::new(config(64, 100))
        .unwrap()
        .with_deadline(move |id: &u64| (*id > 0).then(|| base + Duration::from_millis(*id)))
        .layer(rec.clone());
    // Teach the layer the batch call time and keep it busy.
    bounded(svc.clone().oneshot(0)).await.unwrap();
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let t0 = Instant::now();
    let due = tokio::spawn(svc.clone().oneshot(60));
    assert_eq!(bounded(due).await.unwrap().unwrap(), 600);
    let sent = rec.sent_at()[&60];
    assert!(
        sent - t0 < Duration::from_millis(60),
        "sent after {:?}",
        sent - t0
    );
    bounded(busy).await.unwrap().unwrap();
    let snap = svc.handle().snapshot();
    assert!(snap.flushes.deadline + snap.flushes.idle >= 1, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn passed_deadlines_fail_before_sending() {
    let rec = Recorder::new(Duration::from_millis(200));
    let base = Instant::now();
    let mut cfg = config(64, 100);
    cfg.max_in_flight = 1;
    let svc = BatchLayer::new(cfg)
        .unwrap()
        .with_deadline(move |id: &u64| (*id > 0).then(|| base + Duration::from_millis(*id)))
        .layer(rec.clone());
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    // Due in 50 ms, but the only in-flight place frees at 200 ms.
    let err = bounded(svc.clone().oneshot(50)).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(svc.handle().snapshot().expired, 1);
    bounded(busy).await.unwrap().unwrap();
    assert!(rec.calls().iter().all(|c| !c.ids.contains(&50)));
}

#[tokio::test(start_paused = true)]
async fn a_caller_gone_before_the_flush_is_left_out() {
    let (svc, rec) = build(config(64, 100), 1000);
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let mut gone = svc.clone();
    bounded(gone.ready()).await.unwrap();
    drop(gone.call(5));
    let kept = tokio::spawn(svc.clone().oneshot(6));
    assert_eq!(bounded(kept).await.unwrap().unwrap(), 60);
    assert!(rec.calls().iter().all(|c| !c.ids.contains(&5)));
    assert_eq!(svc.handle().snapshot().abandoned, 1);
    bounded(busy).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn keys_never_share_a_batch() {
    let rec = Recorder::new(Duration::from_millis(1));
    let svc = BatchLayer::new(config(64, 100))
        .unwrap()
        .with_key(|id: &u64| id % 3)
        .layer(rec.clone());
    let answers = bounded(join_all((0..30u64).map(|i| svc.clone().oneshot(i)))).await;
    assert!(answers.iter().all(Result::is_ok));
    let calls = rec.calls();
    assert_eq!(calls.len(), 3);
    for c in calls {
        assert!(c.ids.iter().all(|id| id % 3 == c.ids[0] % 3), "{:?}", c.ids);
        assert_eq!(c.ids.len(), 10);
    }
}

#[tokio::test(start_paused = true)]
async fn backpressure_waits_for_room_and_wakes() {
    let mut cfg = config(4, 100);
    cfg.queue_capacity = 2;
    cfg.max_in_flight = 1;
    let (svc, _) = build(cfg, 50);
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let a = tokio::spawn(svc.clone().oneshot(1));
    let b = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(svc.handle().snapshot().queue_depth, 2);
    let mut third = svc.clone();
    let mut task = tokio_test::task::spawn(std::future::poll_fn(|cx| third.poll_ready(cx)));
    assert!(task.poll().is_pending(), "ready with a full queue");
    // The linger flushes the two queued requests and frees their places.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(task.is_woken());
    assert!(task.poll().is_ready());
    drop(task);
    assert_eq!(bounded(third.call(3)).await.unwrap(), 30);
    for t in [busy, a, b] {
        bounded(t).await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_fast_with_queue_full() {
    let mut cfg = config(4, 100);
    cfg.queue_capacity = 2;
    cfg.max_in_flight = 1;
    cfg.overflow = Overflow::Reject;
    let (svc, _) = build(cfg, 50);
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let queued: Vec<_> = (1..=2)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::task::yield_now().await;
    let err = bounded(svc.clone().oneshot(9)).await.unwrap_err();
    assert!(err.is::<QueueFull>(), "{err}");
    assert_eq!(svc.handle().snapshot().rejected, 1);
    for t in queued {
        bounded(t).await.unwrap().unwrap();
    }
    bounded(busy).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_the_queue_and_refuses_new_work() {
    let (svc, rec) = build(config(64, 10_000), 10);
    let busy = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let queued: Vec<_> = (1..=5)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    bounded(svc.handle().shutdown()).await;
    assert!(
        Instant::now() - t0 < Duration::from_millis(100),
        "shutdown waited for the linger"
    );
    for t in queued {
        bounded(t).await.unwrap().unwrap();
    }
    bounded(busy).await.unwrap().unwrap();
    assert_eq!(rec.calls().len(), 2);
    assert_eq!(svc.handle().snapshot().flushes.shutdown, 1);
    let err = bounded(svc.clone().oneshot(7)).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn clones_start_without_a_place_and_dropping_a_readied_one_gives_it_back() {
    let mut cfg = config(4, 100);
    cfg.queue_capacity = 1;
    let (mut svc, _) = build(cfg, 1);
    bounded(svc.ready()).await.unwrap();
    for _ in 0..10 {
        let mut clone = svc.clone();
        let mut task = tokio_test::task::spawn(std::future::poll_fn(|cx| clone.poll_ready(cx)));
        assert!(
            task.poll().is_pending(),
            "a clone shared its parent's place"
        );
    }
    drop(svc);
    let (svc2, _) = build(config(4, 100), 1);
    for _ in 0..10 {
        let mut c = svc2.clone();
        bounded(c.ready()).await.unwrap();
    }
    assert_eq!(bounded(svc2.clone().oneshot(1)).await.unwrap(), 10);
    assert_eq!(svc2.handle().snapshot().queue_depth, 0);
}

#[tokio::test(start_paused = true)]
async fn the_linger_adapts_to_the_arrival_rate() {
    let mut cfg = config(64, 100);
    cfg.max_in_flight = 1;
    let (svc, _) = build(cfg, 30);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        bounded(t).await.unwrap().unwrap();
    }
    // At one request a millisecond a batch of 64 fills in ~64 ms: the layer lingers about
    // twice that at most, capped by max_linger, and below max_linger when little is missing.
    let snap = svc.handle().snapshot();
    assert!(snap.linger <= Duration::from_millis(100), "{snap:?}");
    assert!(snap.mean_batch_size() > 10.0, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_backend_gets_the_batch_once_the_burst_is_over() {
    let (svc, rec) = build(config(64, 100), 1);
    let mut tasks = Vec::new();
    // A steady stream, one request every 5 ms: not sparse, so batches linger...
    for i in 0..40u64 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_sent = Instant::now() - Duration::from_millis(5);
    for t in tasks {
        bounded(t).await.unwrap().unwrap();
    }
    // ...until the stream stops: the last batch goes about three gaps after the last request,
    // not a full linger after its first.
    let last_call = rec.calls().last().unwrap().at;
    assert!(
        last_call - last_sent <= Duration::from_millis(30),
        "{:?}",
        last_call - last_sent
    );
    assert!(
        svc.handle().snapshot().flushes.idle >= 2,
        "{:?}",
        svc.handle().snapshot()
    );
}

#[test]
fn a_batch_dropped_with_its_runtime_answers_closed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (svc, answer) = rt.block_on(async {
        // The batch call takes an hour: it is in flight when the runtime goes away.
        let (mut svc, _) = build(config(64, 10), 3_600_000);
        bounded(svc.ready()).await.unwrap();
        let answer = svc.call(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(svc.handle().snapshot().in_flight, 1);
        (svc, answer)
    });
    drop(rt);
    let err = futures_util::FutureExt::now_or_never(answer)
        .expect("answered at once")
        .unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
    assert_eq!(svc.handle().snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn with_folding_max_items_counts_distinct_requests() {
    let mut cfg = config(4, 100);
    cfg.max_in_flight = 4;
    let rec = Recorder::new(Duration::from_millis(1));
    let svc = BatchLayer::new(cfg)
        .unwrap()
        .with_folding()
        .layer(rec.clone());
    // 12 callers over 6 distinct ids: batches of at most 4 distinct ids, every caller answered.
    let ids = [1u64, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6];
    let answers = bounded(join_all(ids.map(|i| svc.clone().oneshot(i)))).await;
    for (id, a) in ids.iter().zip(answers) {
        assert_eq!(a.unwrap(), id * 10);
    }
    let batches: Vec<Vec<u64>> = rec.calls().into_iter().map(|c| c.ids).collect();
    assert_eq!(batches, vec![vec![1, 2, 3, 4], vec![5, 6]]);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_forgotten() {
    let rec = Recorder::new(Duration::from_millis(5));
    let svc = BatchLayer::new(config(64, 10))
        .unwrap()
        .with_key(|id: &u64| id % 50)
        .layer(rec.clone());
    let answers = bounded(join_all((0..200u64).map(|i| svc.clone().oneshot(i)))).await;
    assert!(answers.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(svc.handle().snapshot().active_keys, 0);
    // A forgotten key works again.
    assert_eq!(bounded(svc.clone().oneshot(7)).await.unwrap(), 70);
}
