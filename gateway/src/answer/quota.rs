//! The IETF draft's `RateLimit-Policy` and `RateLimit` fields of a rate-limited admission
//! policy: rendered once per policy ([`RateLimitFields`]), carried to a 429 by the rejection
//! ([`QuotaSpent`]) and to an admitted request's answer by a response extension
//! ([`QuotaLeft`]); see the [parent module](super) for the table they complete.

use http::HeaderValue;
use http::header::HeaderName;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tollgate_admission::RateLimitState;
use tollgate_core::BoxError;

/// `RateLimit-Policy`: the quota policies that apply to the answer's resource.
pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of a policy's quota, and when it resets.
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A rate-limited policy's fields, rendered once when the policy is built.
#[derive(Debug, Clone)]
pub(crate) struct RateLimitFields {
    /// `RateLimit-Policy`: `"name";q=QUOTA;w=WINDOW_SECONDS`.
    policy: HeaderValue,
    /// The policy's name as a structured-field string (`"name"`), the item of `RateLimit`.
    item: String,
}

impl RateLimitFields {
    /// The fields of the policy `name`, allowing `quota` requests per `window` (written in
    /// whole seconds, rounded up, as the draft asks). A name's `"` and `\` are escaped and any
    /// byte a structured-field string cannot hold (not printable ASCII) becomes `_`.
    pub(crate) fn new(name: &str, quota: u32, window: Duration) -> Self {
        let mut item = String::with_capacity(name.len() + 2);
        item.push('"');
        for c in name.chars() {
            match c {
                '"' | '\\' => {
                    item.push('\\');
                    item.push(c);
                }
                ' '..='~' => item.push(c),
                _ => item.push('_'),
            }
        }
        item.push('"');
        let w = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        let policy = format!("{item};q={quota};w={}", w.max(1));
        Self {
            policy: HeaderValue::try_from(policy).expect("printable ASCII"),
            item,
        }
    }

    /// Adds both fields to an answer of an admitted request whose key has `left`, the reset
    /// in whole seconds rounded up (0 when the whole quota is left).
    pub(crate) fn add_admitted(&self, headers: &mut http::HeaderMap, left: RateLimitState) {
        let reset = left.reset;
        let t = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        self.add(headers, left.remaining, t);
    }

    /// Adds both fields to a 429 answer whose quota resets in `reset_secs`.
    pub(crate) fn add_rejected(&self, headers: &mut http::HeaderMap, reset_secs: u64) {
        self.add(headers, 0, reset_secs);
    }

    fn add(&self, headers: &mut http::HeaderMap, remaining: u32, reset_secs: u64) {
        headers.insert(RATELIMIT_POLICY.clone(), self.policy.clone());
        let value = format!("{};r={remaining};t={reset_secs}", self.item);
        headers.insert(
            RATELIMIT.clone(),
            HeaderValue::try_from(value).expect("printable ASCII"),
        );
    }
}

/// What an admitted request's rate-limit key has left, with its policy's fields: a response
/// extension the admission stage sets (with `rate_limit.headers = "all"`) and the request path
/// turns into the two fields once the answer leaves the route's cache.
#[derive(Debug, Clone)]
pub(crate) struct QuotaLeft {
    /// The policy's fields.
    pub fields: Arc<RateLimitFields>,
    /// What the key has left.
    pub left: RateLimitState,
}

impl QuotaLeft {
    /// Adds the fields to `headers`.
    pub(crate) fn add_to(&self, headers: &mut http::HeaderMap) {
        self.fields.add_admitted(headers, self.left);
    }
}

/// A rate-limit rejection, with the fields of the policy that gave it. It reads as the
/// rejection and returns it from `source()`.
#[derive(Debug)]
pub(crate) struct QuotaSpent {
    fields: Arc<RateLimitFields>,
    source: BoxError,
}

impl QuotaSpent {
    /// The fields of the policy that refused the request.
    pub(crate) fn fields(&self) -> &RateLimitFields {
        &self.fields
    }

    /// Wraps `rejection` (an admission layer's rate-limit rejection) with `fields`.
    pub(crate) fn new(fields: Arc<RateLimitFields>, rejection: BoxError) -> Self {
        Self {
            fields,
            source: rejection,
        }
    }
}

impl fmt::Display for QuotaSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for QuotaSpent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_become_valid_structured_field_strings() {
        let f = RateLimitFields::new("a\"b\\c\u{e9}", 5, Duration::from_millis(1500));
        assert_eq!(f.policy, "\"a\\\"b\\\\c_\";q=5;w=2");
        let f = RateLimitFields::new("x", 1, Duration::from_millis(1));
        assert_eq!(f.policy, "\"x\";q=1;w=1");
    }

    #[test]
    fn an_admitted_answer_says_what_is_left_and_when_one_more_frees() {
        let f = RateLimitFields::new("api", 100, Duration::from_secs(60));
        for (remaining, reset, t) in [
            (97, Duration::from_millis(600), 1),
            (0, Duration::from_millis(1001), 2),
            (99, Duration::ZERO, 0),
            (5, Duration::from_secs(20), 20),
        ] {
            let mut h = http::HeaderMap::new();
            f.add_admitted(&mut h, RateLimitState { remaining, reset });
            assert_eq!(h[&RATELIMIT_POLICY], "\"api\";q=100;w=60");
            assert_eq!(
                h[&RATELIMIT],
                format!("\"api\";r={remaining};t={t}").as_str()
            );
        }
    }
}
