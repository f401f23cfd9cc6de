//! The budget's atomics, which switch to loom's under `--cfg loom`.

pub(crate) use tollgate_core::sync::atomic;
