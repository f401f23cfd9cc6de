//! The client side of TLS, for a cluster's `https://` endpoints: whom to trust (a `ca_file`,
//! else the operating system's trust store), what to present (an optional client
//! certificate), which name to send by SNI and check the certificate against, and which
//! protocols to offer by ALPN.
//!
//! A cluster's [`ClusterTls`] is built when a snapshot is (reading its files), and kept across
//! reloads while its settings and the contents of its files stay the same ([`ClusterTls::id`]),
//! so its pooled connections and its layered stack stay too. Each endpoint address gets a
//! [`TlsPeer`]: the name to verify and the key its connections are pooled under.

use crate::config::{ConfigError, UpstreamProtocol, UpstreamTlsSection};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// What connections to one endpoint need: the name to send and verify, the client
/// configurations, and the key its connections are pooled under (never 0: that is plain TCP).
#[derive(Debug)]
pub(crate) struct TlsPeer {
    /// Pool key: the cluster's TLS settings and the name, hashed.
    pub key: u64,
    /// SNI name, checked against the endpoint's certificate.
    pub name: ServerName<'static>,
    /// Offers `h2` and `http/1.1` (or `h2` only for an `h2c` cluster).
    pub config: Arc<ClientConfig>,
    /// Offers `http/1.1` only, for upgrades (WebSocket).
    pub h1_config: Arc<ClientConfig>,
    /// The last TLS error a connection's reads ended with (the upstream refused the gateway
    /// after the handshake), until a failed request takes it to say why.
    pub refusal: Arc<Mutex<Option<rustls::Error>>>,
}

impl TlsPeer {
    /// Takes the noted refusal, if any.
    pub(crate) fn take_refusal(&self) -> Option<rustls::Error> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// A cluster's TLS client settings, built from its `[clusters.tls]` section and files.
#[derive(Debug)]
pub(crate) struct ClusterTls {
    id: u64,
    config: Arc<ClientConfig>,
    h1_config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// Each resolved address's peer; replaced when the cluster resolves its names again.
    peers: ArcSwap<Vec<(SocketAddr, Arc<TlsPeer>)>>,
}

impl ClusterTls {
    /// Reads the files of `section` (none: the system's trust store, no client certificate)
    /// and builds the client configurations; `at` is the section's path (`clusters[0].tls`).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field whose file could not be read or used.
    pub(crate) fn build(
        section: Option<&UpstreamTlsSection>,
        protocol: UpstreamProtocol,
        at: &str,
    ) -> Result<Self, ConfigError> {
        let default = UpstreamTlsSection::default();
        let section = section.unwrap_or(&default);
        let err = |f: &str, p: String| ConfigError::new(format!("{at}.{f}"), p);
        let mut hasher = DefaultHasher::new();
        section.hash(&mut hasher);
        (protocol == UpstreamProtocol::H2c).hash(&mut hasher);

        let roots = if section.ca_file.is_empty() {
            system_roots().map_err(|p| err("ca_file", p))?
        } else {
            let pem = read(&section.ca_file, &mut hasher).map_err(|p| err("ca_file", p))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    err(
                        "ca_file",
                        format!("cannot read certificates from \"{}\": {e}", section.ca_file),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    err(
                        "ca_file",
                        format!("a certificate in \"{}\": {e}", section.ca_file),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(err(
                    "ca_file",
                    format!("no certificate in \"{}\"", section.ca_file),
                ));
            }
            roots
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(at, format!("tls setup: {e}")))?
            .with_root_certificates(roots);
        let mut config = if section.cert_file.is_empty() {
            builder.with_no_client_auth()
        } else {
            let pem = read(&section.cert_file, &mut hasher).map_err(|p| err("cert_file", p))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    err(
                        "cert_file",
                        format!(
                            "cannot read certificates from \"{}\": {e}",
                            section.cert_file
                        ),
                    )
                })?;
            if chain.is_empty() {
                return Err(err(
                    "cert_file",
                    format!("no certificate in \"{}\"", section.cert_file),
                ));
            }
            let pem = read(&section.key_file, &mut hasher).map_err(|p| err("key_file", p))?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                err(
                    "key_file",
                    format!(
                        "cannot read a private key from \"{}\": {e}",
                        section.key_file
                    ),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                err(
                    "key_file",
                    format!(
                        "certificate \"{}\" and key \"{}\": {e}",
                        section.cert_file, section.key_file
                    ),
                )
            })?
        };
        let mut h1_config = config.clone();
        h1_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Http1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            UpstreamProtocol::H2c => vec![b"h2".to_vec()],
        };
        let server_name = if section.server_name.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(section.server_name.clone())
                    .map_err(|e| err("server_name", e.to_string()))?,
            )
        };
        Ok(Self {
            id: hasher.finish(),
            config: Arc::new(config),
            h1_config: Arc::new(h1_config),
            server_name,
            peers: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// What the cluster's TLS was built from (settings and file contents), hashed: equal ids
    /// may share connections and stacks.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Sets each address's peer: `(address, host)` where `host` is the endpoint's host name,
    /// or `None` for an `IP:PORT` endpoint (its IP is the name then). `server_name`, when
    /// set, stands for all of them.
    pub(crate) fn set_peers(&self, endpoints: &[(SocketAddr, Option<&str>)]) {
        let old = self.peers.load();
        let peers = endpoints
            .iter()
            .filter_map(|&(addr, host)| {
                let name = match (&self.server_name, host) {
                    (Some(n), _) => n.clone(),
                    (None, Some(h)) => ServerName::try_from(h.to_owned()).ok()?,
                    (None, None) => ServerName::IpAddress(addr.ip().into()),
                };
                let mut hasher = DefaultHasher::new();
                self.id.hash(&mut hasher);
                name.to_str().hash(&mut hasher);
                let key = hasher.finish().max(1);
                let kept = old
                    .iter()
                    .find(|(a, p)| *a == addr && p.key == key)
                    .map(|(_, p)| p.clone());
                let peer = kept.unwrap_or_else(|| {
                    Arc::new(TlsPeer {
                        key,
                        name,
                        config: self.config.clone(),
                        h1_config: self.h1_config.clone(),
                        refusal: Arc::default(),
                    })
                });
                Some((addr, peer))
            })
            .collect();
        self.peers.store(Arc::new(peers));
    }

    /// The peer of `addr`, if it is one of the cluster's addresses.
    pub(crate) fn peer(&self, addr: SocketAddr) -> Option<Arc<TlsPeer>> {
        self.peers
            .load()
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, p)| p.clone())
    }
}

/// Reads `path` whole and feeds its bytes to `hasher` (so a changed file makes a new id).
fn read(path: &str, hasher: &mut DefaultHasher) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    bytes.hash(hasher);
    Ok(bytes)
}

/// The operating system's trust store, read once per process.
fn system_roots() -> Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!(
                    "no CA certificates in the system trust store ({why}); name a ca_file"
                ));
            }
            Ok(roots)
        })
        .clone()
}

/// The TLS error in `err`'s source chain, if any: with TLS 1.3 the upstream checks the
/// gateway's client certificate after the gateway's side of the handshake is done, so its
/// refusal arrives as the first read's error, inside hyper's.
pub(crate) fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(t) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t.clone());
        }
        cur = e.source();
    }
    None
}

/// Why a handshake failed, in words for the log, and whether it was the endpoint's
/// certificate that the gateway refused.
pub(crate) fn failure(err: &std::io::Error) -> (&'static str, bool) {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return ("the connection failed during the handshake", false);
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => (
            match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "certificate is not valid for the server name"
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "certificate has expired"
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "certificate is not valid yet"
                }
                CertificateError::UnknownIssuer => "certificate is not signed by a trusted CA",
                CertificateError::Revoked => "certificate is revoked",
                _ => "certificate was refused",
            },
            true,
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            ("the upstream requires a client certificate", false)
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => (
            "the upstream refused the gateway's client certificate",
            false,
        ),
        rustls::Error::AlertReceived(_) => ("the upstream refused the handshake", false),
        rustls::Error::NoApplicationProtocol => ("no protocol in common (ALPN)", false),
        _ => ("the handshake failed", false),
    }
}
