//! Deterministic entry point for the `pool_ops` fuzz target (and its corpus replay test):
//! an arbitrary configuration and a sequence of acquire / start / finish / drop / advance /
//! update operations, with the invariants checked after every step.
//!
//! Invariants: nothing panics; the limit stays within `[min_limit, max_limit]`; a successful
//! acquire never leaves more in flight than the limit; a failed one only happens at the limit;
//! the limiter's in-flight count equals the permits held.

use crate::algorithm::{AimdConfig, AlgorithmConfig, Gradient2Config, KneeConfig, VegasConfig};
use crate::config::{AtLimit, PoolConfig};
use crate::limiter::Limiter;
use crate::permit::Permit;
use arbitrary::{Arbitrary, Unstructured};
use std::time::Duration;
use tollgate_core::Outcome;

/// One step of a fuzzed run.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// `try_acquire` a permit.
    Acquire,
    /// Start the clock of the permit at this index (modulo the number held).
    Start(u8),
    /// Finish the permit at this index with an outcome (0 success, 1 failure, else ignored)
    /// and an RTT in milliseconds.
    Finish(u8, u8, u16),
    /// Finish the permit at this index, timing it from its start.
    FinishTimed(u8, u8),
    /// Drop the permit at this index (a cancellation if it was started).
    Drop(u8),
    /// Let this many milliseconds of paused time pass.
    Advance(u16),
    /// Close the current window now.
    Update,
}

fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<PoolConfig> {
    let min_limit = u.int_in_range(1..=8usize)?;
    let max_limit = min_limit + u.int_in_range(0..=64usize)?;
    let initial_limit = u.int_in_range(min_limit..=max_limit)?;
    let algorithm = match u.int_in_range(0..=3u8)? {
        0 => AlgorithmConfig::Vegas(VegasConfig::default()),
        1 => AlgorithmConfig::Aimd(AimdConfig {
            rtt_threshold: Some(Duration::from_millis(u.int_in_range(1..=100u64)?)),
            ..AimdConfig::default()
        }),
        2 => AlgorithmConfig::Gradient2(Gradient2Config::default()),
        _ => AlgorithmConfig::Knee(KneeConfig::default()),
    };
    Ok(PoolConfig {
        min_limit,
        max_limit,
        initial_limit,
        at_limit: AtLimit::Reject,
        algorithm,
        samples_per_window: u.int_in_range(10..=64u32)?,
        min_window: Duration::from_millis(u.int_in_range(1..=50u64)?),
        min_window_samples: u.int_in_range(0..=10u32)?,
        shards: u.int_in_range(1..=4usize)?,
        ..PoolConfig::default()
    })
}

/// Runs one fuzz input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = config(&mut u) else { return };
    let Ok(ops) = u.arbitrary::<Vec<Op>>() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(drive(config, ops));
}

async fn drive(config: PoolConfig, ops: Vec<Op>) {
    let (min, max) = (config.min_limit, config.max_limit);
    let limiter = Limiter::new(config).expect("the fuzzed config is valid");
    let mut held: Vec<Permit> = Vec::new();
    let pick = |held: &Vec<Permit>, i: u8| (!held.is_empty()).then(|| usize::from(i) % held.len());
    for op in ops {
        match op {
            Op::Acquire => match limiter.try_acquire() {
                Some(p) => {
                    held.push(p);
                    assert!(
                        limiter.in_flight() <= limiter.limit(),
                        "in flight {} above the limit {}",
                        limiter.in_flight(),
                        limiter.limit()
                    );
                }
                None => assert!(
                    limiter.in_flight() >= limiter.limit(),
                    "refused below the limit"
                ),
            },
            Op::Start(i) => {
                if let Some(i) = pick(&held, i) {
                    held[i].start();
                }
            }
            Op::Finish(i, outcome, rtt) => {
                if let Some(i) = pick(&held, i) {
                    let outcome = match outcome {
                        0 => Outcome::Success,
                        1 => Outcome::Failure,
                        _ => Outcome::Ignored,
                    };
                    limiter.record(
                        held.swap_remove(i),
                        Duration::from_millis(rtt.into()),
                        outcome,
                    );
                }
            }
            Op::FinishTimed(i, outcome) => {
                if let Some(i) = pick(&held, i) {
                    let p = held.swap_remove(i);
                    if outcome % 2 == 0 {
                        p.success()
                    } else {
                        p.failure()
                    }
                }
            }
            Op::Drop(i) => {
                if let Some(i) = pick(&held, i) {
                    drop(held.swap_remove(i));
                }
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms.into())).await,
            Op::Update => limiter.force_update(),
        }
        let limit = limiter.limit();
        assert!(
            (min..=max).contains(&limit),
            "limit {limit} outside [{min}, {max}]"
        );
        assert_eq!(limiter.in_flight(), held.len(), "in-flight count drifted");
    }
    drop(held);
    assert_eq!(limiter.in_flight(), 0);
}
