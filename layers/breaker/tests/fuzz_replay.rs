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
