//! Replays the committed fuzz corpus (and any crash reproducers) of `breaker_ops` on stable.
#![cfg(feature = "fuzzing")]

use tollgate_core::testing::fuzz;

#[test]
fn corpus_replays_without_panics() {
    let replayed = fuzz::replay("breaker_ops", tollgate_breaker::fuzzing::run);
    assert!(replayed.corpus > 0, "the breaker_ops corpus is empty");
}

/// A stable stand-in for the fuzzer: many seeded random inputs (the input format maps uniform
/// bytes to small configs, so runs reach half-open and back).
#[test]
fn seeded_random_inputs_keep_the_invariants() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    for _ in 0..300 {
        let len = rng.random_range(16..600);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        tollgate_breaker::fuzzing::run(&data);
    }
}
