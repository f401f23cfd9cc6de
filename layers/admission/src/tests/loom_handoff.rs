//! The fast path and the queue agree on every slot.
//!
//! - A slot freed by a request finishing on another thread while a request joins the queue
//!   reaches that request: it is granted at once or woken with the grant (no lost wake-up).
//! - Two threads racing for the last slot: exactly one gets it; the other queues and gets it
//!   when the first gives it back.

use crate::config::AdmissionConfig;
use crate::controller::{Controller, LimitSource, Shards};
use crate::queue::Enqueued;
use loom::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::time::Instant;
use tollgate_core::Outcome;

fn shards(limit: usize) -> Arc<Shards> {
    let config = AdmissionConfig {
        limit,
        ..AdmissionConfig::default()
    };
    Arc::new(Shards::new(Controller::new(
        &config,
        LimitSource::Fixed(limit),
    )))
}

#[test]
fn loom_a_freed_slot_reaches_a_joining_waiter() {
    loom::model(|| {
        let shards = shards(1);
        let shard = shards.local().clone();
        assert!(shard.try_fast(0));
        let other = shard.clone();
        let finisher = loom::thread::spawn(move || other.release(0, None, None));
        let joined = shard.enqueue(1, None, Instant::now());
        finisher.join().unwrap();
        match joined {
            Enqueued::Granted => {}
            Enqueued::Waiting(id, ..) => {
                let mut cx = Context::from_waker(Waker::noop());
                // Every release has happened: the slot must be this waiter's by now.
                assert!(
                    matches!(shard.poll_waiter(id, &mut cx), Poll::Ready(Ok(()))),
                    "lost wake-up"
                );
            }
            Enqueued::Rejected(r) => panic!("rejected: {r}"),
        }
        assert_eq!(shard.in_flight(), 1);
        shard.release(1, None, None);
        assert_eq!(shard.in_flight(), 0);
    });
}

#[test]
fn loom_the_last_slot_goes_to_exactly_one() {
    loom::model(|| {
        let shards = shards(1);
        let a = shards.local().clone();
        let b = a.clone();
        let t = loom::thread::spawn(move || b.try_fast(0));
        let mine = a.try_fast(0);
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs, "exactly one takes the only slot");
        assert_eq!(a.in_flight(), 1);
        a.release(0, None, None);
        assert_eq!(a.in_flight(), 0);
    });
}
