//! Closing a measurement window: the limit algorithm's update, run by whichever thread finds
//! the window due (never two at once), and the sampling rate that keeps clock reads rare.

use super::{Core, ShardStats, Updater, home};
use crate::algorithm::Window;
use std::cell::Cell;
use std::sync::TryLockError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

thread_local! {
    /// Requests this thread lets pass untimed before it times the next one.
    static SAMPLE_LEFT: Cell<u64> = const { Cell::new(0) };
}

impl Core {
    /// `now` in nanoseconds after the limiter's epoch.
    #[inline]
    pub(crate) fn nanos_since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.shared.epoch).as_nanos() as u64
    }

    /// Closes the window if it is due, unless another thread is already doing it.
    pub(crate) fn maybe_update(&self, now: Instant) {
        let s = &self.shared;
        // Relaxed: a hint; the decision is re-made under the lock.
        if self.nanos_since_epoch(now) < s.next_update.load(Ordering::Relaxed) {
            return;
        }
        let mut u = match s.updater.try_lock() {
            Ok(u) => u,
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        self.update_locked(&mut u, now, false);
    }

    /// Closes the current window now, whatever its length (for tests and fuzzing).
    pub(crate) fn force_update(&self) {
        let mut u = self
            .shared
            .updater
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.update_locked(&mut u, Instant::now(), true);
    }

    fn update_locked(&self, u: &mut Updater, now: Instant, force: bool) {
        let s = &self.shared;
        let c = &s.config;
        // Relaxed: statistics (ground rules).
        let samples: u64 = s
            .stats
            .iter()
            .map(|st| st.samples.load(Ordering::Relaxed))
            .sum();
        let elapsed = now.saturating_duration_since(u.window_start);
        let target = u
            .last_rtt
            .map_or(c.min_window, |r| r.mul_f64(c.window_rtts))
            .clamp(c.min_window, c.max_window);
        if !force
            && (elapsed < target
                || (samples < u64::from(c.min_window_samples) && elapsed < c.max_window))
        {
            let wait = if elapsed < target {
                target - elapsed
            } else {
                c.min_window / 4
            };
            // Relaxed: only the updater writes it; readers treat it as a hint.
            s.next_update
                .store(self.nanos_since_epoch(now + wait), Ordering::Relaxed);
            return;
        }
        let take = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
            s.stats
                .iter()
                .map(|st| f(st).swap(0, Ordering::Relaxed))
                .sum()
        };
        let samples = take(|st| &st.samples);
        let rtt_sum = take(|st| &st.rtt_sum_ns);
        let rtt_sq = take(|st| &st.rtt_sq_us);
        let mean_rtt = (samples > 0).then(|| Duration::from_nanos(rtt_sum / samples));
        let rtt_sd = sd(samples, rtt_sum, rtt_sq);
        let calm_samples = take(|st| &st.calm_samples);
        let calm_sum = take(|st| &st.calm_rtt_sum_ns);
        let calm_sq = take(|st| &st.calm_rtt_sq_us);
        let calm_rtt = (calm_samples > 0).then(|| Duration::from_nanos(calm_sum / calm_samples));
        let calm_rtt_sd = sd(calm_samples, calm_sum, calm_sq);
        let limit = self.limit_f64();
        let window = Window {
            now,
            duration: elapsed,
            limit,
            samples,
            mean_rtt,
            rtt_sd,
            calm_samples,
            calm_rtt,
            calm_rtt_sd,
            successes: take(|st| &st.successes),
            failures: take(|st| &st.failures),
            dropped: take(|st| &st.dropped),
            limited: take(|st| &st.limited),
            in_flight: self.in_flight(),
        };
        let completions = window.successes + window.failures;
        let every = (completions / u64::from(c.samples_per_window)).clamp(1, 1 << 20);
        // Relaxed: a sampling rate, read as a hint (ground rules: only the updater writes).
        s.sample_every.store(every, Ordering::Relaxed);
        let next = u.algorithm.update(&window);
        let calm_below = u.algorithm.calm_below().unwrap_or(usize::MAX);
        // Relaxed: a threshold read as a hint (ground rules: only the updater writes).
        s.calm_below.store(calm_below, Ordering::Relaxed);
        let next = if next.is_finite() { next } else { limit };
        let next = next.clamp(c.min_limit as f64, c.max_limit as f64);
        if mean_rtt.is_some() {
            u.last_rtt = mean_rtt;
        }
        u.window_start = now;
        u.windows += 1;
        self.set_limit(next);
        let target = u
            .last_rtt
            .map_or(c.min_window, |r| r.mul_f64(c.window_rtts))
            .clamp(c.min_window, c.max_window);
        // Relaxed: only the updater writes it.
        s.next_update
            .store(self.nanos_since_epoch(now + target), Ordering::Relaxed);
        tracing::trace!(
            algorithm = u.algorithm.name(),
            limit = next,
            samples,
            mean_rtt_us = mean_rtt.map(|d| d.as_micros() as u64),
            in_flight = window.in_flight,
            limited = window.limited,
            "pool window closed"
        );
    }

    /// Moves the limit; only the updater calls this (ground rules).
    fn set_limit(&self, limit: f64) {
        let s = &self.shared;
        let permits = limit.floor() as usize;
        // Relaxed: statistics for readers; only the updater writes.
        s.limit_bits.store(limit.to_bits(), Ordering::Relaxed);
        let old = s.permits.swap(permits, Ordering::Relaxed);
        let mut wake = 0;
        if permits > old && s.tokens.grow(permits - old, home()) {
            wake = permits - old;
        } else if permits < old {
            s.tokens.shrink(old - permits);
        }
        if s.tokens.settle() {
            wake += 1;
        }
        if wake > 0 {
            // Relaxed: a bound on useless wake-ups; the flags decided that someone waits.
            let waiting = s.waiters.load(Ordering::Relaxed);
            for _ in 0..wake.min(waiting.max(1)) {
                s.notify.notify_one();
            }
        }
    }

    /// `Some(weight)` when this request is to be timed: it stands for `weight` requests (the
    /// sampling rate), so window counts stay unbiased without counting the untimed ones.
    #[inline]
    pub(crate) fn sample_now(&self) -> Option<u64> {
        // Relaxed: a sampling rate; any recent value will do. The line is written once per
        // window, so this read stays in the core's cache.
        let every = self.shared.sample_every.load(Ordering::Relaxed).max(1);
        SAMPLE_LEFT.with(|c| {
            // `min`: when the rate drops, a countdown left from a busier window must not
            // keep this thread from sampling.
            match c.get().min(every - 1) {
                0 => {
                    c.set(every - 1);
                    Some(every)
                }
                left => {
                    c.set(left - 1);
                    None
                }
            }
        })
    }
}

/// The sample standard deviation of `n` RTTs from their sum (ns) and sum of squares (us²).
fn sd(n: u64, sum_ns: u64, sq_us: u64) -> Option<Duration> {
    (n > 1).then(|| {
        let k = n as f64;
        let mean_us = sum_ns as f64 / 1e3 / k;
        let var = (sq_us as f64 / k - mean_us * mean_us).max(0.0) * k / (k - 1.0);
        Duration::from_secs_f64(var.sqrt() / 1e6)
    })
}
