//! Atomics, `Arc` and the writers' lock, switching to `loom` under `--cfg loom`.

pub(crate) use tollgate_core::sync::{Arc, atomic};

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;

/// Locks `m`, ignoring poisoning: every critical section here leaves the data consistent
/// before it can panic (they only push, swap or count).
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
