//! Replays the fuzz corpora (and any committed crash reproducers) on stable, plus a few hundred
//! seeded random inputs.
#![cfg(feature = "fuzzing")]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tollgate_core::testing::fuzz;

#[test]
fn cache_control_corpus() {
    let replayed = fuzz::replay("cache_control", tollgate_cache::fuzzing::cache_control);
    assert!(replayed.corpus > 0, "empty corpus");
}

#[test]
fn cache_ops_corpus() {
    let replayed = fuzz::replay("cache_ops", tollgate_cache::fuzzing::cache_ops);
    assert!(replayed.corpus > 0, "empty corpus");
}

#[test]
fn seeded_random_inputs() {
    // `TOLLGATE_FUZZ_ITERS=100000` for a longer run on stable.
    let iters = std::env::var("TOLLGATE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = SmallRng::seed_from_u64(0xcac4e);
    for _ in 0..iters {
        let len = rng.random_range(0..600);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        tollgate_cache::fuzzing::cache_control(&data);
        tollgate_cache::fuzzing::cache_ops(&data);
    }
}
