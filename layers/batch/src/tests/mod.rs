//! Loom models (run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! -p tollgate-batch --lib --target-dir target/loom -- loom`).

mod loom_gate;
