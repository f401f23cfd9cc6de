//! Replays the committed fuzz corpus (and any crash reproducers) of `retry_ops` on stable.
#![cfg(feature = "fuzzing")]

use tollgate_core::testing::fuzz;

#[test]
fn corpus_replays_without_panics() {
    let replayed = fuzz::replay("retry_ops", tollgate_retry::fuzzing::run);
    assert!(replayed.corpus > 0, "the retry_ops corpus is empty");
}

/// A stable stand-in for the fuzzer: many seeded random inputs.
#[test]
fn seeded_random_inputs_keep_the_invariants() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    for _ in 0..500 {
        let len = rng.random_range(8..800);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        tollgate_retry::fuzzing::run(&data);
    }
}
