//! A queued request's side: polling its claim, giving up at its bound, leaving when dropped.

use crate::controller::{Controller, WAITERS};
use crate::error::{Reason, Rejected};
use crate::queue::{SlotState, WaiterId};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::time::Instant;

impl Controller {
    /// Whether the waiter was granted (`Ready(Ok)`), turned away (`Ready(Err)`), or still
    /// waits (its waker is registered).
    pub(crate) fn poll_waiter(
        &self,
        id: WaiterId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Rejected>> {
        let mut slow = self.lock();
        let Some(slot) = slow.get(id) else {
            // Unreachable while the future owns its claim; answer as a timeout rather than hang.
            return Poll::Ready(Err(Rejected::new(
                0,
                self.classes[0].name.clone(),
                Reason::QueueTimeout,
                None,
            )));
        };
        match slot.state {
            SlotState::Waiting => {
                let slot = &mut slow.slots[id.slot as usize];
                match &mut slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            SlotState::Granted => {
                slow.release_slot(id.slot);
                Poll::Ready(Ok(()))
            }
            SlotState::Rejected(reason) => {
                let class = slot.class;
                slow.release_slot(id.slot);
                let hint = (reason != Reason::Deadline).then(|| self.retry_hint(slow.queued));
                Poll::Ready(Err(Rejected::new(
                    class,
                    self.classes[class].name.clone(),
                    reason,
                    hint,
                )))
            }
            SlotState::Free => unreachable!("`get` skips free slots"),
        }
    }

    /// The waiter's queue bound passed: it leaves the queue with `reason`, unless it was
    /// granted or turned away meanwhile.
    pub(crate) fn expire(
        &self,
        id: WaiterId,
        reason: Reason,
        cx: &mut Context<'_>,
    ) -> Result<(), Rejected> {
        let mut slow = self.lock();
        if let Some(slot) = slow.get(id)
            && slot.state == SlotState::Waiting
        {
            let class = slot.class;
            let q = &mut slow.queues[class].q;
            if let Some(pos) = q.iter().position(|x| *x == id.slot) {
                q.remove(pos);
            }
            slow.left(class);
            slow.finish(id.slot, SlotState::Rejected(reason));
            self.count_rejection(class, reason);
            if slow.queued == 0 {
                // Relaxed: see the ground rules; cleared only under the lock.
                self.hot.word.fetch_and(!WAITERS, Ordering::Relaxed);
            }
        }
        drop(slow);
        match self.poll_waiter(id, cx) {
            Poll::Ready(r) => r,
            Poll::Pending => unreachable!("the slot was just finished"),
        }
    }

    /// The waiting future was dropped: leave the queue, or give back a slot granted meanwhile.
    pub(crate) fn cancel(&self, id: WaiterId) {
        let mut slow = self.lock();
        let Some(slot) = slow.get(id) else { return };
        let (state, class) = (slot.state, slot.class);
        match state {
            SlotState::Waiting => {
                let q = &mut slow.queues[class].q;
                if let Some(pos) = q.iter().position(|x| *x == id.slot) {
                    q.remove(pos);
                }
                slow.left(class);
                slow.release_slot(id.slot);
                if slow.queued == 0 {
                    // Relaxed: see the ground rules; cleared only under the lock.
                    self.hot.word.fetch_and(!WAITERS, Ordering::Relaxed);
                }
            }
            SlotState::Granted => {
                slow.release_slot(id.slot);
                if self.track {
                    // Relaxed: see `pick`.
                    self.class_in_flight[class].fetch_sub(1, Ordering::Relaxed);
                }
                // Relaxed: see the ground rules.
                self.hot.word.fetch_sub(1, Ordering::Relaxed);
                self.dispatch(&mut slow, Instant::now());
            }
            SlotState::Rejected(_) => slow.release_slot(id.slot),
            SlotState::Free => {}
        }
    }
}
