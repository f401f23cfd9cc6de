//! Upstreams that break: resets, garbage, hangs (whole and mid-body), slowness, and HTTP/2
//! streams sharing a connection with them.

use crate::chaos::*;
use http::{Method, StatusCode};
use std::time::Duration;

on_both_front_ends!(broken_upstreams_get_one_answer_each);
/// An upstream that resets, answers garbage, hangs, or is slower than the route's timeout:
/// every request gets exactly one answer (502 or 504), never a hang, through a layered
/// cluster and through the plain one alike; and once the upstreams heal, the same gateway
/// (with whatever pooled connections it kept) answers 200 again.
///
/// Each client task sends its requests one after another on a kept-alive connection, so an
/// extra (second) answer to a request would break the exchange that follows it.
async fn broken_upstreams_get_one_answer_each() {
    bounded(async {
        let cases = [
            ("reset", Mode::Reset, StatusCode::BAD_GATEWAY),
            ("garbage", Mode::Garbage, StatusCode::BAD_GATEWAY),
            ("hang", Mode::Hang, StatusCode::GATEWAY_TIMEOUT),
            ("slow", Mode::Slow, StatusCode::GATEWAY_TIMEOUT),
        ];
        let mut ups = Vec::new();
        let mut rest = String::new();
        for (name, mode, _) in cases {
            let up = ChaosUpstream::start(mode).await;
            up.set_delay(Duration::from_millis(1_500));
            // The layered cluster (a pool section turns the stack on) and a plain one.
            rest += &cluster(
                name,
                &[&up],
                "[clusters.pool]\nmin_limit = 64\nmax_limit = 64\ninitial_limit = 64\n",
                "request_timeout_ms = 400",
            );
            rest += &cluster(
                &format!("plain-{name}"),
                &[&up],
                "",
                "request_timeout_ms = 400",
            );
            ups.push(up);
        }
        let gw = start(config(&rest));
        let base = format!("http://{}", addr(&gw));
        for (name, _, want) in cases {
            for path in [name.to_owned(), format!("plain-{name}")] {
                let replies = burst(&format!("{base}/{path}"), 4, 12).await;
                all_answered(&replies);
                assert_eq!(
                    count(&replies, want),
                    replies.len(),
                    "/{path}: {:?}",
                    replies
                        .iter()
                        .map(|r| r.as_ref().unwrap().status)
                        .collect::<Vec<_>>()
                );
            }
        }
        for up in &ups {
            assert!(up.requests() >= 24, "{} saw {}", up.addr, up.requests());
            up.set(Mode::Ok);
        }
        for (name, _, _) in cases {
            for path in [name.to_owned(), format!("plain-{name}")] {
                let replies = burst(&format!("{base}/{path}"), 4, 8).await;
                all_answered(&replies);
                assert_eq!(count(&replies, StatusCode::OK), 8, "/{path} after healing");
            }
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_body_stalled_upstream_does_not_hang_the_client);
/// An upstream that sends its answer's head and then stalls in the middle of the body: the
/// client is not left waiting; the gateway cuts the answer (the client sees the body fail)
/// within a generous bound, on the layered and the plain path alike.
async fn a_body_stalled_upstream_does_not_hang_the_client() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::StallBody).await;
        let rest = cluster(
            "stall",
            &[&up],
            "[clusters.pool]\nmin_limit = 8\nmax_limit = 8\ninitial_limit = 8\n",
            "request_timeout_ms = 400",
        ) + &cluster("plain-stall", &[&up], "", "request_timeout_ms = 400");
        // Idle connections close after 1 s here, whichever timeout a fix builds on.
        let text = config_text_idle(&rest, 2_000, 1_000);
        let gw = start(tollgate_gateway::config::Config::parse(&text, "chaos.toml").unwrap());
        for path in ["stall", "plain-stall"] {
            let url = format!("http://{}/{path}", addr(&gw));
            // `call` panics if no outcome comes within CALL_LIMIT.
            let r = call(&client(), Method::GET, &url, None).await;
            let err = r.expect_err("a 100-byte body with 10 bytes sent cannot complete");
            assert!(err.starts_with("body"), "/{path}: {err}");
        }
        assert!(up.requests() >= 2);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(http2_streams_fail_alone);
/// HTTP/2 clients multiplex many streams on one connection: when some streams' upstreams
/// reset, answer garbage or hang, only those streams fail (502/504), the others on the same
/// connection succeed, and the connection stays usable.
async fn http2_streams_fail_alone() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Ok).await;
        let reset = ChaosUpstream::start(Mode::Reset).await;
        let garbage = ChaosUpstream::start(Mode::Garbage).await;
        let hang = ChaosUpstream::start(Mode::Hang).await;
        let retry = "[clusters.retry]\nattempts = 1\n";
        let timeout = "request_timeout_ms = 400";
        let rest = cluster("good", &[&good], retry, timeout)
            + &cluster("reset", &[&reset], retry, timeout)
            + &cluster("garbage", &[&garbage], retry, timeout)
            + &cluster("hang", &[&hang], retry, timeout);
        let gw = start(config(&rest));
        let client = h2_client();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (path, want) = [
                ("good", StatusCode::OK),
                ("reset", StatusCode::BAD_GATEWAY),
                ("garbage", StatusCode::BAD_GATEWAY),
                ("hang", StatusCode::GATEWAY_TIMEOUT),
            ][i % 4];
            let (client, url) = (client.clone(), format!("http://{}/{path}", addr(&gw)));
            tasks.push(tokio::spawn(async move {
                let req = http::Request::get(&url)
                    .version(http::Version::HTTP_2)
                    .body(Default::default())
                    .unwrap();
                (path, want, send(&client, req).await)
            }));
        }
        for t in tasks {
            let (path, want, reply) = t.await.unwrap();
            let reply = reply.unwrap_or_else(|e| panic!("/{path}: stream failed: {e}"));
            assert_eq!(reply.status, want, "/{path}: {}", reply.body);
        }
        let req = http::Request::get(format!("http://{}/good", addr(&gw)))
            .version(http::Version::HTTP_2)
            .body(Default::default())
            .unwrap();
        let after = send(&client, req)
            .await
            .expect("the connection is still usable");
        assert_eq!(after.status, StatusCode::OK);
        stop(gw).await;
    })
    .await;
}
