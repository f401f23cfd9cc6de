//! `server.trusted_proxies`: the forwarding fields of a trusted peer are believed and
//! rewritten to the chain the gateway believes; an untrusted peer's are passed on with the
//! peer appended. The client connects from 127.0.0.1 (trusted) or 127.0.0.2 (not).

use crate::common::*;
use crate::upstreams::*;
use crate::wire::*;
use std::net::SocketAddr;
use tollgate_gateway::config::Config;

/// The test config with trusted proxies `10.0.0.0/8` and `127.0.0.1/32`.
fn trusting(up: SocketAddr, fast: bool) -> Config {
    let mut c = cfg(&single(up, "http1"), fast);
    c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "127.0.0.1/32".into()];
    c
}

/// A client connection from `from` (any 127/8 address is local on Linux).
async fn connect_from(from: &str, to: SocketAddr) -> Wire {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(format!("{from}:0").parse().unwrap()).expect("bind");
    Wire::new(s.connect(to).await.expect("gateway accepts"))
}

/// Sends `fields` in a GET and returns the head the upstream read.
async fn upstream_view(c: &mut Wire, fields: &str, path: &str) -> Head {
    let req = format!("GET /hop HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
    let r = c.send_and_reply(req.as_bytes(), "GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    Head::parse(&r.body).expect("the upstream's view of the head")
}

/// A trusted peer's `X-Forwarded-For` is walked from the right past trusted hops; entries left
/// of the client are dropped, and both fields name the believed chain.
pub(crate) async fn a_trusted_proxy_names_the_client(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(trusting(up.addr, fast));
    let mut c = connect_from("127.0.0.1", addr(&gw)).await;
    let seen = upstream_view(
        &mut c,
        "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-For: 10.1.2.3\r\n",
        path,
    )
    .await;
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["203.0.113.7, 10.1.2.3, 127.0.0.1"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("forwarded"),
        ["for=203.0.113.7, for=10.1.2.3, for=127.0.0.1;proto=http;host=\"t\""],
        "{path}: {:?}",
        seen.raw
    );
    // `Forwarded` wins over `X-Forwarded-For` when both come; IPv6 nodes are quoted.
    let seen = upstream_view(
        &mut c,
        "X-Forwarded-For: 9.9.9.9\r\n\
         Forwarded: for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.5\r\n",
        path,
    )
    .await;
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["2001:db8::1, 10.0.0.5, 127.0.0.1"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("forwarded"),
        ["for=\"[2001:db8::1]\", for=10.0.0.5, for=127.0.0.1;proto=http;host=\"t\""],
        "{path}: {:?}",
        seen.raw
    );
    // An entry that is not an address ends the walk at the trusted hop to its right.
    let seen = upstream_view(&mut c, "X-Forwarded-For: 203.0.113.9, unknown\r\n", path).await;
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["127.0.0.1"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"t\""],
        "{path}: {:?}",
        seen.raw
    );
    stop(gw).await;
}

/// An untrusted peer's fields are not believed: they go on as they came, with the peer
/// appended (the rightmost entry is the one the gateway vouches for).
pub(crate) async fn an_untrusted_peer_cannot_spoof_its_address(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(trusting(up.addr, fast));
    let mut c = connect_from("127.0.0.2", addr(&gw)).await;
    let seen = upstream_view(
        &mut c,
        "X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\n",
        path,
    )
    .await;
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["10.0.0.1, 127.0.0.2"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("forwarded"),
        ["for=10.0.0.1", "for=127.0.0.2;proto=http;host=\"t\""],
        "{path}: {:?}",
        seen.raw
    );
    stop(gw).await;
}
