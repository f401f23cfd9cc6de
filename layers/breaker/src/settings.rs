//! Settings derived from the config once, and the backoff state kept under the transition lock.

use crate::config::Backoff;
use rand::Rng;
use rand::rngs::SmallRng;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) failure_threshold: f64,
    pub(crate) slow_threshold: f64,
    pub(crate) slow_enabled: bool,
    /// Calls at least this long are slow; `u64::MAX` when detection is off.
    pub(crate) slow_ns: u64,
    pub(crate) min_calls: u64,
    /// 0 when off.
    pub(crate) consecutive: u32,
    pub(crate) probes: u64,
    pub(crate) wait_ns: u64,
    pub(crate) backoff: Option<Backoff>,
}

#[derive(Debug)]
pub(crate) struct Transitions {
    pub(crate) opens_in_a_row: u32,
    pub(crate) rng: SmallRng,
}

impl Transitions {
    /// The next open wait, in nanoseconds; counts the open.
    pub(crate) fn next_wait(&mut self, s: &Settings) -> u64 {
        let n = self.opens_in_a_row;
        self.opens_in_a_row = n.saturating_add(1);
        let Some(b) = s.backoff else { return s.wait_ns };
        let max = b.max_wait.as_nanos() as f64;
        let grown = (s.wait_ns as f64 * b.multiplier.powi(n.min(4096) as i32)).min(max);
        let jittered = if b.jitter > 0.0 {
            grown * (1.0 + b.jitter * self.rng.random_range(-1.0..=1.0))
        } else {
            grown
        };
        jittered.clamp(1.0, max) as u64
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
