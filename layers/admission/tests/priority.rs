//! Property tests: strict priority order, capacity and the request ledger over random
//! operation sequences (the same checker as the `admission_ops` fuzz target).
#![cfg(feature = "fuzzing")]

mod common;

use common::{Job, build, send};
use proptest::prelude::*;
use std::time::Duration;
use tollgate_admission::AdmissionConfig;
use tollgate_admission::fuzzing::{Op, Setup, check};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, any::<u8>(), prop::option::weighted(0.2, any::<u8>()), prop::option::weighted(0.2, 0u8..4))
            .prop_map(|(class, work_ms, deadline_ms, key)| Op::Arrive { class, work_ms, deadline_ms, key }),
        3 => any::<u8>().prop_map(Op::Finish),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => (0u8..30).prop_map(Op::Advance),
        1 => any::<u8>().prop_map(Op::SetLimit),
    ]
}

fn setup(reserve: bool) -> impl Strategy<Value = Setup> {
    let shape = (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..6),
        any::<u8>(),
    );
    let policy = (
        prop::collection::vec(any::<u8>(), 0..6),
        any::<bool>(),
        prop::option::weighted(0.2, 1u8..4),
        any::<u8>(),
    );
    (shape, policy).prop_map(
        move |((classes, limit, queue_capacity, max_queued), (reserved, lifo, rate, headroom))| {
            Setup {
                classes,
                limit,
                queue_capacity,
                max_queued,
                reserve,
                reserved,
                lifo,
                rate_burst: rate.unwrap_or(0),
                headroom,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No request starts while a higher class waits; capacity and ledger hold.
    #[test]
    fn strict_priority_capacity_and_ledger(s in setup(false), ops in prop::collection::vec(op(), 0..120)) {
        check(&s, &ops);
    }

    /// With reservations: capacity and ledger hold (priority is bent on purpose).
    #[test]
    fn reservations_keep_capacity_and_ledger(s in setup(true), ops in prop::collection::vec(op(), 0..120)) {
        check(&s, &ops);
    }

    /// Behind one busy slot, queued requests start in class order, oldest first within a class.
    #[test]
    fn queued_requests_start_in_class_order(classes in prop::collection::vec(0usize..4, 1..20)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (svc, _handle, log) = build(AdmissionConfig { limit: 1, ..AdmissionConfig::default() });
            let busy = send(&svc, Job::new(0, 1, 1000)).await;
            let mut tasks = Vec::new();
            for (i, c) in classes.iter().enumerate() {
                tasks.push(send(&svc, Job::new(*c, 1, i as u64)).await);
            }
            busy.await.unwrap().unwrap();
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(3600), t).await.unwrap().unwrap().unwrap();
            }
            let mut expected: Vec<(usize, u64)> = classes.iter().enumerate().map(|(i, c)| (*c, i as u64)).collect();
            expected.sort();
            let started = log.started();
            assert_eq!(&started[1..], expected.iter().map(|(_, id)| *id).collect::<Vec<_>>().as_slice());
        });
    }
}
