//! A parser for the `Cache-Control` and `Vary` response headers (RFC 9111 §5.2, RFC 5861).
//!
//! Pure and allocation-free: it never panics, ignores directives it does not know, and treats
//! a malformed delta-seconds as absent (RFC 9111 §4.2.1 asks caches to treat an invalid
//! freshness value as stale, which for a shared cache means: do not store it fresh).

use std::time::Duration;

/// The directives of a `Cache-Control` response header that a shared cache acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheControl {
    /// `no-store`: never store.
    pub no_store: bool,
    /// `no-cache`: store only if revalidated before each use; this cache does not revalidate,
    /// so it does not store.
    pub no_cache: bool,
    /// `private`: for a single user; a shared cache must not store it.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` / `proxy-revalidate`: never serve it stale.
    pub must_revalidate: bool,
    /// `max-age`.
    pub max_age: Option<Duration>,
    /// `s-maxage` (overrides `max-age` in a shared cache).
    pub s_maxage: Option<Duration>,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<Duration>,
    /// Some directive was malformed (a bad number, say).
    pub malformed: bool,
}

/// The largest delta-seconds kept (RFC 9111 §1.2.2 suggests 2^31).
const MAX_DELTA: u64 = 1 << 31;

fn delta_seconds(v: &str) -> Option<Duration> {
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Overflowing digit strings saturate, as the RFC asks.
    let n = v.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    Some(Duration::from_secs(n.min(MAX_DELTA)))
}

impl CacheControl {
    /// Parses one or more `Cache-Control` header values (joined by commas).
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        for directive in split_list(value) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a)),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                cc.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                cc.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                cc.private = true;
            } else if name.eq_ignore_ascii_case("public") {
                cc.public = true;
            } else if name.eq_ignore_ascii_case("must-revalidate")
                || name.eq_ignore_ascii_case("proxy-revalidate")
            {
                cc.must_revalidate = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                cc.malformed |= !set_secs(&mut cc.max_age, arg);
            } else if name.eq_ignore_ascii_case("s-maxage") {
                cc.malformed |= !set_secs(&mut cc.s_maxage, arg);
            } else if name.eq_ignore_ascii_case("stale-while-revalidate") {
                cc.malformed |= !set_secs(&mut cc.stale_while_revalidate, arg);
            } else if name.eq_ignore_ascii_case("stale-if-error") {
                cc.malformed |= !set_secs(&mut cc.stale_if_error, arg);
            }
        }
        cc
    }

    /// The freshness lifetime a shared cache uses: `s-maxage`, else `max-age`.
    pub fn shared_max_age(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age)
    }

    /// Whether a shared cache may store the response at all.
    pub fn storable(&self) -> bool {
        !(self.no_store || self.no_cache || self.private || self.malformed)
    }
}

/// Records a delta-seconds argument (the smallest if repeated); false when it is malformed.
fn set_secs(slot: &mut Option<Duration>, arg: Option<&str>) -> bool {
    match arg.and_then(delta_seconds) {
        Some(d) => {
            *slot = Some(slot.map_or(d, |old| old.min(d)));
            true
        }
        None => false,
    }
}

/// Splits a comma-separated header list into trimmed, non-empty items, respecting quotes.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut in_quotes = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '"' => in_quotes = !in_quotes,
                    ',' if !in_quotes => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("");
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// What a `Vary` header asks of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary<'a> {
    /// `Vary: *`: the response varies on something outside the request; never reuse it.
    Any,
    /// The request header names (as written) whose values select the response.
    Headers(Vec<&'a str>),
}

impl<'a> Vary<'a> {
    /// Parses one or more `Vary` header values.
    pub fn parse(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names = Vec::new();
        for value in values {
            for name in split_list(value) {
                if name == "*" {
                    return Vary::Any;
                }
                names.push(name);
            }
        }
        Vary::Headers(names)
    }

    /// Whether every header it names is among `keyed` (compared case-insensitively), so a key
    /// built from the `keyed` request headers tells the variants apart.
    pub fn covered_by(&self, keyed: &[impl AsRef<str>]) -> bool {
        match self {
            Vary::Any => false,
            Vary::Headers(names) => names
                .iter()
                .all(|n| keyed.iter().any(|k| k.as_ref().eq_ignore_ascii_case(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn parses_the_directives_a_shared_cache_uses() {
        let cc = CacheControl::parse(
            "public, max-age=60, s-maxage=120, stale-while-revalidate=30, stale-if-error=\"600\"",
        );
        assert!(cc.public && cc.storable());
        assert_eq!(
            (cc.max_age, cc.s_maxage, cc.shared_max_age()),
            (s(60), s(120), s(120))
        );
        assert_eq!(
            (cc.stale_while_revalidate, cc.stale_if_error),
            (s(30), s(600))
        );
        assert!(!CacheControl::parse("No-Store").storable());
        assert!(!CacheControl::parse("private, max-age=10").storable());
        assert!(!CacheControl::parse("no-cache").storable());
        assert!(CacheControl::parse("must-revalidate").must_revalidate);
    }

    #[test]
    fn odd_input_is_handled() {
        assert!(CacheControl::parse("max-age=abc").malformed);
        assert!(CacheControl::parse("max-age=").malformed);
        assert!(CacheControl::parse("max-age").malformed);
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999999").max_age,
            Some(Duration::from_secs(MAX_DELTA))
        );
        assert_eq!(CacheControl::parse("max-age=10, max-age=5").max_age, s(5));
        assert_eq!(CacheControl::parse(",, ,max-age=7,").max_age, s(7));
        assert_eq!(CacheControl::parse("x=\"a,b\", max-age=3").max_age, s(3));
        assert_eq!(CacheControl::parse(""), CacheControl::default());
        assert_eq!(CacheControl::parse("ünïcödé=ü, max-age=1").max_age, s(1));
    }

    #[test]
    fn vary_lists_and_star() {
        assert_eq!(Vary::parse(["*"]), Vary::Any);
        assert_eq!(
            Vary::parse(["Accept-Encoding, accept", "origin"]),
            Vary::Headers(vec!["Accept-Encoding", "accept", "origin"])
        );
        assert!(Vary::parse(["Accept-Encoding"]).covered_by(&["accept-encoding"]));
        assert!(!Vary::parse(["Cookie"]).covered_by(&["accept-encoding"]));
        assert!(!Vary::Any.covered_by(&["accept-encoding"]));
        let none: [&str; 0] = [];
        assert!(Vary::parse([""]).covered_by(&none));
    }
}
