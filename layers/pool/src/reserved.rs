//! [`Reserved`]: what a limiting service's `poll_ready` got from the limiter, held until
//! `call`.

use crate::limiter::{Limiter, WaitSlot};
use crate::permit::Permit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A token taken on a shard, a refusal, or nothing yet. A token is one word here and becomes
/// a [`Permit`] only in `call`, so nothing bigger moves between `poll_ready` and `call` (a
/// permit read back whole right after being written stalls on its own stores). Dropped
/// holding a token, it gives it back.
#[derive(Debug)]
pub(crate) struct Reserved {
    limiter: Limiter,
    /// [`NOTHING`], [`REFUSED`], or the shard the token was taken on.
    state: usize,
}

const NOTHING: usize = usize::MAX;
const REFUSED: usize = usize::MAX - 1;

impl Reserved {
    pub(crate) fn new(limiter: Limiter) -> Self {
        Self {
            limiter,
            state: NOTHING,
        }
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Takes a token unless one is held or the request was already refused: `Ready(true)`
    /// holding one, `Ready(false)` refused (at the limit in reject mode, or after the wait).
    #[inline]
    pub(crate) fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
        wait: &mut Option<Pin<Box<WaitSlot>>>,
    ) -> Poll<bool> {
        if self.state == NOTHING {
            self.state = match ready!(self.limiter.core().poll_acquire(cx, wait)) {
                Ok(home) => home,
                Err(_) => REFUSED,
            };
        }
        Poll::Ready(self.state != REFUSED)
    }

    /// What `poll_reserve` got, leaving nothing: the permit (not started), or `None` when the
    /// request was refused.
    ///
    /// # Panics
    ///
    /// When `poll_reserve` did not return `Ready` first (a service called before it was
    /// ready).
    #[inline]
    pub(crate) fn take(&mut self) -> Option<Permit> {
        match std::mem::replace(&mut self.state, NOTHING) {
            NOTHING => panic!("poll_ready must succeed before call"),
            REFUSED => None,
            home => Some(self.limiter.permit(home)),
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.state < REFUSED {
            self.limiter.core().release(self.state);
        }
    }
}
