//! TLS termination: HTTP/2 and HTTP/1.1 offered by ALPN, the certificate chosen by the client's
//! SNI name from a set that a reload replaces whole.
//!
//! Each TLS listener has one [`ListenerCerts`], its acceptor's certificate resolver. A reload
//! reads every certificate file again ([`load`]) before the new snapshot is swapped in, so a
//! file that cannot be used rejects the reload (naming its field) and the running certificates
//! stay; a good one is stored ([`ListenerCerts::replace`]) and serves new handshakes.

use crate::config::tls::CertEntry;
use crate::config::{ConfigError, TlsConfig};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A listener's certificates by name, with the default for other names and for clients that
/// send none.
#[derive(Debug)]
pub(crate) struct CertSet {
    default: Arc<CertifiedKey>,
    /// Lower-case exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`: covers one label in front.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(ck) = self.exact.get(&name) {
            return ck.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// A TLS listener's certificate resolver; [`ListenerCerts::replace`] swaps its set.
#[derive(Debug)]
pub(crate) struct ListenerCerts {
    current: ArcSwap<CertSet>,
}

impl ListenerCerts {
    /// The resolver serving `set`.
    pub(crate) fn new(set: CertSet) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(set),
        })
    }

    /// Serves `set` to new handshakes; those under way keep the certificate they got.
    pub(crate) fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()))
    }
}

/// Reads and checks every certificate of `tls`; `at` is the section's path
/// (`listeners[0].tls`).
///
/// # Errors
/// A [`ConfigError`] (file left empty) naming the entry whose files could not be used.
pub(crate) fn load(tls: &TlsConfig, at: &str) -> Result<CertSet, ConfigError> {
    let mut default = None;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for entry in tls.entries(at) {
        let ck = Arc::new(certified(&entry).map_err(|p| ConfigError::new(&entry.field, p))?);
        let names: Vec<String> = if entry.server_names.is_empty() {
            san_names(&ck)
        } else {
            entry.server_names.to_vec()
        };
        for name in names {
            let name = name.to_ascii_lowercase();
            let map = match name.strip_prefix("*.") {
                Some(_) => &mut wildcard,
                None => &mut exact,
            };
            let key = name.strip_prefix("*.").unwrap_or(&name).to_owned();
            // The first certificate that names a host keeps it.
            map.entry(key).or_insert_with(|| ck.clone());
        }
        default.get_or_insert(ck);
    }
    let default = default.ok_or_else(|| ConfigError::new(at, "no certificate configured"))?;
    Ok(CertSet {
        default,
        exact,
        wildcard,
    })
}

/// The certificate chain and key of one entry, checked to belong together.
fn certified(entry: &CertEntry<'_>) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(entry.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from \"{}\": {e}", entry.cert))?;
    if certs.is_empty() {
        return Err(format!("no certificate in \"{}\"", entry.cert));
    }
    let key = PrivateKeyDer::from_pem_file(entry.key)
        .map_err(|e| format!("cannot read a private key from \"{}\": {e}", entry.key))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key \"{}\": {e}", entry.key))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "certificate \"{}\" and key \"{}\" do not belong together: {e}",
            entry.cert, entry.key
        )
    })?;
    Ok(ck)
}

/// The DNS names (wildcards included) in the subject alternative names of `ck`'s
/// certificate.
fn san_names(ck: &CertifiedKey) -> Vec<String> {
    ck.cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// An acceptor that takes its certificates from `certs`.
///
/// # Errors
/// A lower-case description if rustls refuses the setup.
pub(crate) fn acceptor(certs: Arc<ListenerCerts>) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
