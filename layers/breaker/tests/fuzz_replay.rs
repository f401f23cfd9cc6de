//! Replays the committed fuzz corpus (and any crash reproducers) of `breaker_ops` on stable.
#![cfg(feature = "fuzzing")]

use std::path::Path;

fn replay(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            tollgate_breaker::fuzzing::run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn corpus_replays_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = replay(&root.join("corpus/breaker_ops"));
    replay(&root.join("regressions/breaker_ops"));
    assert!(corpus > 0, "the breaker_ops corpus is empty");
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
