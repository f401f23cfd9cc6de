//! The snapshot/update path under loom: copy-on-write updates against lock-free picks.

use crate::common::Common;
use crate::config::BalanceConfig;
use crate::fleet::{Fleet, Start};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

fn fleet(keys: &[u8]) -> Arc<Fleet<u8, ()>> {
    let common = Arc::new(Common::new(
        &BalanceConfig::default(),
        tokio::time::Instant::now(),
    ));
    let fleet = Fleet::new(common, Some(1));
    for &k in keys {
        fleet.insert(k, (), 1.0, 0, Start::Full, None);
    }
    Arc::new(fleet)
}

/// A picker that loaded the set before a removal either backs out or is seen by the remover:
/// once the remover has seen the endpoint drained, no request starts on it.
#[test]
fn loom_removed_endpoint_gets_no_request_after_it_drained() {
    loom::model(|| {
        let fleet = fleet(&[1]);
        let drained = Arc::new(AtomicBool::new(false));
        let picker = {
            let (fleet, drained) = (fleet.clone(), drained.clone());
            thread::spawn(move || {
                let snap = fleet.load().clone();
                let Some(ep) = snap.endpoints.first() else {
                    return;
                };
                if ep.core.reserve() {
                    // The request runs now: the remover must not think it drained.
                    assert!(
                        !drained.load(Ordering::SeqCst),
                        "a request started on a drained endpoint"
                    );
                    ep.core.release();
                }
            })
        };
        assert!(fleet.remove(&1));
        if fleet.draining().is_empty() {
            drained.store(true, Ordering::SeqCst);
        }
        picker.join().unwrap();
        assert!(
            fleet.draining().is_empty(),
            "nothing in flight, yet still draining"
        );
        assert!(fleet.load().endpoints.is_empty());
    });
}

/// Two writers updating at once both land, and a reader sees a whole set before or after
/// each update, never a torn one.
#[test]
fn loom_concurrent_updates_are_not_lost() {
    loom::model(|| {
        let fleet = fleet(&[1]);
        let w = {
            let fleet = fleet.clone();
            thread::spawn(move || fleet.insert(2, (), 1.0, 0, Start::Ramp, None))
        };
        let r = {
            let fleet = fleet.clone();
            thread::spawn(move || {
                let snap = fleet.load().clone();
                let keys: Vec<u8> = snap.endpoints.iter().map(|e| e.key).collect();
                assert!(
                    [vec![1], vec![1, 2], vec![2], vec![]].contains(&keys),
                    "torn snapshot {keys:?}"
                );
            })
        };
        fleet.remove(&1);
        w.join().unwrap();
        r.join().unwrap();
        let keys: Vec<u8> = fleet.load().endpoints.iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![2]);
    });
}

/// Reservations on one endpoint from two threads all come back.
#[test]
fn loom_in_flight_returns_to_zero() {
    loom::model(|| {
        let fleet = fleet(&[1]);
        let core = fleet.load().endpoints[0].core.clone();
        let t = {
            let core = core.clone();
            thread::spawn(move || {
                assert!(core.reserve());
                core.release();
            })
        };
        assert!(core.reserve());
        core.release();
        t.join().unwrap();
        assert_eq!(core.in_flight.load(Ordering::SeqCst), 0);
    });
}
