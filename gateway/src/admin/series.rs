//! The dashboard's recent history: once a second a sampler task reads the counters and
//! histograms and keeps what changed in a ring of one-second samples, served as JSON at
//! `/series` (`?since=T` for only the samples after second `T`).
//!
//! Each sample gives rates and quantiles over the last [`WINDOW`] seconds (one second alone
//! is too few requests for a useful p99 on a quiet route). The sampler and `/series` share the
//! ring behind a short-held lock; the request path never touches it.

use crate::histogram::HistogramSnapshot;
use crate::state::Shared;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Samples kept: five minutes at one a second.
pub(crate) const CAPACITY: usize = 300;

/// Seconds each sample's rates and quantiles are taken over.
pub(crate) const WINDOW: usize = 5;

/// A fixed-capacity ring: pushing onto a full one drops the oldest.
#[derive(Debug)]
pub(crate) struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    /// An empty ring holding at most `cap` items (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            items: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Adds `item`, dropping the oldest when full.
    pub(crate) fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Items, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter()
    }

    /// The newest item.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<&T> {
        self.items.back()
    }
}

/// Cumulative figures of one route, cluster or the whole gateway.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    latency: HistogramSnapshot,
    errors: u64,
    rejected: u64,
}

/// Cumulative figures of one admission class.
#[derive(Debug, Clone, Copy, Default)]
struct ClassTotals {
    admitted: u64,
    rejected: u64,
    shed: u64,
}

/// Everything the sampler reads, at one moment.
#[derive(Debug, Default)]
struct Reading {
    global: Totals,
    routes: BTreeMap<String, Totals>,
    clusters: BTreeMap<String, Totals>,
    classes: BTreeMap<String, ClassTotals>,
}

/// A route's, cluster's or the gateway's figures over a sample's window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Point {
    /// Requests answered per second.
    pub rps: f64,
    /// Median time to response head, milliseconds (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// Share of answers that were 5xx, 0..1.
    pub errors: f64,
    /// Requests refused by a layer, per second.
    pub rejected_ps: f64,
}

/// An admission class's figures over a sample's window, per second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ClassPoint {
    /// Admitted.
    pub admitted_ps: f64,
    /// Rejected for any reason.
    pub rejected_ps: f64,
    /// Shed (dropped for a higher class).
    pub shed_ps: f64,
}

/// One second's sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the gateway started.
    pub t: u64,
    /// The whole gateway.
    pub global: Point,
    /// By route key.
    pub routes: BTreeMap<String, Point>,
    /// By cluster name.
    pub clusters: BTreeMap<String, Point>,
    /// By `policy/class`.
    pub classes: BTreeMap<String, ClassPoint>,
}

/// The sampler's state: the last readings (for windows) and the ring of samples.
#[derive(Debug)]
pub(crate) struct Series {
    readings: VecDeque<(Instant, Reading)>,
    samples: Ring<Sample>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            readings: VecDeque::with_capacity(WINDOW + 1),
            samples: Ring::new(CAPACITY),
        }
    }
}

fn read(shared: &Shared) -> Reading {
    let snap = shared.current.load();
    let mut r = Reading::default();
    let by_class = shared.stats.duration.snapshot();
    for h in &by_class {
        r.global.latency.merge(h);
    }
    r.global.errors = by_class[4].count();
    r.global.rejected = shared.stats.rejected.sum().max(0) as u64;
    for p in &snap.route_plans {
        // A route's totals are its branches' (the clusters of a split), each also counted
        // in the cluster that served it.
        let mut t = Totals::default();
        for b in &p.branches {
            let by_class = b.stats.latency.snapshot();
            let mut bt = Totals::default();
            for h in &by_class {
                bt.latency.merge(h);
            }
            bt.errors = by_class[4].count();
            bt.rejected = b.stats.rejected.sum().max(0) as u64;
            let c = r
                .clusters
                .entry(snap.clusters[b.cluster].name.clone())
                .or_default();
            c.latency.merge(&bt.latency);
            c.errors += bt.errors;
            c.rejected += bt.rejected;
            t.latency.merge(&bt.latency);
            t.errors += bt.errors;
            t.rejected += bt.rejected;
        }
        r.routes.insert(p.key.clone(), t);
    }
    for c in &snap.clusters {
        r.clusters.entry(c.name.clone()).or_default();
    }
    for a in &snap.admission {
        for c in a.class_totals() {
            r.classes.insert(
                format!("{}/{}", a.name(), c.name),
                ClassTotals {
                    admitted: c.admitted,
                    rejected: c.rejected,
                    shed: c.shed,
                },
            );
        }
    }
    r
}

fn rate(now: u64, then: u64, secs: f64) -> f64 {
    now.saturating_sub(then) as f64 / secs
}

fn point(now: &Totals, then: Option<&Totals>, secs: f64) -> Point {
    let zero = Totals::default();
    let then = then.unwrap_or(&zero);
    let d = now.latency.since(&then.latency);
    let n = d.count();
    let ms = |q: f64| d.quantile(q).map(|s| (s * 1e6).round() / 1e3);
    Point {
        rps: n as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        errors: if n == 0 {
            0.0
        } else {
            now.errors.saturating_sub(then.errors) as f64 / n as f64
        },
        rejected_ps: rate(now.rejected, then.rejected, secs),
    }
}

impl Series {
    /// Adds `now`, read at `at` (`t` seconds after start), and a sample over the window since
    /// the oldest reading kept. The first reading makes no sample.
    fn record(&mut self, now: Reading, at: Instant, t: u64) {
        if let Some((then_at, then)) = self.readings.front() {
            let secs = at
                .saturating_duration_since(*then_at)
                .as_secs_f64()
                .max(1e-3);
            let pts = |a: &BTreeMap<String, Totals>, b: &BTreeMap<String, Totals>| {
                a.iter()
                    .map(|(k, v)| (k.clone(), point(v, b.get(k), secs)))
                    .collect()
            };
            let classes = now
                .classes
                .iter()
                .map(|(k, v)| {
                    let old = then.classes.get(k).copied().unwrap_or_default();
                    let p = ClassPoint {
                        admitted_ps: rate(v.admitted, old.admitted, secs),
                        rejected_ps: rate(v.rejected, old.rejected, secs),
                        shed_ps: rate(v.shed, old.shed, secs),
                    };
                    (k.clone(), p)
                })
                .collect();
            let sample = Sample {
                t,
                global: point(&now.global, Some(&then.global), secs),
                routes: pts(&now.routes, &then.routes),
                clusters: pts(&now.clusters, &then.clusters),
                classes,
            };
            self.samples.push(sample);
        }
        if self.readings.len() == WINDOW {
            self.readings.pop_front();
        }
        self.readings.push_back((at, now));
    }

    /// The samples after second `since` (all of them without it), oldest first.
    pub(crate) fn json(&self, since: Option<u64>) -> serde_json::Value {
        let samples: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| since.is_none_or(|t| s.t > t))
            .collect();
        serde_json::json!({
            "interval_s": 1,
            "window_s": WINDOW,
            "capacity": CAPACITY,
            "samples": samples,
        })
    }
}

/// Samples `shared` into `series` once a second, until the task is dropped.
pub(crate) async fn run(shared: Arc<Shared>, series: Arc<std::sync::Mutex<Series>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let at = every.tick().await;
        let t = shared.started.elapsed().as_secs();
        // Read outside the lock; only the push holds it.
        let reading = read(&shared);
        let mut s = series.lock().unwrap_or_else(|p| p.into_inner());
        s.record(reading, at, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = Ring::new(3);
        assert!(r.last().is_none());
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(r.last(), Some(&4));
        let mut one = Ring::new(0);
        one.push('a');
        one.push('b');
        assert_eq!(one.iter().copied().collect::<String>(), "b");
    }

    fn reading(route_reqs: u64, errors: u64, shed: u64) -> Reading {
        let h = Histogram::new();
        for _ in 0..route_reqs {
            h.record(Duration::from_micros(700));
        }
        let t = Totals {
            latency: h.snapshot(),
            errors,
            rejected: shed,
        };
        let mut r = Reading {
            global: t,
            ..Reading::default()
        };
        r.routes.insert("* /".into(), t);
        r.clusters.insert("c".into(), t);
        r.classes.insert(
            "p/low".into(),
            ClassTotals {
                admitted: route_reqs,
                rejected: shed,
                shed,
            },
        );
        r
    }

    #[tokio::test(start_paused = true)]
    async fn samples_are_rates_over_the_window() {
        let mut s = Series::default();
        let t0 = Instant::now();
        s.record(reading(0, 0, 0), t0, 0);
        assert_eq!(
            s.samples.iter().count(),
            0,
            "the first reading makes no sample"
        );
        s.record(reading(10, 1, 4), t0 + Duration::from_secs(1), 1);
        s.record(reading(30, 1, 4), t0 + Duration::from_secs(2), 2);
        let first = &s.samples.iter().next().unwrap();
        assert_eq!(first.routes["* /"].rps, 10.0);
        assert_eq!(first.routes["* /"].errors, 0.1);
        assert_eq!(first.classes["p/low"].shed_ps, 4.0);
        let p50 = first.clusters["c"].p50_ms.unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        // The second sample spans both seconds (the window holds the first reading still).
        let last = s.samples.last().unwrap();
        assert_eq!(last.global.rps, 15.0);
        assert_eq!(last.classes["p/low"].shed_ps, 2.0);
        // `since` returns only newer samples.
        let j = s.json(Some(1));
        assert_eq!(j["samples"].as_array().unwrap().len(), 1);
        assert_eq!(j["samples"][0]["t"], 2);
        // A route with no requests in the window has no quantiles.
        for i in 3..=8 {
            s.record(reading(30, 1, 4), t0 + Duration::from_secs(i), i);
        }
        let idle = s.samples.last().unwrap();
        assert_eq!(idle.routes["* /"].rps, 0.0);
        assert_eq!(idle.routes["* /"].p99_ms, None);
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut s = Series::default();
        let t0 = Instant::now();
        for i in 0..(CAPACITY as u64 + 20) {
            s.record(Reading::default(), t0 + Duration::from_secs(i), i);
        }
        assert_eq!(s.samples.iter().count(), CAPACITY);
        assert_eq!(s.samples.last().unwrap().t, CAPACITY as u64 + 19);
    }
}
