//! The demo upstream as a gRPC server: a real gRPC client (tonic) gets its message echoed back
//! with status OK from every demo kind, directly and through the gateway's h2c cluster; a
//! malformed frame gets a gRPC status, never a hang; a flaky demo fails its 5th call with
//! `UNAVAILABLE`.

mod common;

use bytes::Bytes;
use common::*;
use http::uri::PathAndQuery;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use std::net::SocketAddr;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// A message of bytes, written with prost's derive (no `.proto` file needed).
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

fn client(addr: SocketAddr) -> Grpc<Channel> {
    Grpc::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    )
}

/// One unary call of `/demo.Echo/Echo` with `data`; the data of the reply.
async fn echo(c: &mut Grpc<Channel>, data: Vec<u8>) -> Result<Vec<u8>, Status> {
    c.ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
    let path = PathAndQuery::from_static("/demo.Echo/Echo");
    let reply: tonic::Response<Blob> = c
        .unary(
            tonic::Request::new(Blob { data }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(reply.into_inner().data)
}

/// `n` payloads drawn from `seed` (splitmix64): lengths below `max`, bytes from the draw.
fn payloads(seed: u64, n: usize, max: usize) -> Vec<Vec<u8>> {
    let mut z = seed;
    let mut next = move || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    let mut out = vec![Vec::new()];
    for _ in 1..n {
        let len = next() as usize % max;
        let fill = next() as u8;
        out.push((0..len).map(|i| fill.wrapping_add(i as u8)).collect());
    }
    out
}

/// A gateway with one demo upstream `d` of `kind` (and `extra` settings) behind an h2c
/// cluster, with a catch-all route to it.
fn demo_gateway(kind: &str, extra: &str) -> tollgate_gateway::Gateway {
    start(config(&format!(
        "[[demo]]\nname = \"d\"\nkind = \"{kind}\"\n{extra}\
         [[clusters]]\nname = \"up\"\nendpoints = [\"demo:d\"]\nprotocol = \"h2c\"\n\
         [[routes]]\ncluster = \"up\"\n"
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_gets_its_message_back_from_every_kind_directly_and_through_the_gateway() {
    bounded(async {
        for (seed, kind, extra) in [
            (1, "fast", ""),
            (2, "slow", "delay_ms = 5\n"),
            (3, "busy", "delay_ms = 2\nworkers = 2\njitter = 0.5\n"),
        ] {
            let gw = demo_gateway(kind, extra);
            let demo = gw.demos()[0].addr;
            // The test config caps bodies through the gateway at 100 000 bytes.
            for (target, max) in [(demo, 1 << 20), (addr(&gw), 90_000)] {
                let mut c = client(target);
                for data in payloads(seed, 12, max) {
                    let len = data.len();
                    let back = echo(&mut c, data.clone())
                        .await
                        .unwrap_or_else(|s| panic!("{kind} via {target}, {len} bytes: {s:?}"));
                    assert!(
                        back == data,
                        "{kind} via {target}: {len} bytes echoed wrong"
                    );
                }
            }
            stop(gw).await;
        }
    })
    .await;
}

/// A raw gRPC POST of `body` over h2c; the status, headers and trailers of the answer.
async fn post(
    addr: SocketAddr,
    body: &[u8],
) -> (StatusCode, http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let req = Request::post(format!("http://{addr}/demo.Echo/Echo"))
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    send(&h2_client(), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_a_grpc_status_directly_and_through_the_gateway() {
    bounded(async {
        let gw = demo_gateway("fast", "");
        for target in [gw.demos()[0].addr, addr(&gw)] {
            for (body, status, message) in [
                (&[0u8, 0, 0][..], "13", "shorter than the 5-byte prefix"),
                (
                    &[0, 0, 0, 0, 9, b'x'],
                    "13",
                    "9-byte message announced, 1 bytes sent",
                ),
                (
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    "13",
                    "more than one message",
                ),
                (
                    &[1, 0, 0, 0, 1, b'x'],
                    "12",
                    "compressed messages are not supported",
                ),
            ] {
                let (s, headers, data, trailers) = post(target, body).await;
                assert_eq!(s, StatusCode::OK, "gRPC errors travel in grpc-status");
                assert_eq!(headers["content-type"], "application/grpc");
                // Trailers-only: the status in the headers, no message, no trailers.
                assert_eq!(headers["grpc-status"], status, "{body:?} via {target}");
                let got = headers["grpc-message"].to_str().unwrap();
                assert!(got.contains(message), "{body:?} via {target}: {got}");
                assert!(data.is_empty());
                assert!(trailers.is_none());
            }
            // A well-formed empty message, for contrast: echoed, status in the trailers.
            let (s, headers, data, trailers) = post(target, &[0, 0, 0, 0, 0]).await;
            assert_eq!(s, StatusCode::OK);
            assert!(headers.get("grpc-status").is_none());
            assert_eq!(data.as_ref(), &[0, 0, 0, 0, 0]);
            assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        }
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_demo_fails_its_fifth_grpc_call_with_unavailable() {
    bounded(async {
        let gw = demo_gateway("flaky", "");
        let mut c = client(gw.demos()[0].addr);
        for n in 0..5 {
            let r = echo(&mut c, vec![n]).await;
            if n == 4 {
                let s = r.expect_err("the 5th call fails");
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(s.message().contains("failed on purpose"), "{s:?}");
            } else {
                assert_eq!(r.expect("calls 1 to 4 succeed"), vec![n]);
            }
        }
        stop(gw).await;
    })
    .await;
}
