//! TLS termination: HTTP/2 and HTTP/1.1 chosen by ALPN, with a certificate made by `rcgen`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

async fn tls_get(
    addr: std::net::SocketAddr,
    roots: rustls::RootCertStore,
    alpn: &[u8],
) -> (Version, StatusCode, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let io = TokioIo::new(tls);
    let resp = if alpn == b"h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("https://localhost/tls")
            .version(Version::HTTP_2)
            .body(Full::<Bytes>::default())
            .unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/tls")
            .header("host", "localhost")
            .body(Full::<Bytes>::default())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    let version = resp.version();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_http1() {
    bounded(async {
        let dir = scratch("tls_alpn");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.cert.der().to_vec()))
            .unwrap();

        let up = inspect_upstream().await;
        let mut cfg = config(&single(up, "http1"));
        cfg.listeners[0].tls = Some(tollgate_gateway::config::TlsConfig {
            cert: dir.join("cert.pem").display().to_string(),
            key: dir.join("key.pem").display().to_string(),
            ..Default::default()
        });
        let gw = start(cfg);
        assert!(gw.listeners()[0].tls);

        let (v, s, body) = tls_get(addr(&gw), roots.clone(), b"h2").await;
        assert_eq!((v, s), (Version::HTTP_2, StatusCode::OK));
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
        assert!(body.contains("via: 2 tollgate"), "{body}");

        let (v, s, body) = tls_get(addr(&gw), roots, b"http/1.1").await;
        assert_eq!((v, s), (Version::HTTP_11, StatusCode::OK));
        assert!(body.contains("via: 1.1 tollgate"), "{body}");
        stop(gw).await;
    })
    .await;
}

#[test]
fn unreadable_certificate_is_a_config_error_naming_the_field() {
    let mut cfg = config("");
    cfg.listeners[0].tls = Some(tollgate_gateway::config::TlsConfig {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
        ..Default::default()
    });
    let err = tollgate_gateway::Gateway::start(tollgate_gateway::StartOptions::new(cfg, "t.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("t.toml: listeners[0].tls: cannot read certificates"),
        "{err}"
    );
}
