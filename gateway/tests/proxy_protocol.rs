//! `listeners[].proxy_protocol`: a load balancer's PROXY protocol header (v1 and v2) gives the
//! client's address, which the upstream sees in `X-Forwarded-For` and `Forwarded` on both
//! HTTP/1.1 paths; a connection without a valid header is closed unanswered, and a listener
//! without the setting ignores nothing (a header there is garbage to hyper: 400).

mod common;

use common::*;
use std::time::Duration;

/// A v2 PROXY TCP/IPv4 header from `src:port` to 127.0.0.1:80.
fn v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_names_the_client() {
    bounded(async {
        let up = inspect_upstream().await;
        for fast in [true, false] {
            let mut config = config(&single(up, "http1"));
            config.server.h1_fast_path = fast;
            config.listeners[0].proxy_protocol = true;
            let gw = start(config);
            let at = addr(&gw);
            let limit = Duration::from_secs(5);

            let v1 = [&b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n"[..], GET].concat();
            let out = raw(at, &v1, limit).await;
            assert!(out.starts_with("HTTP/1.1 200"), "fast {fast}: {out}");
            assert!(
                out.contains("x-forwarded-for: 203.0.113.9\n"),
                "fast {fast}: {out}"
            );
            assert!(
                out.contains("forwarded: for=203.0.113.9"),
                "fast {fast}: {out}"
            );

            let v2 = [v2([198, 51, 100, 7], 40000), GET.to_vec()].concat();
            let out = raw(at, &v2, limit).await;
            assert!(
                out.contains("x-forwarded-for: 198.51.100.7\n"),
                "fast {fast}: {out}"
            );

            // UNKNOWN: the socket's own address.
            let unknown = [&b"PROXY UNKNOWN\r\n"[..], GET].concat();
            let out = raw(at, &unknown, limit).await;
            assert!(
                out.contains("x-forwarded-for: 127.0.0.1\n"),
                "fast {fast}: {out}"
            );

            // No header, or a broken one: closed, unanswered.
            for bad in [GET.to_vec(), b"PROXY TCP4 nonsense\r\n".to_vec()] {
                let out = raw(at, &bad, limit).await;
                assert_eq!(out, "", "fast {fast}: {:?}", String::from_utf8_lossy(&bad));
            }
            stop(gw).await;
        }
        // Off by default: a PROXY line is not HTTP.
        let gw = start(config(&single(up, "http1")));
        let v1 = [&b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n"[..], GET].concat();
        let out = raw(addr(&gw), &v1, Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(!out.contains("203.0.113.9"), "{out}");
        stop(gw).await;
    })
    .await;
}
