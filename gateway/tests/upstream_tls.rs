//! TLS to upstreams (`https://` endpoints): a local rustls upstream (hyper over tokio-rustls)
//! with certificates made here by `rcgen`. HTTP/2 or HTTP/1.1 by ALPN, connection reuse
//! (handshakes counted at the upstream), mTLS, and each kind of bad certificate giving a 502
//! whose body and `warn` log line say what was wrong.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;

/// Every `warn` line the gateway logs in this test binary (its workers run on threads of
/// their own, so the subscriber is the global one).
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(buf))
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .try_init();
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A CA that signs test certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IPs): (cert PEM, key PEM).
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// How the test upstream is set up.
struct UpstreamTls<'a> {
    cert: &'a (String, String),
    alpn: &'a [&'a [u8]],
    /// Client certificates must chain to this CA (mTLS).
    client_ca: Option<&'a Ca>,
    /// TLS 1.2 only (client certificates are then checked within the handshake).
    tls12: bool,
}

/// Handshakes the upstream completed, and the paths it was asked for.
struct Seen {
    handshakes: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

/// The upstream's acceptor.
fn acceptor(u: &UpstreamTls<'_>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(u.cert.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(u.cert.1.as_bytes()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if u.tls12 {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match u.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(ca.issuer.der().to_vec()))
                .unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = u.alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS upstream on loopback answering `VERSION PATH client-cert=yes|no`.
async fn tls_upstream(u: UpstreamTls<'_>) -> (SocketAddr, Arc<Seen>) {
    let acceptor = acceptor(&u);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen {
        handshakes: AtomicUsize::new(0),
        paths: Mutex::new(Vec::new()),
    });
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                seen.handshakes.fetch_add(1, Ordering::SeqCst);
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    seen.paths.lock().unwrap().push(req.uri().path().to_owned());
                    async move {
                        let body = format!(
                            "{:?} {} client-cert={}",
                            req.version(),
                            req.uri().path(),
                            if client_cert { "yes" } else { "no" }
                        );
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A gateway config with one cluster of `endpoint`, its `[clusters.tls]` lines, and `extra`
/// cluster sections, behind a catch-all route.
fn tls_config(endpoint: &str, tls: &str, extra: &str) -> tollgate_gateway::config::Config {
    config(&format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{endpoint}\"]\n\
         [clusters.tls]\n{tls}\n{extra}\n[[routes]]\ncluster = \"up\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_with_connections_reused() {
    bounded(async {
        let dir = scratch("up_tls_h2");
        let ca = Ca::new("test ca");
        let cert = ca.leaf(&["localhost"], false);
        let (up, seen) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"h2", b"http/1.1"],
            client_ca: None,
            tls12: false,
        })
        .await;
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        // The endpoint is an IP; the certificate names `localhost`.
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "",
        ));
        for i in 0..6 {
            let (status, body) = get(addr(&gw), &format!("/h2/{i}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body, format!("HTTP/2.0 /h2/{i} client-cert=no"));
        }
        // One multiplexed connection per worker thread at most (the config has 2 workers).
        let handshakes = seen.handshakes.load(Ordering::SeqCst);
        assert!((1..=2).contains(&handshakes), "{handshakes} handshakes");
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_by_alpn_with_connections_reused_and_ip_names() {
    bounded(async {
        let dir = scratch("up_tls_h1");
        let ca = Ca::new("test ca");
        // Checked against the endpoint's IP when no server_name is set.
        let cert = ca.leaf(&["127.0.0.1"], false);
        let (up, seen) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"http/1.1"],
            client_ca: None,
            tls12: false,
        })
        .await;
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\""),
            "",
        ));
        for i in 0..6 {
            let (status, body) = get(addr(&gw), &format!("/h1/{i}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body, format!("HTTP/1.1 /h1/{i} client-cert=no"));
        }
        // Sequential requests: each worker reuses its pooled connection.
        let handshakes = seen.handshakes.load(Ordering::SeqCst);
        assert!((1..=2).contains(&handshakes), "{handshakes} handshakes");
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_cluster_and_mtls() {
    log();
    bounded(async {
        let dir = scratch("up_tls_mtls");
        let ca = Ca::new("test ca");
        let cert = ca.leaf(&["localhost"], false);
        let client = ca.leaf(&["gateway.test"], false);
        let (up, seen) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"h2", b"http/1.1"],
            client_ca: Some(&ca),
            tls12: false,
        })
        .await;
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        let cert_file = write(&dir, "client.pem", &client.0);
        let key_file = write(&dir, "client.key", &client.1);
        // A breaker puts the cluster on the layered path (`stack/upstream.rs`).
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!(
                "ca_file = \"{ca_file}\"\nserver_name = \"localhost\"\n\
                 cert_file = \"{cert_file}\"\nkey_file = \"{key_file}\""
            ),
            "[clusters.breaker]\nminimum_calls = 100\n",
        ));
        for i in 0..4 {
            let (status, body) = get(addr(&gw), &format!("/m/{i}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body, format!("HTTP/2.0 /m/{i} client-cert=yes"));
        }
        let handshakes = seen.handshakes.load(Ordering::SeqCst);
        assert!((1..=2).contains(&handshakes), "{handshakes} handshakes");
        stop(gw).await;

        // Without a client certificate the upstream refuses the gateway. Over TLS 1.3 it
        // checks the certificate after the gateway's side of the handshake is done: a 502
        // either way, the body depending on whether the gateway read the refusal before its
        // own write failed.
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "",
        ));
        let (status, body) = get(addr(&gw), "/no-cert").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(
            body == "upstream tls handshake failed\n" || body == "upstream connection failed\n",
            "{body:?}"
        );
        stop(gw).await;

        // Over TLS 1.2 the refusal is part of the handshake.
        let (up12, seen12) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"h2", b"http/1.1"],
            client_ca: Some(&ca),
            tls12: true,
        })
        .await;
        let gw = start(tls_config(
            &format!("https://{up12}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "",
        ));
        let (status, body) = get(addr(&gw), "/no-cert").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body, "upstream tls handshake failed\n");
        assert_eq!(seen12.handshakes.load(Ordering::SeqCst), 0);
        let lines = log_lines(&format!("upstream={up12}"));
        assert!(
            lines.iter().any(|l| l.contains("WARN")
                && l.contains("upstream tls handshake failed")
                && l.contains("reason=\"the upstream requires a client certificate\"")),
            "{lines:#?}"
        );
        stop(gw).await;
    })
    .await;
}

/// The gateway refuses the upstream's certificate: 502 `upstream certificate rejected`, and a
/// `warn` line naming the endpoint and the reason.
async fn refused(case: &str, cert: (String, String), trusted: &Ca, reason: &str) {
    let dir = scratch(&format!("up_tls_{case}"));
    let (up, seen) = tls_upstream(UpstreamTls {
        cert: &cert,
        alpn: &[b"h2", b"http/1.1"],
        client_ca: None,
        tls12: false,
    })
    .await;
    let ca_file = write(&dir, "ca.pem", &trusted.pem());
    let gw = start(tls_config(
        &format!("https://{up}"),
        &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
        "",
    ));
    let (status, body) = get(addr(&gw), "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{case}: {body}");
    assert_eq!(body, "upstream certificate rejected\n", "{case}");
    assert_eq!(seen.handshakes.load(Ordering::SeqCst), 0, "{case}");
    let lines = log_lines(&format!("upstream={up}"));
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && l.contains("upstream tls handshake failed")
            && l.contains(reason)
            && l.contains("server_name=localhost")),
        "{case}: no warn line with {reason:?} in {lines:#?}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_a_502_that_says_why() {
    log();
    bounded(async {
        let ca = Ca::new("test ca");
        refused(
            "wrong_name",
            ca.leaf(&["other.example"], false),
            &ca,
            "certificate is not valid for the server name",
        )
        .await;
        refused(
            "expired",
            ca.leaf(&["localhost"], true),
            &ca,
            "certificate has expired",
        )
        .await;
        let stranger = Ca::new("unknown ca");
        refused(
            "unknown_ca",
            stranger.leaf(&["localhost"], false),
            &ca,
            "certificate is not signed by a trusted CA",
        )
        .await;
    })
    .await;
}

#[test]
fn tls_settings_are_checked_naming_the_field() {
    let dir = scratch("up_tls_config");
    let ca_file = write(&dir, "ca.pem", &Ca::new("test ca").pem());
    let parse = |rest: &str| {
        tollgate_gateway::config::Config::parse(
            &format!(
                "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n{rest}\
                 [[routes]]\ncluster = \"up\"\n"
            ),
            "t.toml",
        )
    };
    let cases = [
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"127.0.0.1:1\"]\n\
             [clusters.tls]\nca_file = \"x\"\n",
            "clusters[0].tls",
        ),
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1:1\", \"127.0.0.1:2\"]\n",
            "clusters[0].endpoints[1]",
        ),
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1:1\"]\n\
             [clusters.tls]\ncert_file = \"c.pem\"\n",
            "clusters[0].tls.key_file",
        ),
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1:1\"]\n\
             [clusters.tls]\nserver_name = \"not a name\"\n",
            "clusters[0].tls.server_name",
        ),
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1:1\"]\n\
             [clusters.tls]\ninsecure_skip_verify = true\n",
            "clusters[0].tls.insecure_skip_verify",
        ),
        (
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://demo:fast\"]\n",
            "clusters[0].endpoints[0]",
        ),
    ];
    for (text, field) in cases {
        let err = parse(text).unwrap_err();
        assert_eq!(err.field, field, "{text}: {err}");
    }
    // `https://HOST` without a port is port 443.
    parse("[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1\"]\n").unwrap();

    // Files are read when the gateway starts (and on reload): the field is named.
    let start_err = |tls: &str| {
        let cfg = config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"https://127.0.0.1:1\"]\n\
             [clusters.tls]\n{tls}\n[[routes]]\ncluster = \"up\"\n"
        ));
        tollgate_gateway::Gateway::start(tollgate_gateway::StartOptions::new(cfg, "t.toml"))
            .unwrap_err()
            .to_string()
    };
    let err = start_err("ca_file = \"/nonexistent/ca.pem\"");
    assert!(
        err.starts_with("t.toml: clusters[0].tls.ca_file: cannot read \"/nonexistent/ca.pem\""),
        "{err}"
    );
    let err = start_err(&format!(
        "ca_file = \"{ca_file}\"\ncert_file = \"{ca_file}\"\nkey_file = \"{ca_file}\""
    ));
    assert!(
        err.starts_with("t.toml: clusters[0].tls.key_file: cannot read a private key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_is_read_again_on_reload() {
    bounded(async {
        let dir = scratch("up_tls_reload");
        let ca = Ca::new("test ca");
        let cert = ca.leaf(&["localhost"], false);
        let (up, _) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"http/1.1"],
            client_ca: None,
            tls12: false,
        })
        .await;
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        let cfg = tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "",
        );
        let gw = start(cfg.clone());
        assert_eq!(get(addr(&gw), "/").await.0, StatusCode::OK);

        // A file that cannot be used rejects the reload, naming the field; the old one serves.
        write(&dir, "ca.pem", "not a certificate");
        let err = gw.apply(cfg.clone(), "test.toml").unwrap_err();
        assert_eq!(err.field, "clusters[0].tls.ca_file", "{err}");
        assert_eq!(get(addr(&gw), "/").await.0, StatusCode::OK);

        // Another CA's file applies: the upstream's certificate is no longer trusted.
        write(&dir, "ca.pem", &Ca::new("other ca").pem());
        gw.apply(cfg, "test.toml").unwrap();
        let (status, body) = get(addr(&gw), "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body, "upstream certificate rejected\n");
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_go_over_tls() {
    bounded(async {
        let dir = scratch("up_tls_health");
        let ca = Ca::new("test ca");
        let cert = ca.leaf(&["localhost"], false);
        let (up, seen) = tls_upstream(UpstreamTls {
            cert: &cert,
            alpn: &[b"h2", b"http/1.1"],
            client_ca: None,
            tls12: false,
        })
        .await;
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "[clusters.balance]\nhealth = { interval = \"20ms\", timeout = \"20ms\" }\n[clusters.health_check]\npath = \"/healthz\"\n",
        ));
        // The control thread's checks reach the upstream through TLS (waits for the first
        // few; the test's deadline bounds it).
        while seen
            .paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == "/healthz")
            .count()
            < 3
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (status, body) = get(addr(&gw), "/after-checks").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "HTTP/2.0 /after-checks client-cert=no");
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_over_tls() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    bounded(async {
        let dir = scratch("up_tls_ws");
        let ca = Ca::new("test ca");
        let cert = ca.leaf(&["localhost"], false);
        // It would pick h2 if offered: the gateway offers http/1.1 only for an upgrade.
        let acceptor = acceptor(&UpstreamTls {
            cert: &cert,
            alpn: &[b"h2", b"http/1.1"],
            client_ca: None,
            tls12: false,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let ca_file = write(&dir, "ca.pem", &ca.pem());
        let gw = start(tls_config(
            &format!("https://{up}"),
            &format!("ca_file = \"{ca_file}\"\nserver_name = \"localhost\""),
            "",
        ));
        let tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        let req = format!("ws://{}/ws", addr(&gw))
            .into_client_request()
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::text("over tls")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text("over tls"));
        let _ = ws.close(None).await;
        stop(gw).await;
    })
    .await;
}
