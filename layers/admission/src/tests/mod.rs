//! Loom models (run with `RUSTFLAGS="--cfg loom" cargo test --release -p tollgate-admission --lib -- loom`).

mod loom_handoff;
