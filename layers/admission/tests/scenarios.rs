//! Overload scenarios on the deterministic simulator (tollgate-sim, paused tokio time).
//!
//! Backends are M/M/k: `workers` servers with exponential service times of mean 10 ms. Tokio
//! timers fire on millisecond ticks, so a drawn service time is rounded up and the effective
//! capacity is a little below `workers / 10 ms`; the tests measure it (a saturated backend
//! with its own unbounded queue) rather than assume it.

use std::time::Duration;
use tollgate_admission::{Admission, AdmissionConfig, AdmissionHandle, AdmissionLayer, Ticket};
use tollgate_sim::{LoadGen, Recorder, ServiceTime, SimBackend, SimRequest, Summary};
use tower_layer::Layer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn ticket(r: &SimRequest) -> Ticket {
    Ticket {
        class: usize::from(r.class),
        deadline: r.deadline,
        key: None,
    }
}

type Svc = Admission<SimBackend, fn(&SimRequest) -> Ticket>;

fn backend(workers: usize) -> SimBackend {
    SimBackend::builder()
        .workers(workers)
        .service_time(ServiceTime::Exponential { mean: 10 * MS })
        .seed(11)
        .build()
}

/// The backend behind the layer, which is limited to `workers` in flight.
fn system(workers: usize, config: AdmissionConfig) -> (Svc, AdmissionHandle) {
    let layer = AdmissionLayer::new(AdmissionConfig {
        limit: workers,
        ..config
    })
    .unwrap()
    .prioritize(ticket as fn(&SimRequest) -> Ticket);
    (layer.layer(backend(workers)), layer.handle())
}

async fn run<S>(svc: S, load: LoadGen) -> Recorder
where
    S: tower_service::Service<SimRequest> + Clone,
    S::Error: Into<tollgate_core::BoxError>,
{
    let recorder = Recorder::new();
    tokio::time::timeout(Duration::from_secs(3600), load.run(svc, &recorder))
        .await
        .unwrap();
    assert_eq!(recorder.outstanding(), 0, "every request is answered");
    assert!(recorder.total().ledger_balanced());
    recorder
}

/// Requests per second a saturated backend of `workers` serves.
async fn capacity(workers: usize) -> f64 {
    let rec = run(
        backend(workers),
        LoadGen::constant(300.0 * workers as f64, 6 * SEC).seed(1),
    )
    .await;
    rec.summary(2 * SEC, 6 * SEC).ok as f64 / 4.0
}

fn served(s: &Summary) -> f64 {
    s.ok as f64 / s.issued.max(1) as f64
}

#[tokio::test(start_paused = true)]
async fn goodput_stays_near_optimal_from_half_to_four_times_capacity() {
    let cap = capacity(10).await;
    assert!((900.0..=1000.0).contains(&cap), "{cap}");
    for (i, factor) in [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0]
        .into_iter()
        .enumerate()
    {
        let (svc, handle) = system(10, AdmissionConfig::default());
        let load = LoadGen::constant(cap * factor, 10 * SEC).seed(100 + i as u64);
        let total = run(svc, load).await.total();
        let offered = total.issued as f64 / 10.0;
        let optimum = (cap / offered).min(1.0);
        let got = served(&total);
        eprintln!("{factor}x: served {got:.3}, optimum {optimum:.3}");
        assert!(
            (got - optimum).abs() <= 0.05 * optimum,
            "{factor}x capacity: {got:.3} of requests served, optimum {optimum:.3}: {total:?}"
        );
        assert_eq!((handle.in_flight(), handle.snapshot().queued), (0, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn the_top_class_keeps_its_latency_and_lower_classes_are_shed_in_order() {
    // 7 workers: about 700 requests per second.
    let cap = capacity(7).await;
    assert!((630.0..=700.0).contains(&cap), "{cap}");
    let mix = [(0, 5), (1, 15), (2, 30), (3, 50)];

    // One slot is kept free for the top class, so its requests start at once instead of
    // waiting for a lower-class request to finish.
    let mut config = AdmissionConfig::default();
    config.classes[0].headroom = 1;
    let (svc, _) = system(7, config.clone());
    // Unloaded: the top class alone at 100 rps (a seventh of capacity), for many samples.
    let unloaded = run(svc, LoadGen::constant(100.0, 60 * SEC).seed(3)).await;
    let base = unloaded.summary_class(0, SEC, 60 * SEC);

    for (i, inbound) in [1500.0, 2000.0, 4000.0].into_iter().enumerate() {
        let (svc, handle) = system(7, config.clone());
        let rec = run(
            svc,
            LoadGen::constant(inbound, 20 * SEC)
                .classes(&mix)
                .seed(10 + i as u64),
        )
        .await;
        let class = |c: u8| rec.summary_class(c, SEC, 20 * SEC);
        let top = class(0);
        let ctx = format!(
            "{inbound} rps: top {top:?}, unloaded {base:?}, {:?}",
            handle.snapshot()
        );
        // Its demand (5%: 75 to 200 rps) fits in capacity: it gets it all, as fast as unloaded.
        assert!(served(&top) >= 0.99, "{ctx}");
        assert!(top.p50.unwrap() <= base.p50.unwrap().mul_f64(1.2), "{ctx}");
        assert!(top.p99.unwrap() <= base.p99.unwrap().mul_f64(1.2), "{ctx}");
        // Lower classes are shed strictly from the bottom: a class is served only as far as
        // every class above it is.
        let fractions: Vec<f64> = (0..4).map(|c| served(&class(c))).collect();
        eprintln!(
            "{inbound} rps: top p50 {:?} p99 {:?} (unloaded {:?} {:?}); served by class {fractions:.3?}",
            top.p50, top.p99, base.p50, base.p99
        );
        for c in 1..4 {
            assert!(
                fractions[c] <= fractions[c - 1] + 0.01,
                "{fractions:?}: {ctx}"
            );
            if fractions[c - 1] < 0.9 {
                assert!(fractions[c] < 0.05, "{fractions:?}: {ctx}");
            }
        }
        assert!(
            fractions[3] < 0.05,
            "the lowest class is shed at every step: {fractions:?}"
        );
        let goodput: u64 = (0..4).map(|c| class(c).ok).sum();
        // The headroom costs at most its one slot in seven.
        assert!(
            goodput as f64 / 19.0 >= 0.8 * cap,
            "{goodput} served: {ctx}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_standing_queue_keeps_served_waits_at_the_bound() {
    let cap = capacity(10).await;
    let (svc, _) = system(10, AdmissionConfig::default());
    let unloaded = run(svc, LoadGen::constant(0.3 * cap, 10 * SEC).seed(4))
        .await
        .summary(SEC, 10 * SEC);

    let (svc, handle) = system(10, AdmissionConfig::default());
    let rec = run(svc, LoadGen::constant(2.0 * cap, 10 * SEC).seed(5)).await;
    let loaded = rec.summary(SEC, 10 * SEC);
    let snap = handle.snapshot();
    let waits = snap.classes[0].queue_wait;
    let ctx = format!("unloaded {unloaded:?}, 2x {loaded:?}, waits {waits:?}");
    eprintln!("{ctx}");
    // Newest first, and nobody served after waiting much past the 5 ms target once the queue
    // stands (only the first 100 ms, before it stood, waited longer).
    assert!(waits.p50 <= 2 * MS, "{ctx}");
    assert!(waits.p90 <= 6 * MS, "{ctx}");
    assert!(
        loaded.p50.unwrap() <= unloaded.p50.unwrap().mul_f64(1.2),
        "{ctx}"
    );
    // About half is turned away, quickly: the queue-time bound, not a growing queue.
    assert!((0.45..=0.55).contains(&loaded.rejection_rate()), "{ctx}");
}

#[tokio::test(start_paused = true)]
async fn ten_times_overload_keeps_queues_at_their_caps_and_answers_everyone() {
    let config = AdmissionConfig {
        max_queued: 200,
        ..AdmissionConfig::default()
    };
    let caps: Vec<usize> = config.classes.iter().map(|c| c.queue_capacity).collect();
    let (svc, handle) = system(10, config);
    let load = LoadGen::constant(10_000.0, 5 * SEC)
        .classes(&[(0, 1), (1, 1), (2, 1), (3, 1)])
        .seed(6);
    let recorder = Recorder::new();
    let mut max_queued = 0;
    let watch = async {
        for _ in 0..6000 {
            let s = handle.snapshot();
            max_queued = max_queued.max(s.queued);
            for (c, cs) in s.classes.iter().enumerate() {
                assert!(cs.queued <= caps[c], "class {c}: {} queued", cs.queued);
            }
            assert!(s.in_flight <= 10);
            tokio::time::sleep(MS).await;
        }
    };
    let (_, ()) = tokio::join!(load.run(svc, &recorder), watch);
    assert!((150..=200).contains(&max_queued), "{max_queued}");
    let total = recorder.total();
    assert_eq!(recorder.outstanding(), 0);
    assert!(total.ledger_balanced(), "{total:?}");
    assert!(total.issued >= 49_000, "{total:?}");
    let snap = handle.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
    let admitted: u64 = snap.classes.iter().map(|c| c.admitted).sum();
    let rejected: u64 = snap.classes.iter().map(|c| c.rejected_total()).sum();
    assert_eq!(admitted + rejected, total.issued, "{snap:?}");
    // The top class was served first.
    assert!(
        recorder.summary_class(0, SEC, 5 * SEC).ok
            > recorder.summary_class(3, SEC, 5 * SEC).ok * 10
    );
}
