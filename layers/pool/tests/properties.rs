//! Property: whatever the sequence of acquires, releases (with any outcome and RTT),
//! cancellations, time passing and window updates, a permit is only granted below the limit,
//! in flight equals the permits held, and the limit stays within its bounds.

use proptest::prelude::*;
use std::time::Duration;
use tollgate_core::Outcome;
use tollgate_pool::{AimdConfig, AlgorithmConfig, Gradient2Config, Limiter, Permit, PoolConfig};

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Start(usize),
    Finish(usize, u8, u16),
    Drop(usize),
    Advance(u16),
    Update,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        2 => any::<usize>().prop_map(Op::Start),
        4 => (any::<usize>(), 0u8..3, 0u16..200).prop_map(|(i, o, r)| Op::Finish(i, o, r)),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (0u16..100).prop_map(Op::Advance),
        1 => Just(Op::Update),
    ]
}

fn algorithm() -> impl Strategy<Value = AlgorithmConfig> {
    prop_oneof![
        Just(AlgorithmConfig::default()),
        Just(AlgorithmConfig::Aimd(AimdConfig {
            rtt_threshold: Some(Duration::from_millis(50)),
            ..AimdConfig::default()
        })),
        Just(AlgorithmConfig::Gradient2(Gradient2Config::default())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn in_flight_never_exceeds_the_limit(
        min in 1usize..5,
        span in 0usize..40,
        algorithm in algorithm(),
        shards in 1usize..5,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let max = min + span;
            let config = PoolConfig {
                min_limit: min,
                max_limit: max,
                initial_limit: (min + max) / 2,
                algorithm,
                min_window: Duration::from_millis(5),
                min_window_samples: 2,
                shards,
                ..PoolConfig::default()
            };
            let limiter = Limiter::new(config).unwrap();
            let mut held: Vec<Permit> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => match limiter.try_acquire() {
                        Some(p) => {
                            held.push(p);
                            prop_assert!(limiter.in_flight() <= limiter.limit());
                        }
                        None => prop_assert!(limiter.in_flight() >= limiter.limit()),
                    },
                    Op::Start(i) if !held.is_empty() => {
                        let n = held.len();
                        held[i % n].start();
                    }
                    Op::Finish(i, o, rtt) if !held.is_empty() => {
                        let p = held.swap_remove(i % held.len());
                        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignored][o as usize];
                        limiter.record(p, Duration::from_millis(rtt.into()), outcome);
                    }
                    Op::Drop(i) if !held.is_empty() => {
                        drop(held.swap_remove(i % held.len()));
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms.into())).await,
                    Op::Update => limiter.force_update(),
                    _ => {}
                }
                prop_assert!((min..=max).contains(&limiter.limit()));
                prop_assert_eq!(limiter.in_flight(), held.len());
            }
            drop(held);
            prop_assert_eq!(limiter.in_flight(), 0);
            Ok(())
        })?;
    }
}
