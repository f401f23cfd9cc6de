//! WebSockets through the gateway, with a real client and server (tokio-tungstenite): the
//! `Upgrade` handshake passes, messages small and large cross both ways, close frames arrive,
//! an upstream that dies mid-stream ends the client's stream, an upstream that refuses the
//! upgrade is answered as it answered, an idle tunnel is closed, and `/state` counts them. On
//! the HTTP/1.1 fast path (which hands the handshake to hyper), on hyper's path from the start,
//! and on a route with layers.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, accept_async, client_async};

/// The longest any step may take.
const STEP: Duration = Duration::from_secs(5);

/// A WebSocket server that echoes every data message; after `die_after` messages (if set) it
/// drops the connection without a close frame.
async fn echo_server(die_after: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = accept_async(tcp).await else {
                    return;
                };
                let mut seen = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        let _ = ws.close(None).await;
                        return;
                    }
                    if msg.is_text() || msg.is_binary() {
                        seen += 1;
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                        if die_after == Some(seen) {
                            // Gone, without a close frame.
                            drop(ws);
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A WebSocket client connected through the gateway at `gw` to `path`.
async fn connect(
    gw: SocketAddr,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(gw).await.unwrap();
    let req = format!("ws://{gw}{path}").into_client_request().unwrap();
    tokio::time::timeout(STEP, client_async(req, tcp))
        .await
        .expect("handshake within STEP")
        .map(|(ws, _)| ws)
}

async fn next(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message or the end within STEP")
        .and_then(Result::ok)
}

/// Text, 1 MiB binary and a close, through `gw`.
async fn echo_round_trip(gw: SocketAddr, label: &str) {
    let mut ws = connect(gw, "/ws").await.expect(label);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")), "{label}");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(big)), "{label}");
    ws.close(None).await.unwrap();
    // The server's close frame comes back, then the stream ends.
    loop {
        match next(&mut ws).await {
            Some(m) if m.is_close() => continue,
            None => break,
            Some(other) => panic!("{label}: {other:?} after close"),
        }
    }
}

/// Waits until `/state`'s stats show `open` tunnels.
async fn until_open(gw: &tollgate_gateway::Gateway, open: i64) {
    for _ in 0..500 {
        if gw.state()["stats"]["upgrades_open"] == open {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("upgrades_open never became {open}: {}", gw.state()["stats"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_on_both_paths_and_layered_routes() {
    bounded(async {
        let up = echo_server(None).await;
        for (fast, layers) in [(true, ""), (false, ""), (true, "[clusters.breaker]\n")] {
            let label = format!("fast path {fast}, layers {layers:?}");
            let mut config = config(&format!(
                "[[clusters]]\nname = \"ws\"\nendpoints = [\"{up}\"]\n{layers}\
                 [[routes]]\ncluster = \"ws\"\n"
            ));
            config.server.h1_fast_path = fast;
            let gw = start(config);
            echo_round_trip(addr(&gw), &label).await;
            // Two at once.
            let (a, b) = tokio::join!(
                echo_round_trip(addr(&gw), &label),
                echo_round_trip(addr(&gw), &label)
            );
            let ((), ()) = (a, b);
            until_open(&gw, 0).await;
            assert_eq!(gw.state()["stats"]["upgrades_total"], 3, "{label}");
            stop(gw).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_gone_mid_stream_ends_the_clients_stream() {
    bounded(async {
        let up = echo_server(Some(1)).await;
        let gw = start(config(&single(up, "http1")));
        let mut ws = connect(addr(&gw), "/ws").await.unwrap();
        ws.send(Message::text("one")).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text("one")));
        // The upstream dropped its connection: the client's stream ends, with no hang.
        assert_eq!(next(&mut ws).await, None);
        until_open(&gw, 0).await;
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_answered_as_the_upstream_answered() {
    bounded(async {
        // An HTTP upstream that does not speak WebSocket: 404 to everything.
        let up = upstream(|_req| async { text(http::StatusCode::NOT_FOUND, "no ws here") }).await;
        let gw = start(config(&single(up, "http1")));
        match connect(addr(&gw), "/ws").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), http::StatusCode::NOT_FOUND);
            }
            other => panic!("expected the upstream's 404, got {other:?}"),
        }
        assert_eq!(gw.state()["stats"]["upgrades_total"], 0);
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    bounded(async {
        let up = echo_server(None).await;
        let mut config = config(&single(up, "http1"));
        config.timeouts.upgrade_idle_ms = 300;
        let gw = start(config);
        let mut ws = connect(addr(&gw), "/ws").await.unwrap();
        // Traffic keeps it open past the idle time...
        for i in 0..5 {
            ws.send(Message::text(format!("{i}"))).await.unwrap();
            assert_eq!(next(&mut ws).await, Some(Message::text(format!("{i}"))));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ...silence closes it.
        assert_eq!(next(&mut ws).await, None);
        until_open(&gw, 0).await;
        stop(gw).await;
    })
    .await;
}

/// An HTTP/2 connection to the gateway at `gw` (h2c by prior knowledge) that has seen the
/// gateway's SETTINGS (it answered a GET), so that extended CONNECT may be sent.
async fn h2_connection(
    gw: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = TcpStream::connect(gw).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let get = http::Request::get(format!("http://{gw}/plain"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let _ = send.send_request(get).await.expect("a GET first");
    send
}

/// An RFC 8441 extended CONNECT for `path` with `:protocol = protocol`.
fn extended_connect(
    gw: SocketAddr,
    path: &str,
    protocol: &'static str,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = http::Request::connect(format!("http://{gw}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_reach_an_http1_upstream() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    bounded(async {
        let up = echo_server(None).await;
        for layers in ["", "[clusters.breaker]\n"] {
            let mut config = config(&format!(
                "[[clusters]]\nname = \"ws\"\nendpoints = [\"{up}\"]\n{layers}\
                 [[routes]]\ncluster = \"ws\"\n"
            ));
            config.timeouts.upgrade_idle_ms = 5_000;
            let gw = start(config);
            let at = addr(&gw);
            let mut send = h2_connection(at).await;
            // Two WebSockets on one HTTP/2 connection, each on its own stream.
            let mut streams = Vec::new();
            for i in 0..2 {
                let resp = tokio::time::timeout(
                    STEP,
                    send.send_request(extended_connect(at, "/ws", "websocket")),
                )
                .await
                .expect("an answer within STEP")
                .expect("the CONNECT is answered");
                assert_eq!(resp.status(), http::StatusCode::OK, "{layers:?} {i}");
                assert!(resp.headers().get("sec-websocket-accept").is_none());
                let io = hyper::upgrade::on(resp)
                    .await
                    .expect("the stream is a tunnel");
                let ws = WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(io),
                    Role::Client,
                    None,
                )
                .await;
                streams.push(ws);
            }
            for (i, ws) in streams.iter_mut().enumerate() {
                ws.send(Message::text(format!("hello {i}"))).await.unwrap();
                let big = Message::binary(vec![i as u8; 256 * 1024]);
                ws.send(big.clone()).await.unwrap();
                let got = tokio::time::timeout(STEP, ws.next()).await.unwrap();
                assert_eq!(got.unwrap().unwrap(), Message::text(format!("hello {i}")));
                let got = tokio::time::timeout(STEP, ws.next()).await.unwrap();
                assert_eq!(got.unwrap().unwrap(), big);
            }
            until_open(&gw, 2).await;
            for mut ws in streams {
                // The close frame goes out; the flush and END_STREAM after it may find the
                // stream already reset with NO_ERROR (the upstream answered the close and
                // hung up, and the gateway ended the tunnel), as HTTP/2 lets a server finish.
                let _ = ws.close(None).await;
                // The upstream's close frame comes back, or the stream just ends.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
            }
            until_open(&gw, 0).await;
            assert_eq!(gw.state()["stats"]["upgrades_total"], 2, "{layers:?}");
            // Another `:protocol`, or a plain CONNECT, is refused.
            let resp = send
                .send_request(extended_connect(at, "/ws", "connect-udp"))
                .await
                .unwrap();
            assert_eq!(resp.status(), http::StatusCode::METHOD_NOT_ALLOWED);
            let mut plain = extended_connect(at, "/ws", "websocket");
            plain.extensions_mut().clear();
            let resp = send.send_request(plain).await.unwrap();
            assert_eq!(resp.status(), http::StatusCode::METHOD_NOT_ALLOWED);
            stop(gw).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_websocket_is_closed() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    bounded(async {
        let up = echo_server(None).await;
        let mut config = config(&single(up, "http1"));
        config.timeouts.upgrade_idle_ms = 300;
        let gw = start(config);
        let at = addr(&gw);
        let mut send = h2_connection(at).await;
        let resp = send
            .send_request(extended_connect(at, "/ws", "websocket"))
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        let io = hyper::upgrade::on(resp).await.unwrap();
        let mut ws =
            WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(io), Role::Client, None)
                .await;
        ws.send(Message::text("one")).await.unwrap();
        let got = tokio::time::timeout(STEP, ws.next()).await.unwrap();
        assert_eq!(got.unwrap().unwrap(), Message::text("one"));
        until_open(&gw, 1).await;
        // Nothing moves: the tunnel is closed and the client's stream ends.
        let end = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("closed within STEP");
        assert!(
            !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
            "{end:?}"
        );
        until_open(&gw, 0).await;
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_websocket_refused_or_not_switched_is_no_tunnel() {
    bounded(async {
        // Not a WebSocket server: 404 to `/ws`, 200 to anything else.
        let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/ws" {
                text(http::StatusCode::NOT_FOUND, "no ws here")
            } else {
                text(http::StatusCode::OK, "a page")
            }
        })
        .await;
        let gw = start(config(&single(up, "http1")));
        let at = addr(&gw);
        let mut send = h2_connection(at).await;
        let resp = send
            .send_request(extended_connect(at, "/ws", "websocket"))
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            http::StatusCode::NOT_FOUND,
            "as the upstream answered"
        );
        // A 200 instead of a 101 is not an open tunnel.
        let resp = send
            .send_request(extended_connect(at, "/page", "websocket"))
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::BAD_GATEWAY);
        assert_eq!(gw.state()["stats"]["upgrades_total"], 0);
        stop(gw).await;
    })
    .await;
}
