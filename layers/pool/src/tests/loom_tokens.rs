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

/// The wake-up handshake of the limiter (its module docs): a waiter announces itself, fences
/// and retries; a releaser gives its token back and then reads the waiter count. Whatever the
/// interleaving, the waiter either gets the token or the releaser sees it and wakes it (the
/// `notified` flag stands for `Notify::notify_one`): no lost wake-up.
#[test]
fn loom_no_lost_wakeup() {
    use loom::sync::atomic::{AtomicBool, AtomicUsize, fence};
    loom::model(|| {
        let tokens = Arc::new(Tokens::new(1, 2));
        assert!(tokens.take(0)); // the limit (1) is in use
        let waiters = Arc::new(AtomicUsize::new(0));
        let notified = Arc::new(AtomicBool::new(false));
        let releaser = {
            let (t, w, n) = (tokens.clone(), waiters.clone(), notified.clone());
            loom::thread::spawn(move || {
                if t.give(0) {
                    fence(Ordering::SeqCst);
                    if w.load(Ordering::Relaxed) > 0 {
                        n.store(true, Ordering::SeqCst);
                    }
                }
            })
        };
        waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let got = tokens.take(1);
        releaser.join().unwrap();
        assert!(got || notified.load(Ordering::SeqCst), "lost wake-up");
    });
}
