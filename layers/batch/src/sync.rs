//! Atomics for the code that loom models ([`crate::gate`]): loom's under `--cfg loom`.

pub(crate) use tollgate_core::sync::atomic;
