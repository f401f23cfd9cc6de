//! The hand-off between submitters and the flusher of one partition.
//!
//! # Ground rules
//!
//! - `queued` counts requests pushed onto the partition's queues and not yet taken into a
//!   batch (or dropped). A submitter adds one *after* pushing its request
//!   ([`Gate::arrived`]); the flusher subtracts when requests leave its pending list
//!   ([`Gate::left`]). It may dip below zero for a moment (a request pushed, sent and
//!   subtracted before its submitter added), which is why it is signed.
//! - `running` is true while exactly one flusher task owns the partition. Only whoever wins the
//!   `false -> true` CAS (a submitter in [`Gate::arrived`], or an exiting flusher taking the
//!   role back in [`Gate::try_exit`]) runs a flusher.
//! - Exit is Dekker-style: the flusher stores `running = false` then loads `queued`; a
//!   submitter adds to `queued` then loads `running`. A SeqCst fence sits between the write and
//!   the read on each side, so at least one side sees the other: either the exiting flusher
//!   sees the new request and stays, or the submitter sees `running == false` and starts a
//!   flusher. No request is stranded. (Fences rather than SeqCst accesses alone: loom models
//!   SeqCst accesses as AcqRel and only fences fully, and the fence is nearly free after the
//!   locked add on x86.)

use crate::sync::atomic::{AtomicBool, AtomicIsize, Ordering, fence};
use crossbeam_utils::CachePadded;

#[derive(Debug, Default)]
pub(crate) struct Gate {
    queued: CachePadded<AtomicIsize>,
    running: AtomicBool,
}

impl Gate {
    /// A request was pushed. Returns the count of queued requests before it, and whether the
    /// caller must start a flusher (it won the role).
    pub(crate) fn arrived(&self) -> (isize, bool) {
        // SeqCst: with the fence below, pairs with the store of `running` and the fence in
        // `try_exit` (the Dekker pair in the ground rules).
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        // SeqCst fence: orders the add above before the load of `running` below; pairs with
        // the fence in `try_exit`.
        fence(Ordering::SeqCst);
        // SeqCst: the read half of the submitter's side of the pair.
        let start = !self.running.load(Ordering::SeqCst) && self.take_role();
        (before, start)
    }

    /// `n` requests left the queue (sent, expired or abandoned).
    pub(crate) fn left(&self, n: usize) {
        // SeqCst: keeps `queued` in the single order the exit protocol reasons about.
        self.queued.fetch_sub(n as isize, Ordering::SeqCst);
    }

    /// The flusher found nothing queued. Returns `true` when it must exit, `false` when a
    /// request slipped in and it took the role back.
    pub(crate) fn try_exit(&self) -> bool {
        self.release_role();
        // SeqCst fence: orders the store of `running` before the load of `queued`; pairs with
        // the fence in `arrived`.
        fence(Ordering::SeqCst);
        // SeqCst: the read half of the flusher's side of the pair.
        !(self.queued.load(Ordering::SeqCst) > 0 && self.take_role())
    }

    /// Gives up the role without looking back (a flusher dropped mid-run).
    pub(crate) fn release_role(&self) {
        // SeqCst: the flusher's half of the Dekker pair.
        self.running.store(false, Ordering::SeqCst);
    }

    /// Takes the role if nobody holds it.
    pub(crate) fn take_role(&self) -> bool {
        // SeqCst: part of the role hand-off; see the ground rules.
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Whether a flusher owns the partition now.
    pub(crate) fn is_running(&self) -> bool {
        // SeqCst: read on the path that forgets an idle key; see the ground rules.
        self.running.load(Ordering::SeqCst)
    }

    /// Requests queued now, never negative.
    pub(crate) fn depth(&self) -> usize {
        // Relaxed: a statistic.
        self.queued.load(Ordering::Relaxed).max(0) as usize
    }
}
