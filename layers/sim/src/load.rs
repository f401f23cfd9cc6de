//! An open-loop load generator: requests arrive on schedule whether or not earlier ones were
//! answered, as they do from many independent clients.

use crate::recorder::{Completion, Recorder};
use crate::request::SimRequest;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower_service::Service;

/// Offered load over time, in requests per second, as a function of the time since the run
/// started.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// The same rate throughout.
    Constant(f64),
    /// `before` until `at`, then `after`.
    Step {
        /// Rate before the step.
        before: f64,
        /// Rate from the step on.
        after: f64,
        /// When the step happens.
        at: Duration,
    },
    /// From `from` to `to` linearly over `over`, then `to`.
    Ramp {
        /// Starting rate.
        from: f64,
        /// Final rate.
        to: f64,
        /// How long the ramp lasts.
        over: Duration,
    },
    /// Piecewise constant: each `(start, rate)` holds from `start` until the next one's start
    /// (sorted by start; before the first, the rate is 0).
    Steps(Vec<(Duration, f64)>),
}

impl Profile {
    /// The rate at `t` after the start, in requests per second.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Profile::Constant(r) => *r,
            Profile::Step { before, after, at } => {
                if t < *at {
                    *before
                } else {
                    *after
                }
            }
            Profile::Ramp { from, to, over } => {
                if over.is_zero() || t >= *over {
                    *to
                } else {
                    from + (to - from) * t.as_secs_f64() / over.as_secs_f64()
                }
            }
            Profile::Steps(steps) => steps
                .iter()
                .take_while(|(start, _)| *start <= t)
                .last()
                .map_or(0.0, |s| s.1),
        }
    }
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Evenly, `1 / rate` apart.
    Uniform,
    /// Exponential gaps with mean `1 / rate` (a Poisson process), drawn from the seed.
    #[default]
    Poisson,
}

/// Drives any `Service<SimRequest>` with an open-loop load and records what happens.
///
/// Each request is a client of its own: it clones the service, waits for `poll_ready`, calls it
/// and awaits the answer, all inside one task (no spawning), so a service that pushes back
/// through `poll_ready` delays that request only, never the arrivals.
#[derive(Debug, Clone)]
pub struct LoadGen {
    profile: Profile,
    duration: Duration,
    arrivals: Arrivals,
    seed: u64,
    classes: Vec<(u8, u32)>,
    keys: Option<u64>,
    tag: u32,
    first_id: u64,
    deadline: Option<Duration>,
    client_timeout: Option<Duration>,
}

/// What one run issued, from [`LoadGen::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Requests issued.
    pub issued: u64,
    /// The most requests outstanding at once (issued, not finished).
    pub max_outstanding: usize,
}

impl LoadGen {
    /// A generator offering `profile` for `duration`: Poisson arrivals, seed 0, class 0, no
    /// deadline, no client timeout.
    pub fn new(profile: Profile, duration: Duration) -> Self {
        Self {
            profile,
            duration,
            arrivals: Arrivals::Poisson,
            seed: 0,
            classes: vec![(0, 1)],
            keys: None,
            tag: 0,
            first_id: 0,
            deadline: None,
            client_timeout: None,
        }
    }

    /// Constant `rps` for `duration`.
    pub fn constant(rps: f64, duration: Duration) -> Self {
        Self::new(Profile::Constant(rps), duration)
    }

    /// How arrivals are spaced (default Poisson).
    pub fn arrivals(mut self, arrivals: Arrivals) -> Self {
        self.arrivals = arrivals;
        self
    }

    /// Seed for arrival gaps, classes and keys (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Class mix as `(class, weight)` pairs (default all class 0).
    ///
    /// # Panics
    ///
    /// If `classes` is empty or all weights are zero.
    pub fn classes(mut self, classes: &[(u8, u32)]) -> Self {
        assert!(
            classes.iter().any(|c| c.1 > 0),
            "classes need a positive weight"
        );
        self.classes = classes.to_vec();
        self
    }

    /// Draw each request's key uniformly from `0..keys` (default: the key is the id).
    pub fn keys(mut self, keys: u64) -> Self {
        self.keys = Some(keys.max(1));
        self
    }

    /// Value of every request's `tag` (default 0), to tell generators apart.
    pub fn tag(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }

    /// First request id (default 0), so concurrent generators issue distinct ids.
    pub fn first_id(mut self, id: u64) -> Self {
        self.first_id = id;
        self
    }

    /// Give every request a deadline `deadline` after it is issued (default none). `Ok` answers
    /// after it count as late and not as goodput.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Drop a request that is not answered within `timeout` of being issued, waiting for
    /// `poll_ready` included (default: wait for ever). Recorded as [`Completion::TimedOut`].
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = Some(timeout);
        self
    }

    /// The gap after an arrival at `t` (from the start), or `None` past the end.
    fn next_after(&self, t: Duration, rng: &mut SmallRng) -> Option<Duration> {
        // Find a positive rate, skipping idle stretches a millisecond at a time.
        let mut t = t;
        loop {
            if t >= self.duration {
                return None;
            }
            let rate = self.profile.rate_at(t);
            if rate > 0.0 {
                let gap = match self.arrivals {
                    Arrivals::Uniform => 1.0 / rate,
                    Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() / rate,
                };
                let next = t + Duration::from_secs_f64(gap);
                return (next < self.duration).then_some(next);
            }
            t += Duration::from_millis(1);
        }
    }

    fn class(&self, rng: &mut SmallRng) -> u8 {
        if self.classes.len() == 1 {
            return self.classes[0].0;
        }
        let total: u64 = self.classes.iter().map(|c| u64::from(c.1)).sum();
        let mut pick = rng.random_range(0..total);
        for &(class, w) in &self.classes {
            if pick < u64::from(w) {
                return class;
            }
            pick -= u64::from(w);
        }
        self.classes[0].0
    }

    /// Offers the load to `service`, recording into `recorder`, and returns when every request
    /// issued has finished.
    pub async fn run<S>(&self, service: S, recorder: &Recorder) -> RunStats
    where
        S: Service<SimRequest> + Clone,
        S::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let mut rng = SmallRng::seed_from_u64(self.seed);
        // The first arrival is at the start (for uniform) or one drawn gap in.
        let mut next = match self.arrivals {
            Arrivals::Uniform => (self.profile.rate_at(Duration::ZERO) > 0.0
                && !self.duration.is_zero())
            .then_some(Duration::ZERO)
            .or_else(|| self.next_after(Duration::ZERO, &mut rng)),
            Arrivals::Poisson => self.next_after(Duration::ZERO, &mut rng),
        };
        let mut id = self.first_id;
        let mut clients = FuturesUnordered::new();
        let mut stats = RunStats {
            issued: 0,
            max_outstanding: 0,
        };
        let mut timer = Box::pin(tokio::time::sleep_until(start));
        poll_fn(|cx| {
            loop {
                let now = Instant::now();
                while let Some(at) = next.filter(|at| start + *at <= now) {
                    let mut req = SimRequest::new(id);
                    id += 1;
                    req.class = self.class(&mut rng);
                    req.key = self.keys.map_or(req.id, |k| rng.random_range(0..k));
                    req.tag = self.tag;
                    req.deadline = self.deadline.map(|d| req.issued_at + d);
                    recorder.issued(&req);
                    stats.issued += 1;
                    clients.push(client(
                        service.clone(),
                        req,
                        recorder.clone(),
                        self.client_timeout,
                    ));
                    stats.max_outstanding = stats.max_outstanding.max(clients.len());
                    next = self.next_after(at, &mut rng);
                }
                while let Poll::Ready(Some(())) = clients.poll_next_unpin(cx) {}
                match next {
                    Some(at) => {
                        timer.as_mut().reset(start + at);
                        if timer.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    None if clients.is_empty() => return Poll::Ready(()),
                    None => return Poll::Pending,
                }
            }
        })
        .await;
        stats
    }
}

/// One request's life: wait for readiness, call, await the answer, record.
async fn client<S>(mut service: S, req: SimRequest, recorder: Recorder, timeout: Option<Duration>)
where
    S: Service<SimRequest>,
    S::Error: Into<BoxError>,
{
    let attempt = async {
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        service
            .call(req.clone())
            .await
            .map_err(Into::into)
            .map(drop)
    };
    let result: Option<Result<(), BoxError>> = match timeout {
        Some(t) => tokio::time::timeout_at(req.issued_at + t, attempt)
            .await
            .ok(),
        None => Some(attempt.await),
    };
    let completion = match result {
        None => Completion::TimedOut,
        Some(Ok(())) => Completion::Ok,
        Some(Err(e)) => recorder.classify(&*e),
    };
    recorder.finished(&req, completion);
}
