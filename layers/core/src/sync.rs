//! Atomics that switch to [`loom`](https://docs.rs/loom)'s model-checked versions under
//! `--cfg loom`.
//!
//! Layers import their atomics from here, so the same code runs in production and inside a loom
//! model (`RUSTFLAGS="--cfg loom" cargo test --release`).

#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(loom)]
pub use loom::sync::atomic;

#[cfg(not(loom))]
pub use std::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::atomic;
