//! The matrix's building blocks: cells (a service-time distribution on a backend), the
//! scenarios run on them, and the bars each scenario must meet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tollgate_pool::{
    AimdConfig, AlgorithmConfig, Gradient2Config, Limiter, PoolConfig, PoolSizerLayer,
};
use tollgate_sim::timeline::{IN_FLIGHT, LIMIT};
use tollgate_sim::{
    Change, LoadGen, Profile, Recorder, ServiceTime, SimBackend, SimRequest, SimResponse, Summary,
    Timeline,
};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// The service under test, built in front of the backend from the run's limiter.
pub(crate) type FrontFn =
    fn(Limiter, SimBackend) -> BoxCloneService<SimRequest, SimResponse, BoxError>;

/// What stands in front of the backend, and the name its timelines are filed under.
static FRONT: OnceLock<(&'static str, FrontFn)> = OnceLock::new();

/// Puts `front` in front of the backend in every run of this test binary instead of the pool's
/// own layer: tollgate-admission's matrix includes this harness and runs the same scenarios
/// with the limiter as admission's capacity. Call it before the first run; later calls are
/// ignored.
#[allow(dead_code)]
pub(crate) fn set_front(name: &'static str, front: FrontFn) {
    let _ = FRONT.set((name, front));
}

/// The pool's own layer: reject mode, as `PoolConfig` says.
fn pool_front(
    limiter: Limiter,
    backend: SimBackend,
) -> BoxCloneService<SimRequest, SimResponse, BoxError> {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(PoolSizerLayer::new(limiter))
            .service(backend)
            .map_err(Into::into),
    )
}

fn front() -> (&'static str, FrontFn) {
    *FRONT.get_or_init(|| ("", pool_front))
}

pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The service-time distributions of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dist {
    Constant,
    /// Uniform within +/-20% of the mean.
    Uniform20,
    /// Uniform within +/-50% of the mean.
    Uniform50,
    Exponential,
    /// Log-normal, sigma 0.5.
    LogNormal,
    /// 95% at the base, 5% at 10x the base (the base chosen so the mean is the cell's mean).
    Bimodal,
}

pub(crate) const DISTS: [Dist; 6] = [
    Dist::Constant,
    Dist::Uniform20,
    Dist::Uniform50,
    Dist::Exponential,
    Dist::LogNormal,
    Dist::Bimodal,
];

impl Dist {
    pub(crate) fn with_mean(self, mean: Duration) -> ServiceTime {
        match self {
            Dist::Constant => ServiceTime::Constant(mean),
            Dist::Uniform20 => ServiceTime::Uniform {
                min: mean.mul_f64(0.8),
                max: mean.mul_f64(1.2),
            },
            Dist::Uniform50 => ServiceTime::Uniform {
                min: mean.mul_f64(0.5),
                max: mean.mul_f64(1.5),
            },
            Dist::Exponential => ServiceTime::Exponential { mean },
            Dist::LogNormal => ServiceTime::LogNormal { mean, sigma: 0.5 },
            Dist::Bimodal => {
                let base = mean.div_f64(0.95 + 0.05 * 10.0);
                ServiceTime::Bimodal {
                    fast: base,
                    slow: base * 10,
                    slow_fraction: 0.05,
                }
            }
        }
    }
}

/// One cell: a distribution on a backend of `workers` with mean service time `mean`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    pub(crate) dist: Dist,
    pub(crate) mean: Duration,
    pub(crate) workers: usize,
}

impl Cell {
    pub(crate) fn new(dist: Dist, mean_ms: u64, workers: usize) -> Self {
        Self {
            dist,
            mean: ms(mean_ms),
            workers,
        }
    }

    pub(crate) fn name(&self) -> String {
        format!(
            "{:?} {}ms x{}",
            self.dist,
            self.mean.as_millis(),
            self.workers
        )
    }

    pub(crate) fn file_name(&self) -> String {
        format!(
            "{:?}-{}ms-x{}",
            self.dist,
            self.mean.as_millis(),
            self.workers
        )
        .to_lowercase()
    }

    pub(crate) fn service(&self) -> ServiceTime {
        self.dist.with_mean(self.mean)
    }

    /// Capacity C = workers / mean service time, per second.
    pub(crate) fn capacity(&self) -> f64 {
        self.workers as f64 / self.mean.as_secs_f64()
    }

    /// The measurement window: 1 s, or longer where the service time's variance makes even a
    /// fully busy backend dip under 95% of C by chance in more than ~2% of 1 s windows (the
    /// number of completions of a busy backend in `T` seconds has a variance of about
    /// `C T CV^2`; a 95% bar two standard deviations away needs `T >= 1600 CV^2 / C`, and
    /// the 2,200 leaves a margin). Rounded up to the recorder's 100 ms.
    pub(crate) fn window(&self) -> Duration {
        self.window_at(self.capacity())
    }

    /// [`Cell::window`] for a backend of `capacity` (after halving, the capacity is C/2).
    pub(crate) fn window_at(&self, capacity: f64) -> Duration {
        let cv = self.service().cv();
        let t = (2200.0 * cv * cv / capacity).max(1.0);
        ms(((t * 10.0).ceil() as u64) * 100)
    }

    /// The window for a bar on serving an offered load below capacity (restore): Poisson
    /// arrivals at 0.9 C make what a window offers, and so what it can serve, vary by
    /// `1 / sqrt(0.9 C T)`: the same 2,200 rule with the arrivals' CV of 1.
    pub(crate) fn offered_window(&self) -> Duration {
        let t = (2200.0 / (0.9 * self.capacity())).max(self.window().as_secs_f64());
        ms(((t * 10.0).ceil() as u64) * 100)
    }

    /// How much the scenario's times stretch: the window in seconds.
    pub(crate) fn stretch(&self) -> f64 {
        self.window().as_secs_f64()
    }

    /// A scenario time of `s` seconds, stretched.
    pub(crate) fn at(&self, s: f64) -> Duration {
        let t = Duration::from_secs_f64(s * self.stretch());
        ms(t.as_millis().div_ceil(100) as u64 * 100)
    }

    /// The p99 latency of an unloaded backend: the distribution's 99th percentile, plus the
    /// 1 ms of tokio's timer (answers land on the next millisecond tick).
    pub(crate) fn unloaded_p99(&self) -> Duration {
        self.service().quantile(0.99, 200_000, 99) + ms(1)
    }

    /// The mean RTT an unloaded pool observes: the mean service time, each answer landing on
    /// the next millisecond tick of tokio's timer.
    pub(crate) fn no_load_rtt(&self) -> Duration {
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(42);
        let st = self.service();
        let n = 100_000u32;
        let total: Duration = (0..n)
            .map(|_| ms(st.sample(&mut rng).as_nanos().div_ceil(1_000_000) as u64))
            .sum();
        total / n
    }

    /// The deadline to settle after a change: max(1 s, 20 mean service times), stretched.
    pub(crate) fn settle(&self) -> Duration {
        secs(1).max(self.mean * 20).mul_f64(self.stretch())
    }
}

/// The limit algorithm under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Algo {
    /// `PoolConfig::default()`: the default algorithm, reject mode.
    Default,
    /// AIMD with its defaults.
    Aimd,
    /// Gradient2 with its defaults.
    Gradient2,
    /// A fixed limit (min = max = initial): the oracle.
    Fixed(usize),
}

impl Algo {
    pub(crate) fn config(self) -> PoolConfig {
        match self {
            Algo::Default => PoolConfig::default(),
            Algo::Aimd => PoolConfig {
                algorithm: AlgorithmConfig::Aimd(AimdConfig::default()),
                ..PoolConfig::default()
            },
            Algo::Gradient2 => PoolConfig {
                algorithm: AlgorithmConfig::Gradient2(Gradient2Config::default()),
                ..PoolConfig::default()
            },
            Algo::Fixed(n) => PoolConfig {
                min_limit: n,
                max_limit: n,
                initial_limit: n,
                ..PoolConfig::default()
            },
        }
    }
}

/// What one scenario does: offered load over time, backend changes, duration.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) load: Profile,
    pub(crate) changes: Vec<(Duration, Change)>,
    pub(crate) workers: usize,
    pub(crate) duration: Duration,
    pub(crate) seed: u64,
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) rec: Recorder,
    pub(crate) limiter: Limiter,
    /// (time since start, limit) at every sample.
    pub(crate) limits: Vec<(Duration, f64)>,
}

impl Run {
    pub(crate) fn summary(&self, from: Duration, to: Duration) -> Summary {
        self.rec.summary(from, to)
    }

    pub(crate) fn median_limit(&self, from: Duration, to: Duration) -> f64 {
        let mut l: Vec<f64> = self
            .limits
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|x| x.1)
            .collect();
        l.sort_by(f64::total_cmp);
        l.get(l.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn max_limit(&self, from: Duration, to: Duration) -> f64 {
        self.limits
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|x| x.1)
            .fold(0.0, f64::max)
    }
}

/// Where timelines go: `target/sim/<algo>/`, or `target/sim/<front>-<algo>/` for another
/// front (see [`set_front`]).
fn timeline_dir(algo: Algo) -> std::path::PathBuf {
    let mut name = match algo {
        Algo::Fixed(_) => "fixed".to_owned(),
        a => format!("{a:?}").to_lowercase(),
    };
    let (front, _) = front();
    if !front.is_empty() {
        name = format!("{front}-{name}");
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/sim")
        .join(name)
}

/// Runs `plan` on `cell` behind a pool with `algo`, sampling the limit and requests in flight
/// every 50 ms into the recorder's gauges, and writes the timeline (CSV and SVG) under
/// `target/sim/`.
pub(crate) async fn run(cell: Cell, algo: Algo, plan: &Plan) -> Run {
    run_observed(cell, algo, plan, |_, _| {}).await
}

/// [`run`], calling `observe` with the time since the start and the limiter at every sample.
pub(crate) async fn run_observed(
    cell: Cell,
    algo: Algo,
    plan: &Plan,
    mut observe: impl FnMut(Duration, &Limiter),
) -> Run {
    let backend = SimBackend::builder()
        .workers(plan.workers)
        .service_time(cell.service())
        .seed(plan.seed)
        .build();
    for (at, change) in &plan.changes {
        backend.schedule(*at, *change);
    }
    let limiter = Limiter::new(algo.config()).unwrap();
    let svc = (front().1)(limiter.clone(), backend);
    let rec = Recorder::new();
    let done = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now();
    let sampler = {
        let (limiter, done, rec) = (limiter.clone(), done.clone(), rec.clone());
        async move {
            let mut limits = Vec::new();
            let mut tick = tokio::time::interval(ms(50));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let l = limiter.limit_f64();
                let t = start.elapsed();
                limits.push((t, l));
                observe(t, &limiter);
                rec.gauge(LIMIT, l);
                rec.gauge(IN_FLIGHT, limiter.in_flight() as f64);
            }
            limits
        }
    };
    let load = LoadGen::new(plan.load.clone(), plan.duration).seed(plan.seed);
    let driver = async {
        load.run(svc, &rec).await;
        done.store(true, Ordering::Relaxed);
    };
    let ((), limits) =
        tokio::time::timeout(secs(24 * 3600), async { tokio::join!(driver, sampler) })
            .await
            .expect("the scenario finished");
    assert!(rec.total().ledger_balanced(), "ledger: {:?}", rec.total());
    assert_eq!(limiter.in_flight(), 0, "permits leaked");
    let title = format!("{} - {} - {algo:?}", plan.name, cell.name());
    let _ = Timeline::from_recorder(title, &rec).write(
        &timeline_dir(algo),
        &format!("{}-{}", plan.name, cell.file_name()),
    );
    Run {
        rec,
        limiter,
        limits,
    }
}

/// How a scenario went against its bar.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub(crate) pass: bool,
    pub(crate) figures: String,
}

/// The settling criterion: a window of `w` starting within `deadline` of `t0` meets `bar`, and
/// so do at least 90% of the disjoint windows after it (until `end`); and no window from
/// `floor.1` on has goodput under `floor.0` (requests per second).
pub(crate) fn settles(
    run: &Run,
    w: Duration,
    t0: Duration,
    deadline: Duration,
    end: Duration,
    (floor, floor_from): (f64, Duration),
    bar: impl Fn(&Summary) -> bool,
) -> Verdict {
    let step = ms(100);
    let mut first = None;
    let mut a = t0;
    while a <= t0 + deadline && a + w <= end {
        if std::env::var_os("MATRIX_DEBUG").is_some() {
            let s = run.summary(a, a + w);
            eprintln!(
                "  window {:?}: goodput {:.0} p99 {:?}",
                a,
                s.goodput_rps(),
                s.p99
            );
        }
        if bar(&run.summary(a, a + w)) {
            first = Some(a);
            break;
        }
        a += step;
    }
    let (mut later, mut good) = (0u32, 0u32);
    let (mut worst_goodput, mut worst_p99) = (f64::MAX, Duration::ZERO);
    if let Some(f) = first {
        let mut b = f + w;
        while b + w <= end {
            let s = run.summary(b, b + w);
            later += 1;
            if bar(&s) {
                good += 1;
            }
            worst_goodput = worst_goodput.min(s.goodput_rps());
            worst_p99 = worst_p99.max(s.p99.unwrap_or_default());
            b += w;
        }
    }
    let mut floor_ok = true;
    let mut lowest = f64::MAX;
    let mut b = floor_from;
    while b + w <= end {
        let g = run.summary(b, b + w).goodput_rps();
        lowest = lowest.min(g);
        floor_ok &= g >= floor;
        b += w;
    }
    let frac = if later == 0 {
        0.0
    } else {
        f64::from(good) / f64::from(later)
    };
    let pass = first.is_some() && later > 0 && frac >= 0.9 && floor_ok;
    let settled = first.map_or("never".to_owned(), |f| {
        format!("{:.1}s", (f - t0).as_secs_f64())
    });
    Verdict {
        pass,
        figures: format!(
            "settled {settled}, {good}/{later} later windows ok, worst goodput {:.0}, worst p99 {}ms, lowest {:.0}",
            if worst_goodput == f64::MAX {
                0.0
            } else {
                worst_goodput
            },
            worst_p99.as_millis(),
            if lowest == f64::MAX { 0.0 } else { lowest },
        ),
    }
}
