//! Replays the committed fuzz corpus and regressions of `balance_ops` on stable.
#![cfg(feature = "fuzzing")]

use std::path::Path;

/// Replays every file in `dir`; returns (files, requests routed).
fn replay(dir: &str) -> (usize, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (0, 0);
    };
    let (mut n, mut routed) = (0, 0);
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            routed += tollgate_balance::fuzzing::run_counted(&data);
            n += 1;
        }
    }
    (n, routed)
}

#[test]
fn corpus_replays_cleanly() {
    let (n, routed) = replay("../../fuzz/corpus/balance_ops");
    assert!(
        n >= 4,
        "expected the committed seed corpus, found {n} files"
    );
    assert!(routed >= 50, "the corpus routes only {routed} requests");
    replay("../../fuzz/regressions/balance_ops");
}

#[test]
fn random_inputs_keep_the_invariants() {
    // A small deterministic sweep over generated inputs, beyond the corpus.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut routed = 0;
    for len in [16usize, 64, 256, 1024] {
        for _ in 0..24 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            routed += tollgate_balance::fuzzing::run_counted(&data);
        }
    }
    assert!(
        routed >= 300,
        "generated inputs routed only {routed} requests"
    );
}

/// A longer sweep for a quick local hunt without cargo-fuzz:
/// `BALANCE_FUZZ_RUNS=20000 cargo test -p tollgate-balance --all-features --release --test fuzz_replay -- --ignored`.
#[test]
#[ignore = "long; run by hand"]
fn many_random_inputs_keep_the_invariants() {
    let runs: u64 = std::env::var("BALANCE_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for run in 0..runs {
        let len = 8 + (run as usize * 37) % 2048;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Ok(dir) = std::env::var("BALANCE_FUZZ_SAVE") {
            std::fs::write(Path::new(&dir).join("last"), &data).unwrap();
        }
        tollgate_balance::fuzzing::run(&data);
    }
}
