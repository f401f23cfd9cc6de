//! The submitter/flusher hand-off under loom: no request is stranded without a flusher, and
//! never do two flushers own a partition at once.

use crate::gate::Gate;
use crate::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A model partition: `shard` stands for the lock-free queue, `owners` counts flushers
/// running at once.
#[derive(Default)]
struct Model {
    gate: Gate,
    shard: AtomicUsize,
    owners: AtomicUsize,
    sent: AtomicUsize,
}

impl Model {
    /// The flusher loop: drain, send, and exit when the gate says so.
    fn flush(&self) {
        let was = self.owners.fetch_add(1, Ordering::SeqCst);
        assert_eq!(was, 0, "two flushers own the partition");
        loop {
            let n = self.shard.swap(0, Ordering::SeqCst);
            if n > 0 {
                self.sent.fetch_add(n, Ordering::SeqCst);
                self.gate.left(n);
                continue;
            }
            // Leave the owner count before giving up the role, as the real flusher stops
            // touching the partition before `try_exit` returns.
            self.owners.fetch_sub(1, Ordering::SeqCst);
            if self.gate.try_exit() {
                return;
            }
            let was = self.owners.fetch_add(1, Ordering::SeqCst);
            assert_eq!(was, 0, "two flushers own the partition");
        }
    }

    fn submit(&self) {
        self.shard.fetch_add(1, Ordering::SeqCst);
        let (_, start) = self.gate.arrived();
        if start {
            self.flush();
        }
    }
}

#[test]
fn loom_every_request_is_sent_by_some_flusher() {
    loom::model(|| {
        let model = Arc::new(Model::default());
        // A flusher is already running (a first request started it) and is about to exit.
        assert!(model.gate.take_role());
        let flusher = {
            let model = model.clone();
            thread::spawn(move || model.flush())
        };
        let submitters: Vec<_> = (0..2)
            .map(|_| {
                let model = model.clone();
                thread::spawn(move || model.submit())
            })
            .collect();
        flusher.join().unwrap();
        for s in submitters {
            s.join().unwrap();
        }
        assert_eq!(
            model.sent.load(Ordering::SeqCst),
            2,
            "a request was stranded"
        );
        assert_eq!(model.gate.depth(), 0);
    });
}
