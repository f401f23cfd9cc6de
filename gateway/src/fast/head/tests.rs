//! Unit tests of the request-head step.

use super::*;

const UP: &str = "10.0.0.9:8080";
const LIMITS: Limits = Limits {
    max_bytes: 8192,
    max_headers: 100,
    max_body: Some(1000),
    max_held_body: 100,
    request_id: crate::request_id::Policy::OFF,
    fresh_id: [b'0'; 32],
    trace: None,
};

fn fwd() -> Forwarding {
    Forwarding::new("192.0.2.7".parse().unwrap(), "http", None)
}

fn forward(req: &[u8], preserve_host: bool) -> (Head, String) {
    let mut out = Vec::new();
    let step = prepare(req, LIMITS, &fwd(), &mut out, |_, _| Route::Forward {
        target: (),
        addr: UP.parse().unwrap(),
        preserve_host,
    });
    match step {
        Step::Forward { head, addr, .. } => {
            assert_eq!(addr.to_string(), UP);
            (head, String::from_utf8(out).unwrap())
        }
        other => panic!("not forwarded: {other:?}"),
    }
}

fn step(req: &[u8]) -> Step<()> {
    prepare(req, LIMITS, &fwd(), &mut Vec::new(), |_, _| {
        Route::Forward {
            target: (),
            addr: UP.parse().unwrap(),
            preserve_host: true,
        }
    })
}

#[test]
fn forwards_a_get_with_the_proxy_headers() {
    let req = b"GET /a/b?x=1 HTTP/1.1\r\nHost: svc.example\r\nAccept: */*\r\n\r\nNEXT";
    let (head, out) = forward(req, true);
    assert_eq!(head.len, req.len() - 4);
    assert_eq!(&req[head.method.clone()], b"GET");
    assert_eq!(&req[head.path.clone()], b"/a/b");
    assert_eq!(&req[head.host.clone()], b"svc.example");
    assert_eq!(
        (head.body_len, head.close, head.idempotent),
        (0, false, true)
    );
    assert_eq!(
        out,
        "GET /a/b?x=1 HTTP/1.1\r\nhost: svc.example\r\nAccept: */*\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: svc.example\r\n\
         forwarded: for=192.0.2.7;proto=http;host=\"svc.example\"\r\n\
         via: 1.1 tollgate\r\n\r\n"
    );
}

#[test]
fn endpoint_host_unless_preserved() {
    let (_, out) = forward(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false);
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nhost: 10.0.0.9:8080\r\n"),
        "{out}"
    );
    assert!(out.contains("x-forwarded-host: a\r\n"), "{out}");
}

#[test]
fn strips_hop_by_hop_and_connection_named_headers() {
    let req = b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n\
        X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: x\r\n\
        TE: gzip, trailers;q=1\r\nTrailer: x\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: spoof\r\nX-Forwarded-For: 10.1.1.1\r\nX-Forwarded-For: 10.2.2.2\r\n\
        Forwarded: for=10.1.1.1\r\nVia: 1.0 edge\r\nContent-Length: 3\r\n\r\nabc";
    let (head, out) = forward(req, true);
    assert_eq!(
        (head.body_len, head.close, head.idempotent),
        (3, false, false)
    );
    let lower = out.to_ascii_lowercase();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-auth",
        "trailer:",
        "spoof",
    ] {
        assert!(!lower.contains(gone), "{gone} in {out}");
    }
    assert!(out.contains("te: trailers\r\n"), "{out}");
    assert!(
        out.contains("x-forwarded-for: 10.1.1.1, 192.0.2.7\r\n"),
        "{out}"
    );
    assert!(out.contains("x-forwarded-proto: http\r\n"), "{out}");
    assert!(out.contains("Forwarded: for=10.1.1.1\r\n"), "{out}");
    assert!(out.contains("Via: 1.0 edge\r\n"), "{out}");
    assert!(out.ends_with("via: 1.1 tollgate\r\n\r\n"), "{out}");
    assert!(out.contains("Content-Length: 3\r\n"), "{out}");
}

#[test]
fn every_connection_field_names_headers() {
    let req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\
        Connection: a, b, c, d, e, f, g, h, i, x-secret\r\nX-Secret: 1\r\nI: 2\r\nJ: 3\r\n\r\n";
    let (_, out) = forward(req, true);
    assert!(!out.contains("X-Secret") && !out.contains("I: 2"), "{out}");
    assert!(out.contains("J: 3\r\n"), "{out}");
}

#[test]
fn a_repeated_length_is_sent_once() {
    let req = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab";
    let (head, out) = forward(req, true);
    assert_eq!(head.body_len, 2);
    assert_eq!(
        out.to_ascii_lowercase().matches("content-length").count(),
        1,
        "{out}"
    );
}

#[test]
fn close_is_noted() {
    let (head, _) = forward(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n",
        true,
    );
    assert!(head.close);
}

/// What the fast path does not take; heads over the limits are refused instead.
#[test]
fn unusual_requests_go_to_hyper() {
    let cases: [&[u8]; 15] = [
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GARBAGE\x01 / HTTP/1.1\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /a\"<>{} HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n",
    ];
    for case in cases {
        assert!(
            matches!(step(case), Step::Hyper),
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
    let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..LIMITS.max_headers {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', LIMITS.max_bytes));
    big.extend_from_slice(b"\r\n\r\n");
    // Heads over the limits are answered here (hyper could parse past its own limit when a
    // whole head arrives at once), and the connection closes after.
    for over in [many, big] {
        let Step::Local { head, answer } = step(&over) else {
            panic!("{:?}", step(&over));
        };
        assert_eq!(answer, Answer::HeadTooLarge);
        assert!(head.close);
    }
}

#[test]
fn partial_heads_wait() {
    let req = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    for cut in 0..req.len() {
        assert!(matches!(step(&req[..cut]), Step::Partial), "{cut}");
    }
}

#[test]
fn bodies_are_held_whole_or_refused() {
    let req = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab";
    assert!(matches!(step(req), Step::NeedBody(n) if n == req.len() + 3));
    let big = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n";
    assert!(matches!(
        step(big),
        Step::Local {
            answer: Answer::BodyTooLarge,
            ..
        }
    ));
}

#[test]
fn te_named_in_connection_is_dropped() {
    let req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: TE\r\nTE: trailers\r\n\r\n";
    let (_, out) = forward(req, true);
    assert!(!out.to_ascii_lowercase().contains("te: trailers"), "{out}");
}

#[test]
fn the_route_decides() {
    let req = b"DELETE /x?q HTTP/1.1\r\nHost: H.example\r\nContent-Length: 7\r\n\r\n1234567";
    let mut seen = None;
    let got = prepare(req, LIMITS, &fwd(), &mut Vec::new(), |r, len| {
        let fields: Vec<_> = r.fields.iter().map(|h| (h.name, h.value)).collect();
        seen = Some((
            r.host.to_owned(),
            r.path.to_owned(),
            r.query.map(str::to_owned),
            r.method.to_owned(),
            len,
            fields.len(),
        ));
        Route::<()>::Local(Answer::BodyTooLarge)
    });
    assert_eq!(
        seen,
        Some((
            "H.example".into(),
            "/x".into(),
            Some("q".into()),
            "DELETE".into(),
            7,
            2
        ))
    );
    assert!(matches!(
        got,
        Step::Local {
            answer: Answer::BodyTooLarge,
            ..
        }
    ));
    let got = prepare(req, LIMITS, &fwd(), &mut Vec::new(), |_, _| {
        Route::<()>::Layered
    });
    let Step::Layered { head, request } = got else {
        panic!("{got:?}");
    };
    // The layers get the request as sent, the body following the head in the buffer.
    assert_eq!(head.body_len, 7);
    assert_eq!(&req[head.len..], b"1234567");
    assert_eq!(request.method(), http::Method::DELETE);
    assert_eq!(request.uri(), "/x?q");
    assert_eq!(request.headers()["host"], "H.example");
    assert_eq!(request.headers()["content-length"], "7");
}

/// From a trusted peer, the fast path writes the same `X-Forwarded-For` and `Forwarded` as the
/// hyper path (`headers::add_forwarding`), and names the same client.
#[test]
fn a_trusted_chain_matches_the_hyper_path() {
    use crate::forwarded::TrustedProxies;
    use std::sync::Arc;
    let trusted = Arc::new(TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7"]).unwrap());
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("X-Forwarded-For", "6.6.6.6, 203.0.113.1, 10.1.1.1")],
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("X-Forwarded-For", "10.1.1.1"),
        ],
        &[("X-Forwarded-For", "unknown")],
        &[("X-Forwarded-For", "10.2.2.2, 10.1.1.1")],
        &[
            ("x-forwarded-for", "1.1.1.1"),
            (
                "Forwarded",
                "for=6.6.6.6, for=\"[2001:db8::5]:80\";proto=https",
            ),
            ("forwarded", "for=10.3.3.3;by=10.0.0.1"),
        ],
        &[("Forwarded", "for=_hidden, for=10.3.3.3")],
        &[
            ("Connection", "x-forwarded-for"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        &[
            ("Connection", "forwarded"),
            ("Forwarded", "for=203.0.113.8"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    ];
    for fields in cases {
        let fwd = Forwarding::new("192.0.2.7".parse().unwrap(), "http", Some(trusted.clone()));
        let mut req = b"GET / HTTP/1.1\r\nHost: h.example\r\n".to_vec();
        let mut map = http::HeaderMap::new();
        for (k, v) in *fields {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req.extend_from_slice(b"\r\n");
        let mut out = Vec::new();
        let step = prepare(&req, LIMITS, &fwd, &mut out, |_, _| Route::Forward {
            target: (),
            addr: UP.parse().unwrap(),
            preserve_host: true,
        });
        let Step::Forward { head, .. } = step else {
            panic!("not forwarded: {step:?}");
        };
        let client = crate::headers::client(&map, &fwd);
        crate::headers::strip_hop_by_hop(&mut map, true);
        let host = http::HeaderValue::from_static("h.example");
        crate::headers::add_forwarding(&mut map, &fwd, Some(&host), http::Version::HTTP_11);
        let text = String::from_utf8(out).unwrap();
        let fast = |name: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
                .collect()
        };
        let hyper = |name: &str| -> Vec<String> {
            map.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        for name in ["x-forwarded-for", "forwarded"] {
            assert_eq!(fast(name), hyper(name), "{name} for {fields:?}: {text}");
        }
        assert_eq!(head.client, Some(client), "{fields:?}");
    }
}

#[test]
fn tracing_replaces_the_traceparent_and_keeps_tracestate() {
    let limits = Limits {
        trace: Some(crate::trace::Fresh::draw(1.0)),
        ..LIMITS
    };
    let forward_traced = |req: &[u8]| {
        let mut out = Vec::new();
        let step = prepare(req, limits, &fwd(), &mut out, |_, _| Route::Forward {
            target: (),
            addr: UP.parse().unwrap(),
            preserve_host: true,
        });
        match step {
            Step::Forward { head, .. } => (head, String::from_utf8(out).unwrap()),
            other => panic!("not forwarded: {other:?}"),
        }
    };
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req =
        format!("GET / HTTP/1.1\r\nHost: a\r\nTraceParent: {client}\r\ntracestate: v=1\r\n\r\n");
    let (head, out) = forward_traced(req.as_bytes());
    let t = head.trace.expect("a trace context");
    assert_eq!(
        t.parent_id,
        [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    let sent: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("traceparent: "))
        .collect();
    assert_eq!(sent.len(), 1, "{out}");
    assert_eq!(&sent[0][..36], &client[..36]);
    assert_ne!(&sent[0][36..52], &client[36..52]);
    assert!(!out.contains("TraceParent"), "{out}");
    assert!(out.contains("tracestate: v=1\r\n"), "{out}");
    // Two values: a new trace.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: a\r\ntraceparent: {client}\r\ntraceparent: {client}\r\n\r\n"
    );
    let (head, out) = forward_traced(req.as_bytes());
    assert_eq!(head.trace.unwrap().parent_id, [0; 8]);
    assert_eq!(out.matches("traceparent: ").count(), 1, "{out}");
    assert!(!out.contains(&client[3..35]), "{out}");
    // Off: passed on as it came, nothing added.
    let (head, out) = forward(b"GET / HTTP/1.1\r\nHost: a\r\ntraceparent: x\r\n\r\n", true);
    assert_eq!(head.trace, None);
    assert_eq!(out.matches("traceparent").count(), 1, "{out}");
}

/// The fast path's route lookup (on httparse's fields, from `prepare`) and hyper's path's
/// (`RouteTable::find_http` on the request's `HeaderMap`) choose the same route.
mod lookups_agree {
    use super::*;
    use crate::config::RouteConfig;
    use crate::config::route::{HeaderMatch, QueryMatch};
    use crate::route::RouteTable;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const HOSTS: [&str; 4] = ["*", "a.example", "*.example", "b.a.example"];
    const REQ_HOSTS: [&str; 5] = [
        "a.example",
        "A.example:8080",
        "b.a.example.",
        "c.example",
        "x",
    ];
    const PREFIXES: [&str; 4] = ["/", "/api", "/api/v2", "/x"];
    const PATHS: [&str; 5] = ["/", "/api", "/api/v2/z", "/x/y", "/apix"];
    const METHODS: [&str; 4] = ["GET", "POST", "DELETE", "PATCH"];
    const NAMES: [&str; 3] = ["x-a", "X-B", "user-agent"];
    const VALUES: [&str; 4] = ["1", "curl/8", "gold", "g"];
    const PARAMS: [&str; 3] = ["v", "debug", "a b"];
    const PARAM_VALUES: [&str; 3] = ["2", "", "c&d"];
    const QUERIES: [&str; 9] = [
        "v=2",
        "v=%32",
        "debug",
        "a+b=c%26d",
        "a%20b=c%26d&v=",
        "&&debug=1",
        "v=2%",
        "x=%zz&v=2",
        "",
    ];

    fn header_cond() -> impl Strategy<Value = HeaderMatch> {
        (0..NAMES.len(), 0..VALUES.len(), 0..3_u8, any::<bool>()).prop_map(
            |(n, v, kind, invert)| HeaderMatch {
                name: NAMES[n].into(),
                value: (kind == 0).then(|| VALUES[v].into()),
                prefix: (kind == 1).then(|| VALUES[v][..1].into()),
                present: (kind == 2).then_some(true),
                invert,
            },
        )
    }

    fn query_cond() -> impl Strategy<Value = QueryMatch> {
        (0..PARAMS.len(), proptest::option::of(0..PARAM_VALUES.len())).prop_map(|(n, v)| {
            QueryMatch {
                name: PARAMS[n].into(),
                value: v.map(|v| PARAM_VALUES[v].into()),
                present: v.is_none().then_some(true),
            }
        })
    }

    fn route() -> impl Strategy<Value = RouteConfig> {
        (
            0..HOSTS.len(),
            0..PREFIXES.len(),
            0..16_u8,
            vec(header_cond(), 0..3),
            vec(query_cond(), 0..2),
        )
            .prop_map(|(h, p, m, headers, query)| RouteConfig {
                host: HOSTS[h].into(),
                path_prefix: PREFIXES[p].into(),
                methods: (0..METHODS.len())
                    .filter(|i| m & (1 << i) != 0)
                    .map(|i| METHODS[i].into())
                    .collect(),
                headers,
                query,
                cluster: Some("c".into()),
                clusters: Vec::new(),
                sticky: None,
                request_timeout_ms: None,
                kind: Default::default(),
                admission: None,
                priority: None,
                cache: None,
                batch: None,
                retry: None,
            })
    }

    proptest! {
        #[test]
        fn fast_and_hyper_lookups_agree(
            routes in vec(route(), 0..7),
            host in 0..REQ_HOSTS.len(),
            path in 0..PATHS.len(),
            query in proptest::option::of(vec(0..QUERIES.len(), 1..3)),
            method in 0..METHODS.len(),
            fields in vec((0..NAMES.len(), 0..VALUES.len()), 0..4),
        ) {
            let table = RouteTable::new(&routes);
            let (host, method) = (REQ_HOSTS[host], METHODS[method]);
            let target = match &query {
                Some(q) => {
                    let q: Vec<&str> = q.iter().map(|i| QUERIES[*i]).collect();
                    format!("{}?{}", PATHS[path], q.join("&"))
                }
                None => PATHS[path].to_owned(),
            };
            let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
            let mut req = http::Request::builder()
                .method(method)
                .uri(&target)
                .header("host", host);
            for (n, v) in &fields {
                raw.push_str(&format!("{}: {}\r\n", NAMES[*n], VALUES[*v]));
                req = req.header(NAMES[*n], VALUES[*v]);
            }
            raw.push_str("\r\n");
            let mut fast = None;
            let step = prepare(raw.as_bytes(), LIMITS, &fwd(), &mut Vec::new(), |r, _| {
                fast = Some(table.find(r));
                Route::<()>::Local(Answer::NoRoute)
            });
            prop_assert!(matches!(step, Step::Local { .. }), "{step:?}");
            let hyper = table.find_http(&req.body(()).unwrap(), method);
            prop_assert_eq!(fast, Some(hyper));
        }
    }
}
