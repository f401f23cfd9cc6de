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
