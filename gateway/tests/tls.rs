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

/// Takes any certificate: the SNI tests compare the certificate served itself.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate the listener at `addr` serves to a client sending `sni` (none: no SNI).
async fn served(addr: std::net::SocketAddr, sni: Option<&str>) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.test").to_owned()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A self-signed certificate for `names`, written to `dir/{file}.pem` and `dir/{file}.key`;
/// its DER.
fn cert_files(dir: &std::path::Path, file: &str, names: &[&str]) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{file}.key")),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    cert.cert.der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_chosen_by_sni_and_reloaded() {
    bounded(async {
        let dir = scratch("tls_sni");
        let default = cert_files(&dir, "default", &["default.test"]);
        let a = cert_files(&dir, "a", &["a.test", "*.wild.test"]);
        let b = cert_files(&dir, "b", &["b-cert.test"]);
        let d = dir.display();
        let up = inspect_upstream().await;
        let text = format!(
            "[server]\nworkers = 2\n[admin]\nlisten = \"\"\n[log]\naccess_log = false\n\
             [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
             [listeners.tls]\ncert = \"{d}/default.pem\"\nkey = \"{d}/default.key\"\n\
             [[listeners.tls.certs]]\ncert = \"{d}/a.pem\"\nkey = \"{d}/a.key\"\n\
             [[listeners.tls.certs]]\ncert = \"{d}/b.pem\"\nkey = \"{d}/b.key\"\n\
             server_names = [\"b.test\"]\n{}",
            single(up, "http1")
        );
        let path = dir.join("tollgate.toml");
        let gw = start_watching(&path, &text);
        let at = addr(&gw);

        // Names from the certificate's SANs (wildcards too), explicit server_names (which
        // replace the SANs), and the default for no SNI and for unknown names.
        assert_eq!(served(at, Some("a.test")).await, a);
        assert_eq!(served(at, Some("A.Test")).await, a);
        assert_eq!(served(at, Some("x.wild.test")).await, a);
        assert_eq!(served(at, Some("b.test")).await, b);
        assert_eq!(served(at, Some("b-cert.test")).await, default);
        assert_eq!(served(at, Some("other.test")).await, default);
        assert_eq!(served(at, None).await, default);

        // A reload reads the files again: a's new certificate serves new connections.
        let a2 = cert_files(&dir, "a", &["a.test", "*.wild.test"]);
        assert_ne!(a, a2);
        gw.reload().unwrap();
        assert_eq!(served(at, Some("a.test")).await, a2);
        assert_eq!(served(at, Some("b.test")).await, b);

        // A broken file rejects the reload, naming its entry; the running certificates stay
        // (a's, changed again, too: the reload is all or nothing).
        std::fs::write(dir.join("b.pem"), "not a certificate").unwrap();
        let _ = cert_files(&dir, "a", &["a.test"]);
        let err = gw.reload().unwrap_err();
        assert_eq!(err.field, "listeners[0].tls.certs[1]", "{err}");
        assert!(err.problem.contains("b.pem"), "{err}");
        assert_eq!(served(at, Some("a.test")).await, a2);
        assert_eq!(served(at, Some("b.test")).await, b);

        // A key that is not the certificate's is refused too.
        std::fs::copy(dir.join("default.key"), dir.join("b.key")).unwrap();
        let _ = cert_files(&dir, "bb", &["b-cert.test"]);
        std::fs::copy(dir.join("bb.pem"), dir.join("b.pem")).unwrap();
        let err = gw.reload().unwrap_err();
        assert_eq!(err.field, "listeners[0].tls.certs[1]", "{err}");
        assert!(err.problem.contains("do not belong together"), "{err}");
        assert_eq!(served(at, Some("b.test")).await, b);
        stop(gw).await;
    })
    .await;
}

#[test]
fn listener_tls_settings_are_checked_naming_the_field() {
    let base = "[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                [[routes]]\ncluster = \"c\"\n\
                [[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[listeners.tls]\n";
    for (tls, field) in [
        ("", "listeners[0].tls.cert"),
        ("cert = \"c.pem\"\n", "listeners[0].tls.key"),
        (
            "[[listeners.tls.certs]]\ncert = \"c.pem\"\nkey = \"\"\n",
            "listeners[0].tls.certs[0].key",
        ),
        (
            "[[listeners.tls.certs]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             server_names = [\"ok.test\", \"not ok\"]\n",
            "listeners[0].tls.certs[0].server_names[1]",
        ),
    ] {
        let err =
            tollgate_gateway::config::Config::parse(&format!("{base}{tls}"), "t.toml").unwrap_err();
        assert_eq!(err.field, field, "{tls}: {err}");
    }
}
