//! Driven by `fuzz/fuzz_targets/retry_ops.rs` (and replayed on stable by
//! `tests/fuzz_replay.rs`): random deposits, withdrawals and clock jumps on the budget,
//! checked against a plain model; and random latencies into the hedge-delay histogram.

use crate::budget::{BUCKETS, BudgetCore};
use crate::latency::{bucket_of, upper_edge};
use std::collections::BTreeMap;
use std::time::Duration;

/// One step of the budget model.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub enum Op {
    /// Count `n` requests on shard `shard`.
    Deposit {
        /// Requests.
        n: u8,
        /// Shard.
        shard: u8,
    },
    /// Try to spend a retry.
    Withdraw,
    /// Try to spend a hedge (paced).
    Hedge,
    /// Move the clock on by this many buckets.
    Advance(u8),
    /// Record a latency of this many microseconds in the histogram.
    Latency(u32),
}

/// Runs the ops in `data` and panics if the budget disagrees with its model or a latency lands
/// in a bucket that does not hold it.
pub fn run(data: &[u8]) {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(ratio_pct) = u.int_in_range(0u32..=300) else {
        return;
    };
    let Ok(floor) = u.int_in_range(0u64..=50) else {
        return;
    };
    let Ok(shards) = u.int_in_range(1usize..=4) else {
        return;
    };
    let core = BudgetCore::new(f64::from(ratio_pct) / 100.0, floor, shards);
    let mut deposits: BTreeMap<u32, u64> = BTreeMap::new();
    let mut withdrawals: BTreeMap<u32, u64> = BTreeMap::new();
    let window = |m: &BTreeMap<u32, u64>, now: u32, width: u32| -> u64 {
        m.range(now.saturating_sub(width - 1)..=now)
            .map(|(_, v)| v)
            .sum()
    };
    let mut now = 0u32;
    // `arbitrary` keeps producing defaults once the data runs out; stop there.
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { return };
        match op {
            Op::Deposit { n, shard } => {
                for _ in 0..n {
                    core.deposit(u64::from(now), usize::from(shard));
                }
                *deposits.entry(now).or_default() += u64::from(n);
            }
            Op::Withdraw | Op::Hedge => {
                let b = BUCKETS as u32;
                // The floor is a minimum, not added to the ratio's share.
                let allowed = (window(&deposits, now, b) * u64::from(ratio_pct) / 100).max(floor);
                let mut expect = window(&withdrawals, now, b) < allowed;
                let got = if matches!(op, Op::Hedge) {
                    let recent = (window(&deposits, now, 2) * u64::from(ratio_pct) / 100)
                        .max(floor * 2 / BUCKETS as u64);
                    expect &= window(&withdrawals, now, 2) < recent;
                    core.try_withdraw_paced(u64::from(now))
                } else {
                    core.try_withdraw(u64::from(now))
                };
                assert_eq!(got, expect, "withdrawal at bucket {now}");
                if got {
                    *withdrawals.entry(now).or_default() += 1;
                    assert!(core.withdrawals(u64::from(now)) <= core.allowance(u64::from(now)));
                }
            }
            Op::Advance(by) => now = now.saturating_add(u32::from(by % 32)),
            Op::Latency(us) => {
                let d = Duration::from_micros(u64::from(us));
                let b = bucket_of(d);
                assert!(upper_edge(b) > d || d >= Duration::from_secs(68));
                if b > 0 {
                    assert!(
                        upper_edge(b - 1) <= d,
                        "{d:?} belongs lower than bucket {b}"
                    );
                }
            }
        }
        assert_eq!(
            core.deposits(u64::from(now)),
            window(&deposits, now, BUCKETS as u32)
        );
        assert_eq!(
            core.withdrawals(u64::from(now)),
            window(&withdrawals, now, BUCKETS as u32)
        );
    }
}
