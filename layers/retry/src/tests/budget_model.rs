//! The budget against a plain model of the same window, under random deposits, withdrawals
//! and clock jumps.
//!
//! Invariants:
//! - every withdrawal decision equals the model's (`spent + 1 <= max(floor, ratio *
//!   requests)` over the buckets of the window);
//! - right after a withdrawal, the window's withdrawals do not exceed `max(floor, ratio *
//!   deposits)` of the same window.

use crate::budget::{BUCKET_MASK, BUCKETS, BudgetCore};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Deposit { n: u32, shard: usize },
    Withdraw,
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..50, 0usize..4).prop_map(|(n, shard)| Op::Deposit { n, shard }),
        4 => Just(Op::Withdraw),
        1 => (0u32..25).prop_map(Op::Advance),
    ]
}

/// Counts per bucket number (64-bit: the model never wraps); the window ending at `now` is
/// `now - BUCKETS + 1 ..= now`.
#[derive(Default)]
struct Model {
    deposits: BTreeMap<u64, u64>,
    withdrawals: BTreeMap<u64, u64>,
}

fn window(map: &BTreeMap<u64, u64>, now: u64) -> u64 {
    let from = now.saturating_sub(BUCKETS as u64 - 1);
    map.range(from..=now).map(|(_, v)| v).sum()
}

/// Where the budget's clock starts: near 0, or just before the points where a 32-bit bucket
/// number would wrap (2^31, 2^32: the layout before) or the 40-bit one does (2^39, 2^40), so
/// that runs cross them.
fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..3,
        (1u64 << 31) - 400..(1u64 << 31),
        (1u64 << 32) - 400..(1u64 << 32),
        (1u64 << 39) - 400..(1u64 << 39),
        (1u64 << 40) - 400..(1u64 << 40),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_budget_matches_its_model(
        ratio_pct in 0u32..=200,
        floor in 0u64..20,
        shards in 1usize..5,
        start in start(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let ratio = f64::from(ratio_pct) / 100.0;
        let core = BudgetCore::new(ratio, floor, shards);
        let mut model = Model::default();
        // The model's clock counts from 0; the budget's bucket numbers from `start`, wrapping.
        let mut now = 0u64;
        let at = |now: u64| (start + now) & BUCKET_MASK;
        for op in ops {
            match op {
                Op::Deposit { n, shard } => {
                    for _ in 0..n {
                        core.deposit(at(now), shard);
                    }
                    *model.deposits.entry(now).or_default() += u64::from(n);
                }
                Op::Withdraw => {
                    let allowed = (window(&model.deposits, now) * u64::from(ratio_pct) / 100)
                        .max(floor);
                    let expect = window(&model.withdrawals, now) < allowed;
                    prop_assert_eq!(core.try_withdraw(at(now)), expect, "at bucket {}", now);
                    if expect {
                        *model.withdrawals.entry(now).or_default() += 1;
                        // Deposits age out of the window before the withdrawals they paid
                        // for, so the bound holds when a withdrawal is made, not later on.
                        prop_assert!(
                            core.withdrawals(at(now)) <= core.allowance(at(now)),
                            "spent {} of {}", core.withdrawals(at(now)), core.allowance(at(now))
                        );
                    }
                }
                Op::Advance(by) => now += u64::from(by),
            }
            prop_assert_eq!(core.deposits(at(now)), window(&model.deposits, now));
            prop_assert_eq!(core.withdrawals(at(now)), window(&model.withdrawals, now));
        }
    }
}

#[test]
fn threads_never_overspend_one_window() {
    // Eight threads race for a budget of 100 (20% of 500 requests, above the floor of 50).
    let core = std::sync::Arc::new(BudgetCore::new(0.2, 50, 4));
    for i in 0..500 {
        core.deposit(7, i);
    }
    let won: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let core = &core;
                s.spawn(move || (0..100).filter(|_| core.try_withdraw(7)).count() as u64)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(won, 100);
    assert_eq!(core.withdrawals(7), 100);
}

#[test]
fn paired_deposits_and_withdrawals_never_run_dry() {
    // Each request pays for its own retry, so four threads doing request-then-retry pairs on
    // one budget never see it refuse, with a rotation every millisecond and threads stalling
    // (on a busy machine) between reading the clock and spending. Found two races: deposits
    // read before withdrawals, and a stalled thread judging an old window.
    //
    // A pair may straddle the window's old edge (its deposit ages out first), one per thread
    // at most, so a window may hold up to 4 withdrawals more than deposits: the budget must
    // allow `deposits + 5`. Ratio 1.1 does from 50 deposits on, and the floor of 60 below.
    let budget = crate::Budget::new(&crate::BudgetConfig {
        ratio: 1.1,
        min_per_second: 6000,
        window: std::time::Duration::from_millis(10),
    });
    let refused: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let budget = &budget;
                s.spawn(move || {
                    (0..100_000)
                        .filter(|_| {
                            budget.deposit();
                            !budget.try_withdraw()
                        })
                        .count() as u64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(refused, 0);
}

/// A deposit shard nobody uses keeps its first word for ever. With 32-bit bucket numbers, once
/// the clock was 2^31 buckets past it (25 days of 1 ms buckets), a signed comparison took that
/// number for a newer bucket than every reading: a withdrawal started over from it and back
/// without end (a request that never got an answer), and deposits counted into it were lost.
/// Across every wrap point, with one shard of two in use, every withdrawal returns and the
/// budget keeps its ratio.
#[test]
fn an_unused_shard_never_looks_newer_across_the_wrap() {
    for start in [
        (1u64 << 31) - 300,
        (1u64 << 32) - 300,
        (1u64 << 39) - 300,
        (1u64 << 40) - 300,
    ] {
        let core = BudgetCore::new(0.1, 1, 2);
        let mut granted = 0;
        for t in 0..600u64 {
            let now = (start + t) & BUCKET_MASK;
            for _ in 0..10 {
                core.deposit(now, 0);
            }
            if t % 5 == 0 && core.try_withdraw(now) {
                granted += 1;
            }
            assert_eq!(
                core.deposits(now),
                10 * (t + 1).min(BUCKETS as u64),
                "at {t}"
            );
        }
        // 10 deposits a bucket, 100 a window: 10% allows 10, so every try (one in 5 buckets,
        // 2 a window) is granted.
        assert_eq!(granted, 120, "from {start}");
    }
}
