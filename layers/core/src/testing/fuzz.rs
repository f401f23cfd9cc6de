//! Replaying a fuzz target's committed inputs on stable, as a normal test.
//!
//! Every crate with a cargo-fuzz target keeps a seed corpus in `fuzz/corpus/<target>/` and crash
//! reproducers in `fuzz/regressions/<target>/`. Its `tests/fuzz_replay.rs` runs the target's
//! entry point on each of them, so a fixed crash stays fixed without nightly:
//!
//! ```
//! use tollgate_core::testing::fuzz;
//! let replayed = fuzz::replay("no_such_target", |_data| {});
//! assert_eq!(replayed.corpus, 0);
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

/// How many inputs a [`replay`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Files in `fuzz/corpus/<target>/`.
    pub corpus: usize,
    /// Files in `fuzz/regressions/<target>/`.
    pub regressions: usize,
}

/// The workspace's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `run` on every file of `target`'s corpus and regressions (a missing directory counts as
/// empty), in name order.
///
/// # Panics
///
/// When `run` panics: first prints the path of the input that did it, then goes on unwinding.
pub fn replay(target: &str, run: impl Fn(&[u8])) -> Replayed {
    let root = fuzz_dir();
    Replayed {
        corpus: replay_dir(&root.join("corpus").join(target), &run),
        regressions: replay_dir(&root.join("regressions").join(target), &run),
    }
}

fn replay_dir(dir: &Path, run: &impl Fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable fuzz directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).expect("readable fuzz input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            eprintln!("fuzz input {} failed", path.display());
            resume_unwind(panic);
        }
    }
    files.len()
}
