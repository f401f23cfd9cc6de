//! Replays the `pool_ops` fuzz corpus (and committed regressions) on stable.
#![cfg(feature = "fuzzing")]

use tollgate_core::testing::fuzz;

#[test]
fn corpus_replays_cleanly() {
    let n = fuzz::replay("pool_ops", tollgate_pool::fuzzing::run).corpus;
    assert!(n >= 4, "the pool_ops corpus has {n} files");
}
