//! Replays the committed fuzz corpus and regressions of `batch_ops` on stable.
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
            eprintln!("replaying {}", path.display());
            tollgate_batch::fuzzing::run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn corpus_and_regressions_replay() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"));
    let corpus = replay(&root.join("corpus/batch_ops"));
    replay(&root.join("regressions/batch_ops"));
    assert!(corpus > 0, "the batch_ops corpus is empty");
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
