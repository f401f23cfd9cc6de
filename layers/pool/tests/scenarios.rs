//! Overload scenarios on the simulator (tollgate-sim), each algorithm each scenario.
//!
//! Backend: 10 workers x 10 ms = 1000 requests per second, Poisson arrivals, paused time.
//! The pool waits at the limit for at most one unloaded RTT (10 ms): enough to ride out
//! Poisson bursts, short enough that a request that gets through is never much later than an
//! unloaded one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tollgate_pool::{
    AimdConfig, AlgorithmConfig, AtLimit, Gradient2Config, Limiter, PoolConfig, PoolSizerLayer,
    VegasConfig,
};
use tollgate_sim::{LoadGen, Profile, Recorder, SimBackend, Summary};
use tower::ServiceBuilder;

const HOUR: Duration = Duration::from_secs(3600);
const BASE: Duration = Duration::from_millis(10);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Alg {
    Vegas,
    Aimd,
    Gradient2,
}

fn config(alg: Alg) -> PoolConfig {
    let algorithm = match alg {
        Alg::Vegas => AlgorithmConfig::Vegas(VegasConfig::default()),
        // AIMD needs to be told what "slow" is: 1.5x the unloaded RTT.
        Alg::Aimd => AlgorithmConfig::Aimd(AimdConfig {
            rtt_threshold: Some(BASE.mul_f64(1.5)),
            ..AimdConfig::default()
        }),
        Alg::Gradient2 => AlgorithmConfig::Gradient2(Gradient2Config::default()),
    };
    PoolConfig {
        initial_limit: 10,
        at_limit: AtLimit::Wait { max_wait: BASE },
        algorithm,
        ..PoolConfig::default()
    }
}

struct Run {
    rec: Recorder,
    limiter: Limiter,
    /// (time since start, limit) every 10 ms.
    limits: Vec<(Duration, usize)>,
}

impl Run {
    fn limits_between(&self, from: Duration, to: Duration) -> Vec<usize> {
        self.limits
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|x| x.1)
            .collect()
    }

    fn median_limit(&self, from: Duration, to: Duration) -> usize {
        let mut l = self.limits_between(from, to);
        l.sort_unstable();
        l[l.len() / 2]
    }

    fn max_limit(&self, from: Duration, to: Duration) -> usize {
        self.limits_between(from, to).into_iter().max().unwrap()
    }

    fn summary(&self, from: Duration, to: Duration) -> Summary {
        self.rec.summary(from, to)
    }
}

/// Runs `load` against `backend` behind a pool with `alg`, sampling the limit every 10 ms.
async fn run(
    alg: Alg,
    backend: SimBackend,
    load: LoadGen,
    observe: impl FnMut(Duration, &Limiter),
) -> Run {
    let limiter = Limiter::new(config(alg)).unwrap();
    let svc = ServiceBuilder::new()
        .layer(PoolSizerLayer::new(limiter.clone()))
        .service(backend);
    let rec = Recorder::new();
    let done = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now();
    let sampler = {
        let (limiter, done) = (limiter.clone(), done.clone());
        let mut observe = observe;
        async move {
            let mut limits = Vec::new();
            let mut tick = tokio::time::interval(ms(10));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = start.elapsed();
                limits.push((t, limiter.limit()));
                observe(t, &limiter);
            }
            limits
        }
    };
    let driver = async {
        load.run(svc, &rec).await;
        done.store(true, Ordering::Relaxed);
    };
    let ((), limits) = tokio::time::timeout(HOUR, async { tokio::join!(driver, sampler) })
        .await
        .expect("the scenario finished");
    assert!(
        rec.total().ledger_balanced(),
        "{alg:?}: ledger: {:?}",
        rec.total()
    );
    assert_eq!(limiter.in_flight(), 0, "{alg:?}: permits leaked");
    Run {
        rec,
        limiter,
        limits,
    }
}

fn backend() -> SimBackend {
    SimBackend::builder()
        .workers(10)
        .service_time(BASE)
        .seed(11)
        .build()
}

fn show(alg: Alg, what: &str, s: &Summary) {
    eprintln!(
        "{alg:?} {what}: goodput {:.0}/s offered {:.0}/s rejected {} p50 {:?} p99 {:?}",
        s.goodput_rps(),
        s.offered_rps(),
        s.rejected,
        s.p50,
        s.p99
    );
}

/// Offered load steps from 0.8x to 1.4x capacity at 5 s.
async fn step(alg: Alg) {
    let load = LoadGen::new(
        Profile::Step {
            before: 800.0,
            after: 1400.0,
            at: secs(5),
        },
        secs(9),
    )
    .seed(1);
    let r = run(alg, backend(), load, |_, _| {}).await;
    let unloaded = r.summary(secs(1), secs(5));
    let after = r.summary(ms(5200), secs(9));
    show(alg, "step before", &unloaded);
    show(alg, "step after", &after);
    let p99 = unloaded.p99.unwrap();
    // Never collapses: every 100 ms window after the step keeps half the capacity.
    let worst = r.rec.windows()[50..89]
        .iter()
        .map(|w| w.goodput_rps())
        .fold(f64::MAX, f64::min);
    eprintln!(
        "{alg:?} step: worst window {worst:.0}/s, limit {}",
        r.median_limit(secs(6), secs(9))
    );
    assert!(worst >= 500.0, "{alg:?}: goodput collapsed to {worst}");
    match alg {
        Alg::Vegas | Alg::Aimd => {
            assert!(
                after.goodput_rps() >= 950.0,
                "{alg:?}: goodput {}",
                after.goodput_rps()
            );
            assert!(
                after.p99.unwrap() <= p99 * 2,
                "{alg:?}: p99 {:?} vs {p99:?}",
                after.p99
            );
        }
        Alg::Gradient2 => {
            // By design it keeps ~1.5x RTT of queue: goodput holds, p99 is higher.
            assert!(
                after.goodput_rps() >= 950.0,
                "{alg:?}: goodput {}",
                after.goodput_rps()
            );
            assert!(
                after.p99.unwrap() <= p99 * 4,
                "{alg:?}: p99 {:?} vs {p99:?}",
                after.p99
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn step_to_overload_vegas() {
    step(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn step_to_overload_aimd() {
    step(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn step_to_overload_gradient2() {
    step(Alg::Gradient2).await;
}

/// Capacity halves at 2 s under 900 requests per second.
async fn halve(alg: Alg) {
    let b = backend();
    b.set_capacity_at(secs(2), 5);
    let r = run(alg, b, LoadGen::constant(900.0, secs(5)).seed(2), |_, _| {}).await;
    let settled = r.summary(secs(3), secs(5));
    show(alg, "halved", &settled);
    let limit = r.median_limit(secs(3), secs(5));
    eprintln!("{alg:?} halved: median limit {limit} (Little's law: 5)");
    assert!(
        settled.goodput_rps() >= 475.0,
        "{alg:?}: goodput {}",
        settled.goodput_rps()
    );
    match alg {
        Alg::Vegas => assert!(
            (4..=5).contains(&limit) && limit as f64 >= 4.5,
            "{alg:?}: {limit}"
        ),
        // AIMD's sawtooth overshoots until its RTT threshold trips (1.5x: 7-8 in flight).
        Alg::Aimd => assert!(limit <= 8, "{alg:?}: {limit}"),
        // Gradient2 tolerates 1.5x RTT plus a queue of 4, and its long-term RTT follows the
        // queue it builds: it holds goodput with a limit (and latency) several times higher.
        Alg::Gradient2 => assert!(limit <= 60, "{alg:?}: {limit}"),
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_halves_vegas() {
    halve(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn capacity_halves_aimd() {
    halve(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn capacity_halves_gradient2() {
    halve(Alg::Gradient2).await;
}

/// Capacity is restored from 500 to 1000 at 5 s under 900 requests per second.
async fn restore(alg: Alg) {
    let b = SimBackend::builder()
        .workers(5)
        .service_time(BASE)
        .seed(3)
        .build();
    b.set_capacity_at(secs(5), 10);
    let r = run(
        alg,
        b,
        LoadGen::constant(900.0, secs(12)).seed(3),
        |_, _| {},
    )
    .await;
    let after = r.summary(secs(9), secs(10));
    show(alg, "restored", &after);
    eprintln!(
        "{alg:?} restored: limit {}",
        r.median_limit(secs(9), secs(10))
    );
    assert!(
        after.goodput_rps() >= 0.95 * 900.0,
        "{alg:?}: goodput {}",
        after.goodput_rps()
    );
}

#[tokio::test(start_paused = true)]
async fn capacity_restored_vegas() {
    restore(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn capacity_restored_aimd() {
    restore(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn capacity_restored_gradient2() {
    restore(Alg::Gradient2).await;
}

/// Ten minutes at 1.2x, then 0.5x: the learned baseline is the true unloaded RTT again.
async fn long_overload(alg: Alg) {
    let load = LoadGen::new(
        Profile::Step {
            before: 1200.0,
            after: 500.0,
            at: secs(600),
        },
        secs(630),
    )
    .seed(4);
    let mut during = None;
    let r = run(alg, backend(), load, |t, l| {
        if t >= secs(599) && during.is_none() {
            during = Some(l.snapshot().rtt);
        }
    })
    .await;
    let rtt = r.limiter.snapshot().rtt;
    let during = during.unwrap();
    show(alg, "overload", &r.summary(secs(590), secs(600)));
    show(alg, "after", &r.summary(secs(620), secs(630)));
    eprintln!(
        "{alg:?} long overload: rtt during {during:?}, after {rtt:?}, limit {}",
        r.median_limit(secs(590), secs(600))
    );
    let within = |d: Option<Duration>| {
        let d = d.unwrap().as_secs_f64();
        (d - BASE.as_secs_f64()).abs() <= 0.1 * BASE.as_secs_f64()
    };
    match alg {
        Alg::Vegas => {
            assert!(within(rtt.baseline), "{alg:?}: baseline {rtt:?}");
            // And it did not drift upward during the overload either.
            assert!(
                within(during.baseline),
                "{alg:?}: baseline during overload {during:?}"
            );
        }
        // AIMD learns no baseline; its last window RTT is the unloaded one again.
        Alg::Aimd => assert!(within(rtt.short_term), "{alg:?}: {rtt:?}"),
        // Gradient2's long-term average follows the loaded RTT and comes back down slowly.
        Alg::Gradient2 => assert!(within(rtt.short_term), "{alg:?}: {rtt:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn long_overload_then_idle_vegas() {
    long_overload(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn long_overload_then_idle_aimd() {
    long_overload(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn long_overload_then_idle_gradient2() {
    long_overload(Alg::Gradient2).await;
}

/// Steady 0.7x for two minutes: probing rejects (almost) nothing.
async fn steady(alg: Alg) {
    let r = run(
        alg,
        backend(),
        LoadGen::constant(700.0, secs(120)).seed(5),
        |_, _| {},
    )
    .await;
    let t = r.rec.total();
    show(alg, "steady", &t);
    let rate = t.rejected as f64 / t.issued as f64;
    eprintln!(
        "{alg:?} steady: rejected {rate:.5}, limit {}",
        r.median_limit(secs(60), secs(120))
    );
    assert!(rate <= 0.001, "{alg:?}: {rate}");
}

#[tokio::test(start_paused = true)]
async fn steady_load_vegas() {
    steady(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn steady_load_aimd() {
    steady(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn steady_load_gradient2() {
    steady(Alg::Gradient2).await;
}

/// Application-limited: 0.3x for ten minutes; the limit stays bounded.
async fn app_limited(alg: Alg) {
    let r = run(
        alg,
        backend(),
        LoadGen::constant(300.0, secs(600)).seed(6),
        |_, _| {},
    )
    .await;
    let early = r.max_limit(secs(60), secs(300));
    let late = r.max_limit(secs(300), secs(600));
    eprintln!("{alg:?} app-limited: max limit {early} then {late}");
    assert!(late <= 40, "{alg:?}: limit grew to {late}");
    if alg != Alg::Gradient2 {
        assert!(
            late <= early + 2,
            "{alg:?}: still growing ({early} then {late})"
        );
    }
    // Gradient2 grows whenever a burst brings demand to half its limit, so it creeps up
    // (by a few permits over minutes, ever more slowly) but stays bounded.
}

#[tokio::test(start_paused = true)]
async fn app_limited_vegas() {
    app_limited(Alg::Vegas).await;
}
#[tokio::test(start_paused = true)]
async fn app_limited_aimd() {
    app_limited(Alg::Aimd).await;
}
#[tokio::test(start_paused = true)]
async fn app_limited_gradient2() {
    app_limited(Alg::Gradient2).await;
}

/// The backend's own latency doubles (10 -> 20 ms, so capacity halves) under overload: the
/// re-probed baseline recovers to the new RTT and goodput to the new capacity.
#[tokio::test(start_paused = true)]
async fn latency_shift_vegas() {
    let b = backend();
    b.set_service_time_at(secs(5), ms(20));
    let load = LoadGen::constant(700.0, secs(30)).seed(7);
    let r = run(Alg::Vegas, b, load, |_, _| {}).await;
    let rtt = r.limiter.snapshot().rtt;
    let late = r.summary(secs(25), secs(30));
    show(Alg::Vegas, "latency shift", &late);
    eprintln!(
        "Vegas latency shift: {rtt:?}, limit {}",
        r.median_limit(secs(25), secs(30))
    );
    let base = rtt.baseline.unwrap().as_secs_f64();
    assert!((base - 0.020).abs() <= 0.002, "baseline {rtt:?}");
    assert!(
        late.goodput_rps() >= 475.0,
        "goodput {}",
        late.goodput_rps()
    );
}
