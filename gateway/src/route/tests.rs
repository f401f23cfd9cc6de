//! Route matching, precedence and the weighted split.

use super::*;
use crate::config::route::{HeaderMatch, QueryMatch, StickyKey};
use proptest::prelude::*;

fn route(host: &str, prefix: &str, methods: &[&str], cluster: &str) -> RouteConfig {
    RouteConfig {
        host: host.into(),
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).into()).collect(),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: Some(cluster.into()),
        clusters: Vec::new(),
        sticky: None,
        request_timeout_ms: None,
        kind: Default::default(),
        admission: None,
        priority: None,
        cache: None,
        batch: None,
        retry: None,
    }
}

fn header(name: &str, value: Option<&str>, prefix: Option<&str>, invert: bool) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: value.map(Into::into),
        prefix: prefix.map(Into::into),
        present: (value.is_none() && prefix.is_none()).then_some(true),
        invert,
    }
}

fn query(name: &str, value: Option<&str>) -> QueryMatch {
    QueryMatch {
        name: name.into(),
        value: value.map(Into::into),
        present: value.is_none().then_some(true),
    }
}

/// A lookup with `fields` as the fast path holds them.
fn find(
    t: &RouteTable,
    host: &str,
    target: &str,
    method: &str,
    fields: &[(&str, &str)],
) -> RouteMatch {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let lines: Vec<httparse::Header<'_>> = fields
        .iter()
        .map(|(name, value)| httparse::Header {
            name,
            value: value.as_bytes(),
        })
        .collect();
    t.find(&Request {
        host,
        path,
        query,
        method,
        fields: lines.as_slice(),
    })
}

#[test]
fn most_specific_wins() {
    let t = RouteTable::new(&[
        route("*", "/", &[], "any"),
        route("*", "/api", &[], "api"),
        route("*.example.com", "/", &[], "wild"),
        route("www.example.com", "/", &[], "exact"),
        route("*", "/api/v2", &["POST"], "v2post"),
    ]);
    let f = |host, path, method| find(&t, host, path, method, &[]);
    assert_eq!(f("other", "/x", "GET"), RouteMatch::Route(0));
    assert_eq!(f("other:8080", "/api/x", "GET"), RouteMatch::Route(1));
    assert_eq!(f("other", "/apix", "GET"), RouteMatch::Route(0));
    assert_eq!(f("a.Example.com", "/api", "GET"), RouteMatch::Route(2));
    assert_eq!(f("WWW.example.com.", "/api", "GET"), RouteMatch::Route(3));
    assert_eq!(f("example.com", "/", "GET"), RouteMatch::Route(0));
    assert_eq!(f("h", "/api/v2/x", "POST"), RouteMatch::Route(4));
    assert_eq!(f("h", "/api/v2/x", "GET"), RouteMatch::Route(1));
}

#[test]
fn method_not_allowed_and_not_found() {
    let t = RouteTable::new(&[route("*", "/only", &["GET", "HEAD"], "c")]);
    assert_eq!(find(&t, "h", "/only", "HEAD", &[]), RouteMatch::Route(0));
    assert_eq!(
        find(&t, "h", "/only", "DELETE", &[]),
        RouteMatch::MethodNotAllowed
    );
    assert_eq!(find(&t, "h", "/other", "GET", &[]), RouteMatch::NotFound);
}

#[test]
fn hosts_normalize() {
    assert_eq!(normalize_host("a.b:80"), "a.b");
    assert_eq!(normalize_host("a.b."), "a.b");
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
    assert_eq!(normalize_host("é:x"), "é:x");
}

#[test]
fn header_conditions() {
    let mut exact = route("*", "/", &[], "exact");
    exact.headers = vec![header("X-Canary", Some("1"), None, false)];
    let mut prefix = route("*", "/", &[], "prefix");
    prefix.headers = vec![header("user-agent", None, Some("curl/"), false)];
    let mut present = route("*", "/", &[], "present");
    present.headers = vec![header("x-debug", None, None, false)];
    let mut absent = route("*", "/", &[], "absent");
    absent.headers = vec![header("cookie", None, None, true)];
    let t = RouteTable::new(&[exact, prefix, present, absent, route("*", "/", &[], "rest")]);
    let f = |fields: &[(&str, &str)]| find(&t, "h", "/x", "GET", fields);
    // Names are case-insensitive; values exact and case-sensitive.
    assert_eq!(
        f(&[("x-canary", "1"), ("cookie", "a")]),
        RouteMatch::Route(0)
    );
    assert_eq!(
        f(&[("x-canary", "10"), ("cookie", "a")]),
        RouteMatch::Route(4)
    );
    // Any field line of the name may match.
    assert_eq!(
        f(&[("X-CANARY", "0"), ("x-canary", "1"), ("cookie", "a")]),
        RouteMatch::Route(0)
    );
    assert_eq!(
        f(&[("User-Agent", "curl/8.5"), ("cookie", "a")]),
        RouteMatch::Route(1)
    );
    assert_eq!(
        f(&[("User-Agent", "Curl/8.5"), ("cookie", "a")]),
        RouteMatch::Route(4)
    );
    assert_eq!(f(&[("x-debug", ""), ("cookie", "a")]), RouteMatch::Route(2));
    // `present` with `invert`: only without the field.
    assert_eq!(f(&[]), RouteMatch::Route(3));
    assert_eq!(f(&[("cookie", "a")]), RouteMatch::Route(4));
}

#[test]
fn query_conditions_compare_decoded() {
    let mut v2 = route("*", "/", &[], "v2");
    v2.query = vec![query("version", Some("2 beta"))];
    let mut debug = route("*", "/", &[], "debug");
    debug.query = vec![query("debug", None)];
    let t = RouteTable::new(&[v2, debug, route("*", "/", &[], "rest")]);
    let f = |target: &str| find(&t, "h", target, "GET", &[]);
    assert_eq!(f("/x?version=2+beta"), RouteMatch::Route(0));
    assert_eq!(f("/x?a=1&version=2%20beta"), RouteMatch::Route(0));
    assert_eq!(f("/x?vers%69on=2%20bet%61"), RouteMatch::Route(0));
    assert_eq!(f("/x?version=2%2Bbeta"), RouteMatch::Route(2));
    assert_eq!(f("/x?version=2"), RouteMatch::Route(2));
    assert_eq!(f("/x?debug"), RouteMatch::Route(1));
    assert_eq!(f("/x?debug=0"), RouteMatch::Route(1));
    assert_eq!(f("/x?debugger=1"), RouteMatch::Route(2));
    assert_eq!(f("/x"), RouteMatch::Route(2));
    assert_eq!(f("/x?"), RouteMatch::Route(2));
    // A `%` without two hex digits stands for itself.
    assert_eq!(Decoded::new(b"a%2").collect::<Vec<_>>(), b"a%2");
    assert_eq!(Decoded::new(b"%zz%41+").collect::<Vec<_>>(), b"%zzA ");
}

#[test]
fn query_work_is_bounded() {
    let mut debug = route("*", "/", &[], "debug");
    debug.query = vec![query("debug", None)];
    let t = RouteTable::new(&[debug, route("*", "/", &[], "rest")]);
    // Within the first MAX_QUERY_PARAMS parameters it is seen; past them it is not.
    let before = format!("/x?{}debug", "a=1&".repeat(MAX_QUERY_PARAMS - 1));
    assert_eq!(find(&t, "h", &before, "GET", &[]), RouteMatch::Route(0));
    let after = format!("/x?{}debug", "a=1&".repeat(MAX_QUERY_PARAMS));
    assert_eq!(find(&t, "h", &after, "GET", &[]), RouteMatch::Route(1));
    let abusive = format!("/x?{}debug", "&".repeat(100_000));
    assert_eq!(find(&t, "h", &abusive, "GET", &[]), RouteMatch::Route(1));
    assert_eq!(params(&abusive[3..]).count(), 0);
}

#[test]
fn more_conditions_rank_first_then_file_order() {
    let mut one = route("*", "/api", &[], "one");
    one.headers = vec![header("x-a", None, None, false)];
    let mut two = route("*", "/api", &[], "two");
    two.headers = vec![header("x-a", None, None, false)];
    two.query = vec![query("q", None)];
    let mut one_again = route("*", "/api", &[], "one-again");
    one_again.headers = vec![header("x-b", None, None, false)];
    let mut shorter = route("*", "/", &[], "shorter");
    shorter.headers = vec![
        header("x-a", None, None, false),
        header("x-b", None, None, false),
    ];
    let t = RouteTable::new(&[
        route("*", "/api", &[], "plain"),
        one,
        two,
        one_again,
        shorter,
    ]);
    let f = |target: &str, fields: &[(&str, &str)]| find(&t, "h", target, "GET", fields);
    // Two conditions beat one; one beats none; ties keep file order.
    assert_eq!(f("/api?q", &[("x-a", "")]), RouteMatch::Route(2));
    assert_eq!(f("/api", &[("x-a", ""), ("x-b", "")]), RouteMatch::Route(1));
    assert_eq!(f("/api", &[("x-b", "")]), RouteMatch::Route(3));
    assert_eq!(f("/api", &[]), RouteMatch::Route(0));
    // A longer prefix outranks more conditions.
    assert_eq!(f("/api", &[("x-a", ""), ("x-b", "")]), RouteMatch::Route(1));
    assert_eq!(
        f("/other", &[("x-a", ""), ("x-b", "")]),
        RouteMatch::Route(4)
    );
    assert_eq!(f("/other", &[("x-a", "")]), RouteMatch::NotFound);
}

#[test]
fn method_not_allowed_needs_the_conditions() {
    let mut get = route("*", "/admin", &["GET"], "c");
    get.headers = vec![header("x-admin", Some("yes"), None, false)];
    let t = RouteTable::new(&[get]);
    let admin = [("x-admin", "yes")];
    assert_eq!(find(&t, "h", "/admin", "GET", &admin), RouteMatch::Route(0));
    assert_eq!(
        find(&t, "h", "/admin", "POST", &admin),
        RouteMatch::MethodNotAllowed
    );
    // The method does not match, but neither do the conditions: not found.
    assert_eq!(find(&t, "h", "/admin", "POST", &[]), RouteMatch::NotFound);
    assert_eq!(find(&t, "h", "/admin", "GET", &[]), RouteMatch::NotFound);
    // A less specific route that allows the method wins over the 405.
    let mut get = route("*", "/admin", &["GET"], "c");
    get.headers = vec![header("x-admin", Some("yes"), None, false)];
    let t = RouteTable::new(&[get, route("*", "/", &[], "any")]);
    assert_eq!(
        find(&t, "h", "/admin", "POST", &admin),
        RouteMatch::Route(1)
    );
}

#[test]
fn hyper_fields_match_as_httparse_lines() {
    let mut r = route("*", "/", &[], "c");
    r.headers = vec![header("x-tier", None, Some("go"), false)];
    r.query = vec![query("v", Some("2"))];
    let t = RouteTable::new(&[r]);
    let req = http::Request::get("/p?v=%32")
        .header("host", "h")
        .header("x-tier", "silver")
        .header("X-Tier", "gold")
        .body(())
        .unwrap();
    assert_eq!(t.find_http(&req, "GET"), RouteMatch::Route(0));
    let req = http::Request::get("/p?v=3")
        .header("x-tier", "gold")
        .body(())
        .unwrap();
    assert_eq!(t.find_http(&req, "GET"), RouteMatch::NotFound);
}

#[test]
fn split_is_exact_and_smooth() {
    let s = Split::new(&[95, 5], None);
    // 95:5 reduces to 19:1.
    assert_eq!(s.round(), 20);
    let picks: Vec<usize> = (0..200).map(|_| s.pick(&http::HeaderMap::new())).collect();
    assert_eq!(picks.iter().filter(|b| **b == 1).count(), 10);
    // Smooth: the small branch's picks are spread out, one per round.
    let ones: Vec<usize> = (0..200).filter(|i| picks[*i] == 1).collect();
    assert!(ones.windows(2).all(|w| w[1] - w[0] == 20), "{ones:?}");
    let s = Split::new(&[2, 1, 1], None);
    let picks: Vec<usize> = (0..4).map(|_| s.pick(&http::HeaderMap::new())).collect();
    assert_eq!(picks, [0, 1, 2, 0]);
}

proptest! {
    /// Any run of one round's length holds each branch exactly its weight (reduced by the
    /// gcd) times, wherever the run starts.
    #[test]
    fn split_counts_are_exact(
        weights in proptest::collection::vec(1_u32..200, 1..6),
        skip in 0_usize..500,
    ) {
        let s = Split::new(&weights, None);
        let g = weights.iter().fold(0, |a, w| gcd(a, *w));
        for _ in 0..skip {
            s.pick(&http::HeaderMap::new());
        }
        let mut counts = vec![0_u32; weights.len()];
        for _ in 0..s.round() {
            counts[s.pick(&http::HeaderMap::new())] += 1;
        }
        let want: Vec<u32> = weights.iter().map(|w| w / g).collect();
        prop_assert_eq!(counts, want);
    }
}

fn sticky(header: Option<&str>, cookie: Option<&str>) -> StickyKey {
    StickyKey {
        header: header.map(Into::into),
        cookie: cookie.map(Into::into),
    }
}

fn map(fields: &[(&str, &str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in fields {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

#[test]
fn a_sticky_key_keeps_its_branch() {
    let s = Split::new(&[1, 1, 2], Some(&sticky(Some("X-User"), None)));
    let mut by_branch = [0_usize; 3];
    for user in 0..1000 {
        let fields = map(&[("x-user", &format!("user-{user}"))]);
        let first = s.pick(&fields);
        // The same key, again and again, between other requests: the same branch.
        for _ in 0..3 {
            s.pick(&map(&[]));
            assert_eq!(s.pick(&fields), first);
        }
        by_branch[first] += 1;
    }
    // Keys spread by weight (1:1:2 of 1000; FNV-1a is fixed, so these counts are too).
    assert!(
        by_branch
            .iter()
            .zip([250, 250, 500])
            .all(|(n, w)| n.abs_diff(w) < 60),
        "{by_branch:?}"
    );
    // Without the key: the round, whose steps the keyed requests did not take.
    let s = Split::new(&[1, 1], Some(&sticky(Some("x-user"), None)));
    let keyed = map(&[("x-user", "alice")]);
    let alice = s.pick(&keyed);
    let unkeyed: Vec<usize> = (0..4)
        .map(|_| {
            s.pick(&keyed);
            s.pick(&map(&[]))
        })
        .collect();
    assert_eq!(unkeyed, [0, 1, 0, 1]);
    assert_eq!(s.pick(&keyed), alice);
}

#[test]
fn a_sticky_cookie_is_found_among_others() {
    let by_cookie = Split::new(&[1, 1, 1, 1], Some(&sticky(None, Some("session"))));
    let by_header = Split::new(&[1, 1, 1, 1], Some(&sticky(Some("x-s"), None)));
    for key in ["abc", "def", "ghi", "jkl", "mno"] {
        let want = by_header.pick(&map(&[("x-s", key)]));
        let cookies = [
            format!("session={key}"),
            format!("a=1; session={key}; b=2"),
            format!("a=1;session={key}"),
        ];
        for c in &cookies {
            assert_eq!(by_cookie.pick(&map(&[("cookie", c)])), want, "{c}");
        }
        // In a second `Cookie` field (HTTP/2 sends one per cookie).
        let two = map(&[("cookie", "a=1"), ("cookie", &format!("session={key}"))]);
        assert_eq!(by_cookie.pick(&two), want);
    }
    // A cookie whose name only starts with `session` is not the key: the round goes on.
    let s = Split::new(&[1, 1], Some(&sticky(None, Some("session"))));
    let other = map(&[("cookie", "sessionx=abc; xsession=abc")]);
    assert_eq!((s.pick(&other), s.pick(&other), s.pick(&other)), (0, 1, 0));
}

/// Counts this thread's allocations, so that a test can show a stretch of code makes none.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    /// The system allocator, counting allocations per thread.
    struct Counting;

    // SAFETY: every call is passed to `System` unchanged, which keeps `GlobalAlloc`'s
    // contract; the count is a `const` thread-local `Cell`, which neither allocates nor
    // recurses into the allocator (`try_with` skips it while the thread is torn down).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller keeps `alloc`'s contract, which `System::alloc` shares.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System` (through `alloc` above) with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// How many allocations `f` made on this thread.
    pub(super) fn allocations(f: impl FnOnce()) -> usize {
        let before = ALLOCATIONS.with(Cell::get);
        f();
        ALLOCATIONS.with(Cell::get) - before
    }
}

#[test]
fn lookups_and_picks_allocate_nothing() {
    let mut conditioned = route("*", "/api", &["GET"], "c");
    conditioned.headers = vec![
        header("x-canary", Some("1"), None, false),
        header("user-agent", None, Some("curl/"), false),
        header("cookie", None, None, true),
    ];
    conditioned.query = vec![query("version", Some("2 beta")), query("debug", None)];
    let t = RouteTable::new(&[
        route("*", "/", &[], "any"),
        conditioned,
        route("*.example.com", "/", &["POST"], "wild"),
    ]);
    let lines = [
        httparse::Header {
            name: "X-Canary",
            value: b"1",
        },
        httparse::Header {
            name: "user-agent",
            value: b"curl/8",
        },
    ];
    let query = format!("{}version=2+beta&debug", "a=%41&".repeat(200));
    let fast = Request {
        host: "a.example.com:80",
        path: "/api/x",
        query: Some(&query),
        method: "GET",
        fields: &lines[..],
    };
    let http_req = http::Request::get(format!("/api/x?{query}"))
        .header("host", "a.example.com")
        .header("x-canary", "1")
        .header("user-agent", "curl/8")
        .body(())
        .unwrap();
    let sticky_split = Split::new(&[3, 1], Some(&sticky(None, Some("session"))));
    let cookies = map(&[("cookie", "a=1; session=abc")]);
    let mut found = Vec::with_capacity(8);
    let n = counting::allocations(|| {
        found.push(t.find(&fast));
        found.push(t.find_http(&http_req, "GET"));
        found.push(t.find(&Request {
            method: "PUT",
            ..fast
        }));
        found.push(RouteMatch::Route(sticky_split.pick(&cookies)));
        found.push(RouteMatch::Route(sticky_split.pick(&lines[..])));
    });
    assert_eq!(n, 0, "{found:?}");
    // The counter does count.
    assert_eq!(
        counting::allocations(|| drop(std::hint::black_box(vec![1_u8]))),
        1
    );
    assert_eq!(
        found[..3],
        [
            RouteMatch::Route(1),
            RouteMatch::Route(1),
            RouteMatch::Route(0)
        ]
    );
}

#[test]
fn hosts_are_checked_by_their_grammar() {
    use crate::route::valid_host;
    for good in [
        "example.com",
        "example.com:8080",
        "EXAMPLE.com.",
        "127.0.0.1",
        "[::1]",
        "[::1]:443",
        "a-b_c~d",
        "xn--bcher-kva.example",
        "host:",
    ] {
        assert!(valid_host(good.as_bytes()), "{good}");
    }
    for bad in [
        "", "a b", "a/b", "a\"b", "a:65536", "a:99999", "a:-1", "u@h", "[::1", "[zz]", "[::1]x",
        ":80", "a:8o",
    ] {
        assert!(!valid_host(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn dot_segments_are_found_plain_or_encoded() {
    use crate::route::has_dot_segment;
    for dotted in [
        "/a/../b",
        "/a/./b",
        "/..",
        "/a/.",
        "/%2e%2e/x",
        "/a/.%2E/b",
        "/%2E",
    ] {
        assert!(has_dot_segment(dotted.as_bytes()), "{dotted}");
    }
    for plain in [
        "/",
        "/a/b",
        "/.well-known/x",
        "/a.b/c.",
        "/.../x",
        "/%2f",
        "/a%2eb",
    ] {
        assert!(!has_dot_segment(plain.as_bytes()), "{plain}");
    }
}
