//! `rate_limit.headers = "all"`: what an admitted request's key has left reaches its answer.

use super::CarriesQuota;
use super::tests::{ctx, policy_and_inner, req};
use crate::answer::QuotaLeft;
use std::time::Duration;

/// The test services answer with a `String`: a carried quota is appended to it, so a test can
/// read what the stage reported.
impl CarriesQuota for String {
    fn carry(&mut self, quota: QuotaLeft) {
        let reset_ms = quota.left.reset.as_millis();
        self.push_str(&format!(" r={} reset_ms={reset_ms}", quota.left.remaining));
    }
}

fn policy(headers: &str) -> String {
    format!(
        "name = \"q\"\nlimit = 8\n\
         rate_limit = {{ burst = 3, period_ms = 3000, key = \"header:x-key\", headers = \"{headers}\" }}"
    )
}

#[tokio::test(start_paused = true)]
async fn every_answer_carries_what_the_key_has_left() {
    let (policy, inner, _) = policy_and_inner(&policy("all"), 0);
    let c = ctx("192.0.2.1", None);
    let call = |key: &str| policy.admit(inner.clone(), req(&[("x-id", "ok"), ("x-key", key)]), &c);
    // Three a burst, one every second after: each answer says what is left and when one more
    // frees (a full second after a fresh key's first request).
    assert_eq!(call("a").await.unwrap(), "ok r=2 reset_ms=1000");
    assert_eq!(call("a").await.unwrap(), "ok r=1 reset_ms=1000");
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(call("a").await.unwrap(), "ok r=0 reset_ms=600");
    assert!(call("a").await.is_err(), "the burst is spent");
    // Another key has its own quota.
    assert_eq!(call("b").await.unwrap(), "ok r=2 reset_ms=1000");
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(call("a").await.unwrap(), "ok r=0 reset_ms=1000");
    // Left alone for the whole period, the key has its whole burst back.
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(call("a").await.unwrap(), "ok r=2 reset_ms=1000");
}

#[tokio::test(start_paused = true)]
async fn rejected_only_leaves_admitted_answers_alone() {
    for headers in ["rejected", "none"] {
        let (policy, inner, _) = policy_and_inner(&policy(headers), 0);
        let c = ctx("192.0.2.1", None);
        let ok = policy
            .admit(inner, req(&[("x-id", "ok"), ("x-key", "a")]), &c)
            .await;
        assert_eq!(ok.unwrap(), "ok", "{headers}");
    }
}
