//! Replays the committed fuzz corpus and regressions of `batch_ops` on stable.
#![cfg(feature = "fuzzing")]

use tollgate_core::testing::fuzz;

#[test]
fn corpus_and_regressions_replay() {
    let replayed = fuzz::replay("batch_ops", tollgate_batch::fuzzing::run);
    assert!(replayed.corpus > 0, "the batch_ops corpus is empty");
}

#[test]
fn random_inputs_hold_the_invariants() {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    for len in 0..300usize {
        let mut data = vec![0u8; len % 200];
        rng.fill_bytes(&mut data);
        tollgate_batch::fuzzing::run(&data);
    }
}
