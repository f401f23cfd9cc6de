//! Replays the committed fuzz corpus (and any crash reproducers) through `fuzzing::run`.
#![cfg(feature = "fuzzing")]

use std::path::Path;

fn replay(dir: &str) -> usize {
    let dir = Path::new(dir);
    if !dir.exists() {
        return 0;
    }
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            tollgate_admission::fuzzing::run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn the_corpus_and_regressions_replay_cleanly() {
    let corpus = replay(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/admission_ops"
    ));
    replay(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regressions/admission_ops"
    ));
    assert!(corpus > 0, "the seed corpus is missing");
}
