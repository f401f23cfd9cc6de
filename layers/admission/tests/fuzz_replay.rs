//! Replays the committed fuzz corpus (and any crash reproducers) through `fuzzing::run`.
#![cfg(feature = "fuzzing")]

use tollgate_core::testing::fuzz;

#[test]
fn the_corpus_and_regressions_replay_cleanly() {
    let replayed = fuzz::replay("admission_ops", tollgate_admission::fuzzing::run);
    assert!(replayed.corpus > 0, "the seed corpus is missing");
}
