//! Loom models of the permit sharding: tokens are conserved and in flight stays within the
//! limit whatever the interleaving.

use crate::tokens::Tokens;
use loom::sync::Arc;
use loom::sync::atomic::Ordering;

/// Two threads on different shards take and give back; one token per shard to start, so one
/// of them must borrow from the other's shard.
#[test]
fn loom_take_give_conserves_tokens() {
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(2, 2));
        let handles: Vec<_> = (0..2)
            .map(|home| {
                let t = tokens.clone();
                loom::thread::spawn(move || {
                    let mut held = 0;
                    for _ in 0..2 {
                        if t.take(home) {
                            held += 1;
                        }
                    }
                    assert!(held <= 2);
                    for _ in 0..held {
                        t.give(home);
                    }
                    held
                })
            })
            .collect();
        let held: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Never more than the limit in flight at once: the two together took at most... each
        // took what it could; all were given back.
        assert!(held.iter().sum::<usize>() <= 4);
        assert_eq!(tokens.free(), 2);
        assert_eq!(tokens.debt(), 0);
    });
}

/// At most `limit` permits are held at any instant: both threads try to hold one at the same
/// time with a limit of 1.
#[test]
fn loom_never_more_than_the_limit() {
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(1, 2));
        let holding = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|home| {
                let (t, h) = (tokens.clone(), holding.clone());
                loom::thread::spawn(move || {
                    if t.take(home) {
                        let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= 1, "two permits held with a limit of 1");
                        h.fetch_sub(1, Ordering::SeqCst);
                        t.give(home);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(tokens.free(), 1);
    });
}

/// The limit shrinks while a request is in flight and another thread gives back: the debt is
/// paid, no token is lost or made up, and after `settle` free tokens equal the new limit.
#[test]
fn loom_shrink_races_with_give() {
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(2, 2));
        assert!(tokens.take(0));
        assert!(tokens.take(1));
        let t = tokens.clone();
        let releaser = loom::thread::spawn(move || {
            t.give(1);
            t.give(0);
        });
        // The updater shrinks the limit from 2 to 1, then grows it back to 2 and to 1 again.
        tokens.shrink(1);
        tokens.settle();
        releaser.join().unwrap();
        tokens.settle();
        // Conservation: free + in flight (0) = permits (1) + debt.
        assert_eq!(tokens.free() as usize, 1 + tokens.debt());
        assert_eq!(tokens.debt(), 0, "settle cancels leftover debt once quiet");
        tokens.grow(1, 0);
        assert_eq!(tokens.free(), 2);
    });
}

/// The wake-up handshake (tokens module docs): a task about to wait raises the `WAITING`
/// flags and retries if it saw a token; a releaser's `fetch_add` reports the flag. Whatever the
/// interleaving, the waiter gets the token or the releaser wakes it (`notified` stands for
/// `Notify::notify_one`): no lost wake-up, and no fence on the release path.
#[test]
fn loom_no_lost_wakeup() {
    use loom::sync::atomic::AtomicBool;
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(1, 2));
        assert!(tokens.take(0)); // the limit (1) is in use
        let notified = Arc::new(AtomicBool::new(false));
        let releaser = {
            let (t, n) = (tokens.clone(), notified.clone());
            loom::thread::spawn(move || {
                if t.give(0) == Some(true) {
                    n.store(true, Ordering::SeqCst);
                }
            })
        };
        let got = tokens.flag_all() && tokens.take(1);
        releaser.join().unwrap();
        assert!(got || notified.load(Ordering::SeqCst), "lost wake-up");
    });
}

/// The last waiter leaving clears the flags while a new one arrives and a permit is released:
/// the newcomer still gets the token or a wake-up (from the releaser, or passed on by the
/// leaver when raising the flags again finds the token).
#[test]
fn loom_clearing_flags_races_with_a_new_waiter() {
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(1, 2));
        assert!(tokens.take(0));
        let waiters = Arc::new(AtomicUsize::new(1)); // the old waiter
        assert!(!tokens.flag_all());
        let notified = Arc::new(AtomicBool::new(false));
        let leaver = {
            let (t, w, n) = (tokens.clone(), waiters.clone(), notified.clone());
            loom::thread::spawn(move || {
                // `WaiterCount::drop`.
                if w.fetch_sub(1, Ordering::AcqRel) == 1 {
                    t.clear_all();
                    if w.fetch_add(0, Ordering::AcqRel) > 0 && t.flag_all() {
                        n.store(true, Ordering::SeqCst);
                    }
                }
            })
        };
        let releaser = {
            let (t, n) = (tokens.clone(), notified.clone());
            loom::thread::spawn(move || {
                if t.give(1) == Some(true) {
                    n.store(true, Ordering::SeqCst);
                }
            })
        };
        // The newcomer.
        waiters.fetch_add(1, Ordering::AcqRel);
        let got = tokens.flag_all() && tokens.take(0);
        leaver.join().unwrap();
        releaser.join().unwrap();
        assert!(got || notified.load(Ordering::SeqCst), "lost wake-up");
    });
}
