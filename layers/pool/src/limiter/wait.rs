//! Waiting for a permit at the limit (`AtLimit::Wait`): the wait registration and the waiter
//! count protocol (module docs of [`super`]).

use super::{Core, Shared, home};
use crate::config::AtLimit;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::sync::futures::OwnedNotified;
use tokio::time::Sleep;
use tollgate_core::error::Overloaded;

impl Core {
    /// Polls for a permit; `slot` keeps the wait registration between polls (start with
    /// `None`, keep it until this returns `Ready`).
    ///
    /// The free-token case is inlined into the caller; everything else is out of line.
    #[inline]
    pub(crate) fn poll_acquire(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<Pin<Box<WaitSlot>>>,
    ) -> Poll<Result<usize, Overloaded>> {
        if slot.is_none() {
            let home = home();
            if self.shared.tokens.take(home) {
                return Poll::Ready(Ok(home));
            }
        }
        self.poll_acquire_slow(cx, slot)
    }

    /// [`poll_acquire`](Core::poll_acquire) when no token was free at once: count the demand,
    /// then refuse or wait as configured.
    #[cold]
    #[inline(never)]
    fn poll_acquire_slow(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<Pin<Box<WaitSlot>>>,
    ) -> Poll<Result<usize, Overloaded>> {
        if slot.is_none() {
            // The take in `poll_acquire` found no token: demand at the limit, as a failed
            // `try_acquire` counts it.
            self.limited();
            match self.shared.config.at_limit {
                AtLimit::Reject => {
                    self.reject();
                    return Poll::Ready(Err(Overloaded::new(None)));
                }
                AtLimit::Wait { max_wait } => {
                    // AcqRel: part of the waiter count protocol (see `WaiterCount`).
                    self.shared.waiters.fetch_add(1, Ordering::AcqRel);
                    *slot = Some(Box::pin(WaitSlot {
                        notified: self.shared.notify.clone().notified_owned(),
                        deadline: tokio::time::sleep(max_wait),
                        _count: WaiterCount(self.shared.clone()),
                    }));
                }
            }
        }
        let home = home();
        loop {
            let mut this = slot.as_mut().expect("slot set above").as_mut().project();
            // Register with `notify` first, then raise the flags: a releaser that sees a flag
            // finds us registered (module docs).
            this.notified.as_mut().enable();
            if self.shared.tokens.flag_all() && self.shared.tokens.take(home) {
                *slot = None;
                return Poll::Ready(Ok(home));
            }
            if this.notified.as_mut().poll(cx).is_ready() {
                // Woken, but another request took the permit first: register again.
                this.notified
                    .set(self.shared.notify.clone().notified_owned());
                continue;
            }
            if this.deadline.poll(cx).is_ready() {
                *slot = None;
                // Relaxed: statistics.
                self.stats(home).limited.fetch_add(1, Ordering::Relaxed);
                self.reject();
                return Poll::Ready(Err(Overloaded::new(None)));
            }
            return Poll::Pending;
        }
    }
}

/// Decrements the waiter count when a wait ends, however it ends.
#[derive(Debug)]
struct WaiterCount(Arc<Shared>);

impl Drop for WaiterCount {
    /// The last waiter to leave clears the `WAITING` flags, so releases stop calling
    /// `notify_one`. A task that starts waiting meanwhile must keep its flags: our check of
    /// the count after clearing is a read-modify-write, so either it sees the newcomer (and we
    /// raise the flags again) or it comes first in the count's order, which makes our
    /// clearing happen before the newcomer raises its flags. If raising them again finds a
    /// token freed while they were down, we pass the wake-up on.
    fn drop(&mut self) {
        let s = &self.0;
        // AcqRel: the waiter count protocol above.
        if s.waiters.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.tokens.clear_all();
            // AcqRel: a read-modify-write, so it reads the latest count (see above).
            if s.waiters.fetch_add(0, Ordering::AcqRel) > 0 && s.tokens.flag_all() {
                s.notify.notify_one();
            }
        }
    }
}

/// The registration of a task waiting for a permit.
#[pin_project::pin_project]
#[derive(Debug)]
pub(crate) struct WaitSlot {
    #[pin]
    notified: OwnedNotified,
    #[pin]
    deadline: Sleep,
    _count: WaiterCount,
}
