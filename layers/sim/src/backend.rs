//! A backend with a fixed number of workers and a FIFO queue in front of them.
//!
//! The model is an M/G/k queue computed in closed form: when a request arrives at time `t`,
//! the backend takes the worker that frees up first (`f`), starts the request at `max(t, f)`,
//! draws its service time `s` and answers at `max(t, f) + s` (plus the optional network delay).
//! Nothing is polled while a request waits: the response future is one tokio `Sleep`, so under
//! paused time a simulated minute costs milliseconds.
//!
//! Assignments are final when a request arrives: a request that is dropped by its caller still
//! occupies its worker (a real server does not notice either), and workers added later do not
//! take over requests already queued.

use crate::request::{SimError, SimRequest, SimResponse};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// How long a worker takes to serve one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Always the same.
    Constant(Duration),
    /// Uniform between `min` and `max` (inclusive).
    Uniform {
        /// Shortest service time.
        min: Duration,
        /// Longest service time.
        max: Duration,
    },
    /// Exponentially distributed with the given mean (the "M" of M/M/k).
    Exponential {
        /// Mean service time.
        mean: Duration,
    },
    /// Log-normal with the given mean: `exp(mu + sigma * Z)` for a standard normal `Z`, with
    /// `mu` chosen so the mean is `mean` (a right-skewed, heavy-ish tail, typical of real
    /// services).
    LogNormal {
        /// Mean service time.
        mean: Duration,
        /// Standard deviation of the underlying normal (0.5 is a moderate tail: p99 about
        /// 2.8x the median).
        sigma: f64,
    },
    /// `fast` most of the time, `slow` with probability `slow_fraction` (a tail).
    Bimodal {
        /// The usual service time.
        fast: Duration,
        /// The occasional slow service time.
        slow: Duration,
        /// Probability of `slow`, in `[0, 1]`.
        slow_fraction: f64,
    },
}

impl From<Duration> for ServiceTime {
    fn from(d: Duration) -> Self {
        ServiceTime::Constant(d)
    }
}

impl ServiceTime {
    /// The mean of the distribution.
    pub fn mean(&self) -> Duration {
        match *self {
            ServiceTime::Constant(d) => d,
            ServiceTime::Uniform { min, max } => (min + max) / 2,
            ServiceTime::Exponential { mean } => mean,
            ServiceTime::LogNormal { mean, .. } => mean,
            ServiceTime::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => Duration::from_secs_f64(
                fast.as_secs_f64() * (1.0 - slow_fraction) + slow.as_secs_f64() * slow_fraction,
            ),
        }
    }

    /// The coefficient of variation (standard deviation / mean) of the distribution.
    pub fn cv(&self) -> f64 {
        let mean = self.mean().as_secs_f64();
        if mean <= 0.0 {
            return 0.0;
        }
        let var = match *self {
            ServiceTime::Constant(_) => 0.0,
            ServiceTime::Uniform { min, max } => {
                let w = max.as_secs_f64() - min.as_secs_f64();
                w * w / 12.0
            }
            ServiceTime::Exponential { mean } => mean.as_secs_f64().powi(2),
            ServiceTime::LogNormal { mean, sigma } => {
                mean.as_secs_f64().powi(2) * ((sigma * sigma).exp() - 1.0)
            }
            ServiceTime::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                let (f, s) = (fast.as_secs_f64(), slow.as_secs_f64());
                f * f * (1.0 - slow_fraction) + s * s * slow_fraction - mean * mean
            }
        };
        var.max(0.0).sqrt() / mean
    }

    /// The `q` quantile (`0..=1`) of the distribution, estimated from `n` seeded draws
    /// (exact for `Constant`).
    pub fn quantile(&self, q: f64, n: usize, seed: u64) -> Duration {
        if let ServiceTime::Constant(d) = *self {
            return d;
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut v: Vec<Duration> = (0..n.max(1)).map(|_| self.sample(&mut rng)).collect();
        v.sort_unstable();
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }

    /// Draws one service time.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            ServiceTime::Constant(d) => d,
            ServiceTime::Uniform { min, max } => {
                let (lo, hi) = (min.as_nanos() as u64, max.as_nanos() as u64);
                Duration::from_nanos(if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                })
            }
            ServiceTime::Exponential { mean } => {
                let u: f64 = rng.random::<f64>();
                Duration::from_secs_f64(-mean.as_secs_f64() * (1.0 - u).ln())
            }
            ServiceTime::LogNormal { mean, sigma } => {
                // Box-Muller: one standard normal from two uniforms.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let mu = mean.as_secs_f64().ln() - sigma * sigma / 2.0;
                Duration::from_secs_f64((mu + sigma * z).exp())
            }
            ServiceTime::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                if rng.random::<f64>() < slow_fraction {
                    slow
                } else {
                    fast
                }
            }
        }
    }
}

/// A change to a backend, applied at a scheduled time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Set the number of workers. Removed workers finish their current request first.
    Workers(usize),
    /// Set the service-time distribution for requests arriving from then on.
    ServiceTime(ServiceTime),
    /// Set the failure rate (probability in `[0, 1]`) for requests arriving from then on.
    FailureRate(f64),
}

/// Counters of one backend, from [`SimBackend::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendStats {
    /// Workers right now.
    pub workers: usize,
    /// Requests waiting for a worker right now.
    pub queued: usize,
    /// Requests accepted and not yet answered (queued or in service) right now.
    pub outstanding: usize,
    /// Requests accepted so far (served or still to be served).
    pub accepted: u64,
    /// Accepted requests that were (or will be) answered with [`SimError::Failed`].
    pub failed: u64,
    /// Requests refused on arrival ([`SimError::Unavailable`] or [`SimError::QueueFull`]).
    pub refused: u64,
    /// The most requests ever waiting for a worker at once.
    pub max_queued: usize,
    /// The most requests ever outstanding at once.
    pub max_outstanding: usize,
}

#[derive(Debug)]
struct State {
    start: Instant,
    id: usize,
    /// When each worker is next free (one entry per worker).
    free_at: BinaryHeap<Reverse<Instant>>,
    /// Start times of accepted requests that may not have started yet (non-decreasing).
    starts: VecDeque<Instant>,
    /// Answer times of accepted requests that may not be answered yet.
    ends: BinaryHeap<Reverse<Instant>>,
    service_time: ServiceTime,
    failure_rate: f64,
    network_delay: Duration,
    queue_limit: Option<usize>,
    schedule: Vec<(Instant, Change)>,
    rng: SmallRng,
    stats: BackendStats,
}

impl State {
    fn advance(&mut self, now: Instant) {
        // Apply every change due by now, in time order (stable for equal times).
        while let Some(&(at, change)) = self.schedule.first() {
            if at > now {
                break;
            }
            self.schedule.remove(0);
            match change {
                Change::Workers(n) => {
                    let cur = self.free_at.len();
                    if n > cur {
                        self.free_at
                            .extend(std::iter::repeat_n(Reverse(at), n - cur));
                    } else {
                        for _ in n..cur {
                            self.free_at.pop();
                        }
                    }
                }
                Change::ServiceTime(st) => self.service_time = st,
                Change::FailureRate(r) => self.failure_rate = r,
            }
        }
        while self.starts.front().is_some_and(|&s| s <= now) {
            self.starts.pop_front();
        }
        while self.ends.peek().is_some_and(|&Reverse(e)| e <= now) {
            self.ends.pop();
        }
    }

    fn admit(
        &mut self,
        req: &SimRequest,
        now: Instant,
    ) -> (Instant, Result<SimResponse, SimError>) {
        self.advance(now);
        let Some(Reverse(free)) = self.free_at.pop() else {
            self.stats.refused += 1;
            return (now, Err(SimError::Unavailable));
        };
        let start = free.max(now);
        if start > now
            && self
                .queue_limit
                .is_some_and(|limit| self.starts.len() >= limit)
        {
            self.free_at.push(Reverse(free));
            self.stats.refused += 1;
            return (now, Err(SimError::QueueFull));
        }
        let service = self.service_time.sample(&mut self.rng);
        let end = start + service;
        self.free_at.push(Reverse(end));
        if start > now {
            self.starts.push_back(start);
        }
        let done = end + self.network_delay;
        self.ends.push(Reverse(done));
        self.stats.accepted += 1;
        self.stats.max_queued = self.stats.max_queued.max(self.starts.len());
        self.stats.max_outstanding = self.stats.max_outstanding.max(self.ends.len());
        let failed = self.failure_rate > 0.0 && self.rng.random::<f64>() < self.failure_rate;
        if failed {
            self.stats.failed += 1;
            return (done, Err(SimError::Failed));
        }
        let res = SimResponse {
            id: req.id,
            class: req.class,
            backend: self.id,
            queued: start - now,
            service,
        };
        (done, Ok(res))
    }
}

/// A simulated backend: `workers` servers behind a FIFO queue. A [`Service`] of
/// [`SimRequest`]; clones share the same workers and queue.
///
/// Always ready: an open-loop backend queues instead of pushing back, like most real servers.
#[derive(Debug, Clone)]
pub struct SimBackend {
    state: Arc<Mutex<State>>,
}

/// Builds a [`SimBackend`]; from [`SimBackend::builder`].
#[derive(Debug, Clone)]
pub struct SimBackendBuilder {
    id: usize,
    workers: usize,
    service_time: ServiceTime,
    failure_rate: f64,
    network_delay: Duration,
    queue_limit: Option<usize>,
    seed: u64,
}

impl Default for SimBackendBuilder {
    fn default() -> Self {
        Self {
            id: 0,
            workers: 10,
            service_time: ServiceTime::Constant(Duration::from_millis(10)),
            failure_rate: 0.0,
            network_delay: Duration::ZERO,
            queue_limit: None,
            seed: 0,
        }
    }
}

impl SimBackendBuilder {
    /// A number echoed in every [`SimResponse::backend`] (default 0), to tell backends apart.
    pub fn id(mut self, id: usize) -> Self {
        self.id = id;
        self
    }

    /// Number of workers (default 10). Zero makes every request fail with
    /// [`SimError::Unavailable`] until workers are added.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Service time per request (default 10 ms constant).
    pub fn service_time(mut self, service_time: impl Into<ServiceTime>) -> Self {
        self.service_time = service_time.into();
        self
    }

    /// Probability in `[0, 1]` that a served request fails with [`SimError::Failed`]
    /// (default 0). Failures take their full service time.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Extra delay added to every answer without occupying a worker (default 0): the network.
    pub fn network_delay(mut self, delay: Duration) -> Self {
        self.network_delay = delay;
        self
    }

    /// Most requests waiting for a worker (default unbounded); more are refused with
    /// [`SimError::QueueFull`].
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = Some(limit);
        self
    }

    /// Seed of the backend's random draws (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the backend; scheduled times are measured from now (tokio time).
    ///
    /// # Panics
    ///
    /// If the failure rate is not in `[0, 1]`.
    pub fn build(self) -> SimBackend {
        assert!(
            (0.0..=1.0).contains(&self.failure_rate),
            "failure_rate must be in [0, 1]"
        );
        let start = Instant::now();
        let state = State {
            start,
            id: self.id,
            free_at: std::iter::repeat_n(Reverse(start), self.workers).collect(),
            starts: VecDeque::new(),
            ends: BinaryHeap::new(),
            service_time: self.service_time,
            failure_rate: self.failure_rate,
            network_delay: self.network_delay,
            queue_limit: self.queue_limit,
            schedule: Vec::new(),
            rng: SmallRng::seed_from_u64(self.seed),
            stats: BackendStats::default(),
        };
        SimBackend {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

impl SimBackend {
    /// A builder with the defaults: 10 workers, 10 ms constant service time, no failures,
    /// seed 0 (capacity 1000 requests per second).
    pub fn builder() -> SimBackendBuilder {
        SimBackendBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the model half-updated in a way that matters to a test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `change` at `at` after the backend was built. Changes at equal times apply in
    /// the order they were scheduled.
    pub fn schedule(&self, at: Duration, change: Change) {
        let mut s = self.lock();
        let when = s.start + at;
        let pos = s.schedule.partition_point(|(t, _)| *t <= when);
        s.schedule.insert(pos, (when, change));
    }

    /// Sets the number of workers at `at` after the backend was built.
    pub fn set_capacity_at(&self, at: Duration, workers: usize) {
        self.schedule(at, Change::Workers(workers));
    }

    /// Sets the service-time distribution at `at` after the backend was built.
    pub fn set_service_time_at(&self, at: Duration, service_time: impl Into<ServiceTime>) {
        self.schedule(at, Change::ServiceTime(service_time.into()));
    }

    /// Sets the failure rate at `at` after the backend was built.
    pub fn set_failure_rate_at(&self, at: Duration, rate: f64) {
        self.schedule(at, Change::FailureRate(rate));
    }

    /// The counters as of now.
    pub fn stats(&self) -> BackendStats {
        let mut s = self.lock();
        s.advance(Instant::now());
        BackendStats {
            workers: s.free_at.len(),
            queued: s.starts.len(),
            outstanding: s.ends.len(),
            ..s.stats
        }
    }

    /// Throughput the backend sustains right now: workers / mean service time, per second.
    pub fn capacity_rps(&self) -> f64 {
        let mut s = self.lock();
        s.advance(Instant::now());
        s.free_at.len() as f64 / s.service_time.mean().as_secs_f64()
    }

    /// When the backend was built; scheduled changes are relative to it.
    pub fn started_at(&self) -> Instant {
        self.lock().start
    }
}

impl Service<SimRequest> for SimBackend {
    type Response = SimResponse;
    type Error = SimError;
    type Future = SimFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SimRequest) -> SimFuture {
        let now = Instant::now();
        let (done, result) = self.lock().admit(&req, now);
        SimFuture {
            sleep: tokio::time::sleep_until(done),
            result: Some(result),
        }
    }
}

/// The answer of a [`SimBackend`], ready at the simulated completion time.
#[pin_project::pin_project]
#[derive(Debug)]
pub struct SimFuture {
    #[pin]
    sleep: Sleep,
    result: Option<Result<SimResponse, SimError>>,
}

impl Future for SimFuture {
    type Output = Result<SimResponse, SimError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        std::task::ready!(this.sleep.poll(cx));
        Poll::Ready(
            this.result
                .take()
                .expect("SimFuture polled after completion"),
        )
    }
}
