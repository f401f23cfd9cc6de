//! With `http-body`, the permit is held until the response body ends, not the headers.
#![cfg(feature = "http-body")]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tollgate_pool::{Limiter, PoolConfig, PoolSizerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn layer(limiter: &Limiter) -> tollgate_pool::body::BodyPoolSizerLayer {
    PoolSizerLayer::new(limiter.clone()).hold_until_body_ends()
}

#[tokio::test(start_paused = true)]
async fn the_permit_lives_until_the_body_ends() {
    let limiter = Limiter::new(PoolConfig::default()).unwrap();
    let mut svc = layer(&limiter).layer(service_fn(|_: ()| async {
        Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
    }));
    let res = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        limiter.in_flight(),
        1,
        "headers arrived, body still to stream"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.snapshot().cancelled, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_gives_the_permit_back() {
    let limiter = Limiter::new(PoolConfig::default()).unwrap();
    let mut svc = layer(&limiter).layer(service_fn(|_: ()| async {
        Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"x"))))
    }));
    let res = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(limiter.in_flight(), 1);
    drop(res);
    assert_eq!(limiter.in_flight(), 0);
    // The outcome was learned at the headers: not a cancellation.
    assert_eq!(limiter.snapshot().cancelled, 0);
}
