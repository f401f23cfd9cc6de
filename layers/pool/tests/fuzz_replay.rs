//! Replays the `pool_ops` fuzz corpus (and committed regressions) on stable.
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
            tollgate_pool::fuzzing::run(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let n = replay(&root.join("corpus/pool_ops"));
    replay(&root.join("regressions/pool_ops"));
    assert!(n >= 4, "the pool_ops corpus has {n} files");
}
