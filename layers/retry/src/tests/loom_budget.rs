//! Loom models of the budget: concurrent withdrawals never spend a token twice, and a
//! withdrawal racing a bucket rotation still counts in exactly one bucket.

use crate::budget::BudgetCore;
use loom::sync::Arc;
use loom::thread;

#[test]
fn loom_two_withdrawals_one_token() {
    loom::model(|| {
        let core = Arc::new(BudgetCore::new(0.0, 1, 1));
        let a = {
            let core = core.clone();
            thread::spawn(move || core.try_withdraw(3))
        };
        let b = core.try_withdraw(3);
        let a = a.join().unwrap();
        assert!(a ^ b, "exactly one of two withdrawals gets the only token");
        assert_eq!(core.withdrawals(3), 1);
    });
}

#[test]
fn loom_deposits_race_a_rotation() {
    loom::model(|| {
        // Shard 0's slot for bucket 3 holds its deposit; two threads move to bucket 19 (the
        // same slot, 16 buckets later) at once: each deposit is counted exactly once.
        let core = Arc::new(BudgetCore::new(1.0, 0, 1));
        core.deposit(3, 0);
        let a = {
            let core = core.clone();
            thread::spawn(move || core.deposit(19, 0))
        };
        core.deposit(19, 0);
        a.join().unwrap();
        assert_eq!(core.deposits(19), 2);
    });
}

#[test]
fn loom_withdrawal_races_a_deposit() {
    loom::model(|| {
        // No floor; the deposit earns one token. The withdrawal either sees it or not, but
        // never spends more than the window allows.
        let core = Arc::new(BudgetCore::new(1.0, 0, 2));
        let a = {
            let core = core.clone();
            thread::spawn(move || core.deposit(5, 1))
        };
        let won = core.try_withdraw(5);
        a.join().unwrap();
        assert!(core.withdrawals(5) <= core.allowance(5));
        assert_eq!(core.withdrawals(5), u64::from(won));
    });
}

#[test]
fn loom_paired_requests_pay_for_their_retries() {
    loom::model(|| {
        // No floor, ratio 1: each thread's request pays for its own retry, so neither may be
        // refused, however the two pairs interleave.
        let core = Arc::new(BudgetCore::new(1.0, 0, 2));
        let a = {
            let core = core.clone();
            thread::spawn(move || {
                core.deposit(4, 0);
                core.try_withdraw(4)
            })
        };
        core.deposit(4, 1);
        let b = core.try_withdraw(4);
        assert!(a.join().unwrap() && b, "a paid-for retry was refused");
    });
}
