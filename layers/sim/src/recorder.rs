//! Recording what happened to every request, in fixed time windows.

use crate::request::{SimError, SimRequest};
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::error::{Closed, DeadlineExceeded, Overloaded, RateLimited, is_caused_by};

/// How one request ended, as the [`Recorder`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// The service answered `Ok`.
    Ok,
    /// The service answered an error that is not a rejection (the backend failed).
    Error,
    /// A layer refused the request; the kind names the rejection (`"overloaded"`).
    Rejected(&'static str),
    /// The client gave up (the load generator's `client_timeout`) and dropped the request.
    TimedOut,
}

/// Counts over one window or range, for all classes or one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Start of the range, from the recorder's start.
    pub from: Duration,
    /// End of the range (exclusive), from the recorder's start.
    pub to: Duration,
    /// Requests issued in the range.
    pub issued: u64,
    /// Requests answered `Ok` in the range (by completion time).
    pub ok: u64,
    /// Of `ok`, those answered after their deadline.
    pub late: u64,
    /// Requests answered with an error that is not a rejection, client timeouts included.
    pub errors: u64,
    /// Of `errors`, client timeouts.
    pub timeouts: u64,
    /// Requests refused by a layer.
    pub rejected: u64,
    /// `rejected`, split by kind.
    pub rejected_by_kind: BTreeMap<&'static str, u64>,
    /// Latency percentiles of `ok` answers (issue to answer, waiting included).
    pub p50: Option<Duration>,
    /// 99th percentile latency of `ok` answers.
    pub p99: Option<Duration>,
    /// 99.9th percentile latency of `ok` answers.
    pub p999: Option<Duration>,
    /// Largest latency of an `ok` answer.
    pub max: Option<Duration>,
}

impl Summary {
    /// Length of the range in seconds.
    pub fn seconds(&self) -> f64 {
        (self.to - self.from).as_secs_f64()
    }

    /// `Ok` answers within their deadline, per second.
    pub fn goodput_rps(&self) -> f64 {
        (self.ok - self.late) as f64 / self.seconds()
    }

    /// Requests issued per second.
    pub fn offered_rps(&self) -> f64 {
        self.issued as f64 / self.seconds()
    }

    /// Requests finished in the range: ok + errors + rejected.
    pub fn finished(&self) -> u64 {
        self.ok + self.errors + self.rejected
    }

    /// Rejected requests as a fraction of finished ones (0 when none finished).
    pub fn rejection_rate(&self) -> f64 {
        let n = self.finished();
        if n == 0 {
            0.0
        } else {
            self.rejected as f64 / n as f64
        }
    }

    /// Whether every issued request is accounted for: issued = ok + errors + rejected. Holds for
    /// a whole run once the generator returned.
    pub fn ledger_balanced(&self) -> bool {
        self.issued == self.finished()
    }
}

#[derive(Debug, Default, Clone)]
struct Counts {
    issued: u64,
    ok: u64,
    late: u64,
    errors: u64,
    timeouts: u64,
    rejected: BTreeMap<&'static str, u64>,
    latencies_us: Vec<u32>,
}

impl Counts {
    fn add_to(&self, s: &mut Summary, lat: &mut Vec<u32>) {
        s.issued += self.issued;
        s.ok += self.ok;
        s.late += self.late;
        s.errors += self.errors;
        s.timeouts += self.timeouts;
        for (k, v) in &self.rejected {
            s.rejected += v;
            *s.rejected_by_kind.entry(k).or_default() += v;
        }
        lat.extend_from_slice(&self.latencies_us);
    }
}

type Matcher = fn(&(dyn Error + 'static)) -> bool;

#[derive(Debug)]
struct Inner {
    start: Instant,
    window: Duration,
    /// windows[i][class]
    windows: Vec<BTreeMap<u8, Counts>>,
    rejections: Vec<(&'static str, Matcher)>,
    outstanding: i64,
    /// gauges[i][name] = (sum, samples) of the values recorded in window i.
    gauges: Vec<BTreeMap<&'static str, (f64, u32)>>,
}

impl Inner {
    fn counts(&mut self, at: Instant, class: u8) -> &mut Counts {
        let i =
            (at.saturating_duration_since(self.start).as_nanos() / self.window.as_nanos()) as usize;
        if self.windows.len() <= i {
            self.windows.resize_with(i + 1, BTreeMap::new);
        }
        self.windows[i].entry(class).or_default()
    }
}

/// Collects per-window, per-class counts and latencies. Clones share the same record.
///
/// Errors are sorted into rejections and failures by the matchers given to
/// [`Recorder::rejection`]; the defaults recognise tollgate-core's [`Overloaded`]
/// (`"overloaded"`), [`RateLimited`] (`"rate_limited"`), [`DeadlineExceeded`] (`"deadline"`),
/// [`Closed`] (`"closed"`) and the backend's [`SimError::QueueFull`] (`"backend_queue_full"`)
/// anywhere in the error's `source()` chain. Anything else is an error.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn is_queue_full(e: &(dyn Error + 'static)) -> bool {
    tollgate_core::error::find_cause::<SimError>(e) == Some(&SimError::QueueFull)
}

impl Recorder {
    /// A recorder starting now, with 100 ms windows.
    pub fn new() -> Self {
        Self::with_window(Duration::from_millis(100))
    }

    /// A recorder starting now, with windows of `window`.
    ///
    /// # Panics
    ///
    /// If `window` is zero.
    pub fn with_window(window: Duration) -> Self {
        assert!(!window.is_zero(), "window must be positive");
        let rejections: Vec<(&'static str, Matcher)> = vec![
            ("overloaded", is_caused_by::<Overloaded>),
            ("rate_limited", is_caused_by::<RateLimited>),
            ("deadline", is_caused_by::<DeadlineExceeded>),
            ("closed", is_caused_by::<Closed>),
            ("backend_queue_full", is_queue_full),
        ];
        let inner = Inner {
            start: Instant::now(),
            window,
            windows: Vec::new(),
            rejections,
            outstanding: 0,
            gauges: Vec::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Counts errors caused by an `E` (anywhere in the `source()` chain) as rejections of
    /// `kind`. Matchers added later are tried first.
    pub fn rejection<E: Error + 'static>(self, kind: &'static str) -> Self {
        self.lock().rejections.insert(0, (kind, is_caused_by::<E>));
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.lock().window
    }

    /// When the recorder started; ranges are measured from it.
    pub fn started_at(&self) -> Instant {
        self.lock().start
    }

    /// Sorts an error into a rejection kind or a plain error.
    pub fn classify(&self, err: &(dyn Error + 'static)) -> Completion {
        let inner = self.lock();
        for (kind, matches) in &inner.rejections {
            if matches(err) {
                return Completion::Rejected(kind);
            }
        }
        Completion::Error
    }

    /// Records that `req` was issued (now).
    pub fn issued(&self, req: &SimRequest) {
        let mut inner = self.lock();
        inner.outstanding += 1;
        inner.counts(Instant::now(), req.class).issued += 1;
    }

    /// Records that `req` finished now with `completion`.
    pub fn finished(&self, req: &SimRequest, completion: Completion) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.outstanding -= 1;
        let c = inner.counts(now, req.class);
        match completion {
            Completion::Ok => {
                c.ok += 1;
                if req.deadline.is_some_and(|d| now > d) {
                    c.late += 1;
                }
                let us = (now - req.issued_at).as_micros().min(u32::MAX as u128) as u32;
                c.latencies_us.push(us);
            }
            Completion::Error => c.errors += 1,
            Completion::TimedOut => {
                c.errors += 1;
                c.timeouts += 1;
            }
            Completion::Rejected(kind) => *c.rejected.entry(kind).or_default() += 1,
        }
    }

    /// Records one sample of a gauge (a limit, requests in flight) now; the timeline shows the
    /// mean of each window's samples.
    pub fn gauge(&self, name: &'static str, value: f64) {
        let mut inner = self.lock();
        let i = (Instant::now()
            .saturating_duration_since(inner.start)
            .as_nanos()
            / inner.window.as_nanos()) as usize;
        if inner.gauges.len() <= i {
            inner.gauges.resize_with(i + 1, BTreeMap::new);
        }
        let g = inner.gauges[i].entry(name).or_insert((0.0, 0));
        g.0 += value;
        g.1 += 1;
    }

    /// The mean of the samples of gauge `name` in each window (`None` where there were none),
    /// from the first window to the last with anything recorded.
    pub fn gauge_windows(&self, name: &str) -> Vec<Option<f64>> {
        let inner = self.lock();
        let n = inner.windows.len().max(inner.gauges.len());
        (0..n)
            .map(|i| {
                inner
                    .gauges
                    .get(i)
                    .and_then(|g| g.get(name))
                    .map(|&(sum, k)| sum / f64::from(k.max(1)))
            })
            .collect()
    }

    /// Requests issued and not finished yet.
    pub fn outstanding(&self) -> u64 {
        self.lock().outstanding.max(0) as u64
    }

    fn summarise(&self, class: Option<u8>, from: Duration, to: Duration) -> Summary {
        let inner = self.lock();
        let w = inner.window.as_nanos();
        let first = (from.as_nanos() / w) as usize;
        let last = to.as_nanos().div_ceil(w) as usize;
        let mut s = Summary {
            from: inner.window * first as u32,
            to: inner.window * last.max(first + 1) as u32,
            ..Summary::default()
        };
        let mut lat = Vec::new();
        for win in inner.windows.iter().take(last).skip(first) {
            for (cl, counts) in win {
                if class.is_none_or(|c| c == *cl) {
                    counts.add_to(&mut s, &mut lat);
                }
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| -> Option<Duration> {
            if lat.is_empty() {
                return None;
            }
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            Some(Duration::from_micros(u64::from(lat[i])))
        };
        s.p50 = pct(0.50);
        s.p99 = pct(0.99);
        s.p999 = pct(0.999);
        s.max = lat.last().map(|&us| Duration::from_micros(u64::from(us)));
        s
    }

    /// Everything in the windows overlapping `[from, to)` (times from the recorder's start,
    /// widened to whole windows).
    pub fn summary(&self, from: Duration, to: Duration) -> Summary {
        self.summarise(None, from, to)
    }

    /// Like [`summary`](Self::summary), for one class only.
    pub fn summary_class(&self, class: u8, from: Duration, to: Duration) -> Summary {
        self.summarise(Some(class), from, to)
    }

    /// Everything recorded so far.
    pub fn total(&self) -> Summary {
        let end = {
            let inner = self.lock();
            inner.window * inner.windows.len() as u32
        };
        self.summary(Duration::ZERO, end)
    }

    /// One summary per window, from the first to the last with anything recorded.
    pub fn windows(&self) -> Vec<Summary> {
        let (n, w) = {
            let inner = self.lock();
            (inner.windows.len() as u32, inner.window)
        };
        (0..n).map(|i| self.summary(w * i, w * (i + 1))).collect()
    }
}
