//! The `Date` header (RFC 9110 §6.6.1) the fast path adds to its own answers and to relayed
//! ones that lack it: formatted at most once a second per thread.

use std::cell::Cell;
use std::time::Duration;
use tokio::time::Instant;

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(super) type HttpDate = [u8; 29];

thread_local! {
    static DATE: Cell<Option<(Instant, HttpDate)>> = const { Cell::new(None) };
}

/// The current date, as of at most a second before `now`.
pub(super) fn value(now: Instant) -> HttpDate {
    DATE.with(|cell| match cell.get() {
        Some((at, date)) if now.saturating_duration_since(at) < Duration::from_secs(1) => date,
        _ => {
            let date = format();
            cell.set(Some((now, date)));
            date
        }
    })
}

// Wall-clock time is what the header carries; nothing here measures an interval.
#[allow(clippy::disallowed_types)]
fn format() -> HttpDate {
    let text = httpdate::fmt_http_date(std::time::SystemTime::now());
    let mut out = [b' '; 29];
    let n = text.len().min(out.len());
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_date_cached_for_a_second() {
        let now = Instant::now();
        let a = value(now);
        let text = std::str::from_utf8(&a).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
        assert!(text.ends_with(" GMT"), "{text}");
        assert_eq!(value(now + Duration::from_millis(500)), a);
    }
}
