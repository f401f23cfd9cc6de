//! Drives the breaker's state machine with arbitrary configs and operation sequences, for
//! `fuzz/fuzz_targets/breaker_ops.rs` and `tests/fuzz_replay.rs`.
//!
//! Invariants checked after every operation:
//! - nothing panics, and an invalid config is refused with an error naming a field;
//! - no half-open period admits more probes than configured: for each period, probes in flight
//!   plus probes finished never exceed `permitted_calls_in_half_open`, and the machine's own
//!   in-flight count agrees;
//! - the window never reports more calls than it holds, nor more failures or slow calls than
//!   calls;
//! - a rejection while open carries a wait no longer than the longest configured one.

use crate::config::{Backoff, BreakerConfig, SlidingWindow};
use crate::machine::Core;
use crate::state::State;
use crate::word::Permit;
use arbitrary::{Arbitrary, Unstructured};
use std::collections::HashMap;
use std::time::Duration;
use tollgate_core::Outcome;

/// One step of a fuzz run.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Ask for admission and, if granted, finish at once with an outcome and a duration.
    Call {
        /// Modulo 4: 0 and 1 success, 2 failure, 3 ignored.
        outcome: u8,
        /// The call's duration in milliseconds.
        elapsed_ms: u16,
    },
    /// Ask for admission; keep the permit if granted.
    Acquire,
    /// Finish a kept permit (index modulo the number kept) with an outcome and a duration.
    Finish {
        /// Which kept permit.
        which: u8,
        /// Modulo 4: 0 and 1 success, 2 failure, 3 ignored.
        outcome: u8,
        /// The call's duration in milliseconds.
        elapsed_ms: u16,
    },
    /// Drop a kept permit unfinished (a cancelled call).
    Drop {
        /// Which kept permit.
        which: u8,
    },
    /// Move the clock forward.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// `BreakerHandle::force_open`.
    ForceOpen,
    /// `BreakerHandle::disable`.
    Disable,
    /// `BreakerHandle::reset`.
    Reset,
}

impl Op {
    /// One op from one to three bytes, most of them calls (succeeding, failing, slow), so that a
    /// short input trips the breaker, probes and recovers.
    pub fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
        let tag = u8::arbitrary(u)?;
        let byte = |u: &mut Unstructured<'_>| u8::arbitrary(u).unwrap_or(0);
        Ok(match tag % 32 {
            0..=9 => Op::Call {
                outcome: 0,
                elapsed_ms: u16::from(tag / 32) * 40,
            },
            10..=15 => Op::Call {
                outcome: 2,
                elapsed_ms: u16::from(tag / 32) * 40,
            },
            16 => Op::Call {
                outcome: 3,
                elapsed_ms: 0,
            },
            17 => Op::Call {
                outcome: tag / 32,
                elapsed_ms: u16::from(byte(u)),
            },
            18..=20 => Op::Acquire,
            21..=23 => Op::Finish {
                which: byte(u),
                outcome: byte(u),
                elapsed_ms: u16::from(byte(u)),
            },
            24 => Op::Drop { which: byte(u) },
            25..=28 => Op::Advance {
                ms: u16::from(byte(u)) * 8,
            },
            // Rare, or a run spends most of its time forced open or disabled.
            29 if tag / 32 == 0 => Op::ForceOpen,
            30 if tag / 32 == 0 => Op::Disable,
            29 | 30 => Op::Advance { ms: 1000 },
            _ => Op::Reset,
        })
    }
}

/// The config part of a fuzz input, kept small so the fuzzer reaches interesting states.
#[derive(Debug, Clone, Arbitrary)]
pub struct Setup {
    time_window: bool,
    size: u8,
    buckets: u8,
    length_ms: u16,
    minimum_calls: u8,
    failure_pct: u8,
    slow_pct: u8,
    slow_ms: Option<u8>,
    consecutive: Option<u8>,
    wait_ms: u16,
    backoff: Option<(u8, u16, u8)>,
    probes: u8,
    seed: u64,
}

impl Setup {
    /// The config, sometimes invalid (zero sizes, rates above 100 %, multipliers below 1).
    pub fn config(&self) -> BreakerConfig {
        BreakerConfig {
            name: "fuzz".into(),
            sliding_window: if self.time_window {
                SlidingWindow::Time {
                    length: Duration::from_millis(u64::from(self.length_ms % 4000)),
                    buckets: u32::from(self.buckets % 9),
                }
            } else {
                SlidingWindow::Count {
                    size: u32::from(self.size % 17),
                }
            },
            minimum_calls: u32::from(self.minimum_calls % 16),
            failure_rate_threshold: f64::from(self.failure_pct % 105) / 100.0,
            slow_call_rate_threshold: f64::from(self.slow_pct % 105) / 100.0,
            slow_call_duration: self.slow_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            consecutive_failures: self.consecutive.map(u32::from),
            wait_in_open: Duration::from_millis(u64::from(self.wait_ms % 1000)),
            backoff: self.backoff.map(|(mult, max_ms, jitter)| Backoff {
                multiplier: f64::from(mult) / 10.0,
                max_wait: Duration::from_millis(u64::from(self.wait_ms % 1000) + u64::from(max_ms)),
                jitter: f64::from(jitter % 105) / 100.0,
            }),
            permitted_calls_in_half_open: u32::from(self.probes % 9),
            seed: Some(self.seed),
        }
    }
}

/// Runs one fuzz input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while let Ok(op) = Op::decode(&mut u) {
        ops.push(op);
        if ops.len() >= 2048 {
            break;
        }
    }
    run_ops(&setup, &ops);
}

/// Runs `ops` against a breaker built from `setup`, checking the invariants.
pub fn run_ops(setup: &Setup, ops: &[Op]) {
    let config = setup.config();
    if let Err(e) = config.validate() {
        assert!(!e.field().is_empty() && !e.problem().is_empty());
        return;
    }
    let core = Core::new(&config, "fuzz".into());
    let permitted = u64::from(config.permitted_calls_in_half_open);
    let max_wait = config.backoff.map_or(config.wait_in_open, |b| b.max_wait);
    let window_cap = match config.sliding_window {
        SlidingWindow::Count { size } => u64::from(size),
        SlidingWindow::Time { .. } => u64::MAX,
    };
    let mut now: u64 = 0;
    let mut held: Vec<Permit> = Vec::new();
    // Per half-open period (the state word probes were admitted under): probes finished, and
    // probes held (in flight).
    let mut finished: HashMap<u64, u64> = HashMap::new();
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        // The period this op admitted a probe into or finished one of, if any.
        let mut touched = None;
        match *op {
            Op::Acquire => match core.acquire(|| now) {
                Ok(p) => {
                    if p.is_probe() {
                        *in_flight.entry(p.word()).or_default() += 1;
                        touched = Some(p.word());
                    }
                    held.push(p);
                }
                Err(open) => {
                    if let Some(d) = open.retry_after() {
                        assert!(
                            d <= max_wait,
                            "retry_after {d:?} beyond the longest wait {max_wait:?}"
                        );
                    }
                }
            },
            Op::Call {
                outcome,
                elapsed_ms,
            } => {
                if let Ok(p) = core.acquire(|| now) {
                    let outcome = match outcome % 4 {
                        0 | 1 => Outcome::Success,
                        2 => Outcome::Failure,
                        _ => Outcome::Ignored,
                    };
                    if p.is_probe() && outcome != Outcome::Ignored {
                        *finished.entry(p.word()).or_default() += 1;
                        touched = Some(p.word());
                    }
                    core.record(p, outcome, u64::from(elapsed_ms) * 1_000_000, || now);
                }
            }
            Op::Finish {
                which,
                outcome,
                elapsed_ms,
            } => {
                if held.is_empty() {
                    continue;
                }
                let p = held.swap_remove(usize::from(which) % held.len());
                if p.is_probe() {
                    *in_flight.entry(p.word()).or_default() -= 1;
                }
                let outcome = match outcome % 4 {
                    0 | 1 => Outcome::Success,
                    2 => Outcome::Failure,
                    _ => Outcome::Ignored,
                };
                if p.is_probe() && outcome != Outcome::Ignored {
                    *finished.entry(p.word()).or_default() += 1;
                    touched = Some(p.word());
                }
                core.record(p, outcome, u64::from(elapsed_ms) * 1_000_000, || now);
            }
            Op::Drop { which } => {
                if !held.is_empty() {
                    let p = held.swap_remove(usize::from(which) % held.len());
                    if p.is_probe() {
                        *in_flight.entry(p.word()).or_default() -= 1;
                    }
                    core.release(p);
                }
            }
            Op::Advance { ms } => now = now.saturating_add(u64::from(ms) * 1_000_000),
            Op::ForceOpen => core.move_to(None, State::ForcedOpen),
            Op::Disable => core.move_to(None, State::Disabled),
            Op::Reset => core.move_to(None, State::Closed),
        }
        if let Some(word) = touched {
            let n = in_flight.get(&word).copied().unwrap_or(0);
            let done = finished.get(&word).copied().unwrap_or(0);
            assert!(
                n + done <= permitted,
                "{n} probes in flight and {done} finished, {permitted} permitted"
            );
        }
        let snap = core.snapshot(now);
        if snap.state == State::HalfOpen {
            assert!(core.probes_in_flight() <= permitted);
            assert!(u64::from(snap.probes_admitted) <= permitted);
        }
        assert!(
            snap.calls <= window_cap,
            "{} calls in a window of {window_cap}",
            snap.calls
        );
        assert!(snap.failures <= snap.calls && snap.slow_calls <= snap.calls);
        if let Some(d) = snap.retry_after {
            assert!(d <= max_wait);
        }
    }
}
