//! Classifying the result of a call as success, failure or neither.
//!
//! Breakers, pools and balancers learn from outcomes. Whether an outcome is bad is the caller's
//! call: a 404 is usually the client's fault and says nothing about the backend's health, a 503
//! does. A [`Classify`] sees the response as well as the error.
//!
//! ```
//! use tollgate_core::{Classify, Outcome};
//!
//! // Any closure over `Result<&Res, &Err>` is a classifier.
//! let classify = |r: Result<&u16, &std::io::Error>| match r {
//!     Ok(status) if *status >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(classify.classify(Ok(&503)), Outcome::Failure);
//! assert_eq!(classify.classify(Ok(&404)), Outcome::Success);
//! ```

/// What one call says about the health of the service behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that counts against the service.
    Failure,
    /// The call says nothing about the service (for example the caller cancelled it, or it was
    /// rejected for a reason that is the client's fault). It is not recorded.
    Ignored,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Implemented for every `Fn(Result<&Res, &E>) -> Outcome`.
pub trait Classify<Res, E> {
    /// Classifies one finished call.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;

    /// How long the service behind `res` asked for fewer requests (an HTTP 429 or 503 with
    /// `Retry-After`), if it did. A balancer lowers that endpoint's share for so long; a breaker,
    /// when [`classify`](Classify::classify) calls the answer a failure (a 503, not a 429: that
    /// is one client's quota), waits at least so long (capped at its longest open wait) before
    /// its probe once open. `None` by default.
    fn back_off(&self, res: &Res) -> Option<std::time::Duration> {
        let _ = res;
        None
    }
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// Classifies a finished call as a layer that watches the upstream should record it: what
/// `classify` says, except that a rejection made by a tollgate layer below
/// ([`is_rejection`](crate::error::is_rejection): a pool or admission shedding, no endpoints,
/// a deadline already past) is [`Outcome::Ignored`], never a failure. Also converts the error
/// (the conversion the caller makes anyway), so a rejection costs no extra allocation.
///
/// ```
/// use tollgate_core::classify::classify_upstream;
/// use tollgate_core::error::Overloaded;
/// use tollgate_core::{BoxError, ErrorsAreFailures, Outcome};
///
/// let shed: Result<(), BoxError> = Err(Box::new(Overloaded::new(None)));
/// assert_eq!(classify_upstream(&ErrorsAreFailures, shed).0, Outcome::Ignored);
/// let failed: Result<(), std::io::Error> = Err(std::io::Error::other("reset"));
/// assert_eq!(classify_upstream(&ErrorsAreFailures, failed).0, Outcome::Failure);
/// ```
#[inline]
pub fn classify_upstream<T, E, C>(
    classify: &C,
    result: Result<T, E>,
) -> (Outcome, Result<T, crate::BoxError>)
where
    E: Into<crate::BoxError>,
    C: Classify<T, E> + ?Sized,
{
    let outcome = classify.classify(result.as_ref());
    let result = result.map_err(Into::into);
    let outcome = match &result {
        Err(e) if outcome == Outcome::Failure && crate::error::is_rejection(&**e) => {
            Outcome::Ignored
        }
        _ => outcome,
    };
    (outcome, result)
}

/// The default classifier: every `Ok` is a success and every `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// For `http::Response`: a 5xx status or an error is a failure, anything else a success.
///
/// 4xx answers are the client's doing and say nothing about the backend's health.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorsAreFailures;

#[cfg(feature = "http")]
impl<B, E> Classify<http::Response<B>, E> for ServerErrorsAreFailures {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    /// A 429 or 503 with `Retry-After` ([`retry_after`]: seconds or an HTTP date).
    fn back_off(&self, res: &http::Response<B>) -> Option<std::time::Duration> {
        if !matches!(res.status().as_u16(), 429 | 503) {
            return None;
        }
        retry_after(res.headers().get(http::header::RETRY_AFTER)?.as_bytes())
    }
}

/// The wait a `Retry-After` value asks for (RFC 9110 §10.2.3): delta-seconds, or an HTTP date
/// (IMF-fixdate, or the obsolete RFC 850 and asctime forms), a date in the past being no wait;
/// `None` when it is neither.
///
/// ```
/// use std::time::Duration;
/// use tollgate_core::classify::retry_after;
///
/// assert_eq!(retry_after(b"120"), Some(Duration::from_secs(120)));
/// assert_eq!(retry_after(b"Fri, 01 Jan 2010 00:00:00 GMT"), Some(Duration::ZERO));
/// assert_eq!(retry_after(b"soon"), None);
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[allow(clippy::disallowed_types)] // An HTTP date is a calendar time; tokio's clock has none.
pub fn retry_after(value: &[u8]) -> Option<std::time::Duration> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "http")]
    #[test]
    fn a_429_or_503_with_retry_after_asks_to_back_off() {
        let c = ServerErrorsAreFailures;
        let res = |s: u16, after: Option<&str>| {
            let mut b = http::Response::builder().status(s);
            if let Some(a) = after {
                b = b.header("retry-after", a);
            }
            b.body(()).unwrap()
        };
        let back_off = |r: &http::Response<()>| Classify::<_, ()>::back_off(&c, r);
        assert_eq!(
            back_off(&res(429, Some("3"))),
            Some(std::time::Duration::from_secs(3))
        );
        assert_eq!(
            back_off(&res(503, Some(" 1 "))),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(back_off(&res(503, None)), None);
        assert_eq!(back_off(&res(500, Some("3"))), None);
        // An HTTP date: the wait until then, none when it has passed (RFC 9110 §10.2.3).
        assert_eq!(
            back_off(&res(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"))),
            Some(std::time::Duration::ZERO)
        );
        #[allow(clippy::disallowed_types)] // An HTTP date is a calendar time.
        let in_an_hour = httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        let wait = back_off(&res(503, Some(&in_an_hour))).expect("a wait");
        assert!(
            wait > std::time::Duration::from_secs(3590)
                && wait <= std::time::Duration::from_secs(3600),
            "{wait:?}"
        );
        assert_eq!(back_off(&res(503, Some("later"))), None);
        let closure = |_: Result<&u16, &()>| Outcome::Success;
        assert_eq!(closure.back_off(&503), None, "closures never ask");
    }

    #[test]
    fn errors_are_failures() {
        let c = ErrorsAreFailures;
        assert_eq!(Classify::<u8, ()>::classify(&c, Ok(&1)), Outcome::Success);
        assert_eq!(Classify::<u8, ()>::classify(&c, Err(&())), Outcome::Failure);
    }

    #[cfg(feature = "http")]
    #[test]
    fn server_errors_are_failures() {
        let c = ServerErrorsAreFailures;
        let res = |s: u16| http::Response::builder().status(s).body(()).unwrap();
        assert_eq!(
            Classify::<_, ()>::classify(&c, Ok(&res(503))),
            Outcome::Failure
        );
        assert_eq!(
            Classify::<_, ()>::classify(&c, Ok(&res(404))),
            Outcome::Success
        );
        assert_eq!(
            Classify::<_, ()>::classify(&c, Ok(&res(200))),
            Outcome::Success
        );
        assert_eq!(
            Classify::<http::Response<()>, ()>::classify(&c, Err(&())),
            Outcome::Failure
        );
    }
}
