//! A fixed-bucket latency histogram for the request path, and the Prometheus text it renders.
//!
//! Written by hand rather than taken from a `metrics` recorder because the request path must
//! stay free of locks and allocation: a recorder's `histogram!` handle either looks its series
//! up in a map (a lock or a hash per call) or keeps every sample until the next scrape (an
//! allocation, and memory that grows with the request rate). Here each histogram is built once
//! (per route and status class, per endpoint, per admission class), held in the snapshot, and a
//! request costs one `fetch_add` on its bucket and one on the sum, both in its own core's shard.
//!
//! Buckets are the same for every histogram: 100 µs to 10 s in 1-2.5-5 steps, so sub-millisecond
//! cache hits and multi-second upstreams both land in a bucket that tells them apart, and any
//! two histograms can be merged (a cluster's figure is the sum of its routes').
//!
//! Ground rules: a shard's cells are only ever incremented (`Relaxed`, statistics); readers sum
//! the shards, so a snapshot taken under load may miss the request being recorded, never more.

use crossbeam_utils::CachePadded;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the finite buckets, in microseconds (the last bucket, `+Inf`, has none).
pub(crate) const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets, the `+Inf` one included.
pub(crate) const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The most shards a histogram gets: enough to keep cores apart on a typical host without
/// making a histogram per route and class cost a lot of memory on a very large one.
const MAX_SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A latency histogram with the fixed [`BOUNDS_US`] buckets, sharded per core.
#[derive(Debug)]
pub(crate) struct Histogram {
    shards: Box<[CachePadded<Shard>]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket a duration of `us` microseconds falls in: the first whose bound is `>= us`.
pub(crate) fn bucket_of(us: u64) -> usize {
    BOUNDS_US.partition_point(|&b| b < us)
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        let n = tollgate_core::counter::shard_count().min(MAX_SHARDS);
        Self {
            shards: (0..n).map(|_| CachePadded::new(Shard::default())).collect(),
        }
    }

    /// Records one observation of `d`.
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // `shards.len()` is a power of two (`shard_count` is, and so is MAX_SHARDS).
        let shard = &self.shards[tollgate_core::counter::shard_index() & (self.shards.len() - 1)];
        // Relaxed: statistics; a reader summing shards mid-update is off by this one sample.
        shard.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sums the shards.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut out = HistogramSnapshot::default();
        for s in self.shards.iter() {
            for (o, b) in out.buckets.iter_mut().zip(&s.buckets) {
                // Relaxed: see `record`.
                *o += b.load(Ordering::Relaxed);
            }
            out.sum_us += s.sum_us.load(Ordering::Relaxed);
        }
        out
    }
}

/// A histogram's counts at one moment: per bucket (not cumulative) and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    /// Observations per bucket; index `i < 16` holds those `<= BOUNDS_US[i]` and above the
    /// bound before; the last holds the rest.
    pub buckets: [u64; BUCKETS],
    /// Sum of observations, microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts (merging two histograms).
    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// What was recorded since `earlier` (a snapshot of the same histogram).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.buckets.iter_mut().zip(&earlier.buckets) {
            *a = a.saturating_sub(*b);
        }
        out.sum_us = out.sum_us.saturating_sub(earlier.sum_us);
        out
    }

    /// The `q` quantile (0..=1) in seconds, estimated as Prometheus' `histogram_quantile`
    /// does: linear within the bucket that holds it, from the bucket's lower bound (0 for the
    /// first). One in the `+Inf` bucket reads as the largest finite bound. `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS_US.get(i) else {
                    return Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64 / 1e6);
                };
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below += n;
        }
        Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64 / 1e6)
    }

    /// Appends this histogram's `_bucket`, `_sum` and `_count` lines for `name` with the
    /// label pairs `labels` (values escaped here); the `# TYPE` line is the caller's.
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut ls = String::new();
        for (k, v) in labels {
            let _ = write!(ls, "{k}=\"{}\",", escape(v));
        }
        let mut cum = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cum += n;
            match BOUNDS_US.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{{ls}le=\"{}\"}} {cum}", *b as f64 / 1e6);
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{ls}le=\"+Inf\"}} {cum}");
                }
            }
        }
        let ls = ls.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{ls}}} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{ls}}} {cum}");
    }
}

/// A label value escaped for the Prometheus text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Latency histograms by response status class: index 0 = 1xx ... 4 = 5xx.
#[derive(Debug, Default)]
pub(crate) struct ByClass(pub [Histogram; 5]);

/// The status classes' labels, by [`ByClass`] index.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl ByClass {
    /// Records `d` under `status`'s class.
    #[inline]
    pub(crate) fn record(&self, status: u16, d: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.0[class].record(d);
    }

    /// Every class's snapshot.
    pub(crate) fn snapshot(&self) -> [HistogramSnapshot; 5] {
        std::array::from_fn(|i| self.0[i].snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn bucket_edges_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(250), 1);
        assert_eq!(bucket_of(1_000), 3);
        assert_eq!(bucket_of(1_001), 4);
        assert_eq!(bucket_of(10_000_000), 15);
        assert_eq!(bucket_of(10_000_001), 16);
        assert_eq!(bucket_of(u64::MAX), 16);
    }

    #[test]
    fn records_into_buckets_and_sum() {
        let h = Histogram::new();
        h.record(us(50));
        h.record(us(100));
        h.record(us(3_000));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(s.buckets[16], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 50 + 100 + 3_000 + 60_000_000);
    }

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        let mut s = HistogramSnapshot::default();
        assert_eq!(s.quantile(0.5), None);
        // 10 in (1ms, 2.5ms]: the median is half way through that bucket.
        s.buckets[4] = 10;
        let p50 = s.quantile(0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        assert!((s.quantile(1.0).unwrap() - 0.0025).abs() < 1e-9);
        // 90 fast ones (<= 100 µs) and 10 slow ones (5..10 s]: p50 is fast, p99 is slow.
        let mut s = HistogramSnapshot::default();
        s.buckets[0] = 90;
        s.buckets[15] = 10;
        assert!(s.quantile(0.5).unwrap() <= 0.0001);
        let p99 = s.quantile(0.99).unwrap();
        assert!((5.0..=10.0).contains(&p99), "{p99}");
        // Beyond the last bound reads as the last bound.
        let mut s = HistogramSnapshot::default();
        s.buckets[16] = 1;
        assert_eq!(s.quantile(0.5), Some(10.0));
    }

    #[test]
    fn since_and_merge_are_inverse() {
        let h = Histogram::new();
        h.record(us(10));
        let a = h.snapshot();
        h.record(us(700));
        h.record(us(700));
        let b = h.snapshot();
        let d = b.since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.buckets[3], 2);
        let mut m = a;
        m.merge(&d);
        assert_eq!(m, b);
    }

    #[test]
    fn renders_cumulative_buckets() {
        let h = Histogram::new();
        h.record(us(200));
        h.record(us(2_000_000));
        let mut out = String::new();
        h.snapshot()
            .render(&mut out, "x_seconds", &[("route", "a\"b")]);
        assert!(
            out.contains("x_seconds_bucket{route=\"a\\\"b\",le=\"0.0001\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"a\\\"b\",le=\"0.00025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"a\\\"b\",le=\"2.5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{route=\"a\\\"b\"} 2.0002\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{route=\"a\\\"b\"} 2\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), BUCKETS + 2);
    }

    #[test]
    fn by_class_files_by_status() {
        let h = ByClass::default();
        h.record(204, us(1));
        h.record(503, us(1));
        h.record(99, us(1));
        let s = h.snapshot();
        assert_eq!(s[1].count(), 1);
        assert_eq!(s[4].count(), 1);
        assert_eq!(s[0].count(), 1);
    }
}
