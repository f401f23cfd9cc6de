//! Atomics, `Arc` and `Mutex` that switch to loom's under `--cfg loom`.

pub(crate) use tollgate_core::sync::{Arc, atomic};

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;

#[cfg(loom)]
pub(crate) use loom::sync::MutexGuard;
#[cfg(not(loom))]
pub(crate) use std::sync::MutexGuard;
