//! Loom models (run with `RUSTFLAGS="--cfg loom" cargo test --release -p tollgate-balance --lib
//! --target-dir target/loom -- loom`).

mod loom_snapshot;
