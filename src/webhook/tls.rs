//! The webhook's TLS: a certificate resolver that reads the PEM files again when
//! they change (cert-manager and Secret volumes rotate them in place).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Serves the certificate in `cert`/`key`, reloaded on the first handshake after
/// either file changes. A pair that fails to load keeps the previous one in service.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Stamp, Stamp, Arc<CertifiedKey>)>,
}

fn load(cert: &PathBuf, key: &PathBuf) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key from {}: {e}", key.display()))?;
    let signer = ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unusable private key in {}: {e}", key.display()))?;
    Ok(CertifiedKey::new(chain, signer))
}

impl ReloadingCert {
    /// Loads the pair once; fails when it cannot.
    pub fn load(cert: PathBuf, key: PathBuf) -> crate::Result<Self> {
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = load(&cert, &key).map_err(crate::Error::Config)?;
        Ok(Self {
            current: Mutex::new((stamps.0, stamps.1, Arc::new(loaded))),
            cert,
            key,
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let now = (stamp(&self.cert), stamp(&self.key));
        let mut current = self.current.lock();
        if (current.0, current.1) != now {
            match load(&self.cert, &self.key) {
                Ok(loaded) => {
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                    *current = (now.0, now.1, Arc::new(loaded));
                }
                // A rotation may be half written: keep serving the old pair and
                // look again on the next handshake.
                Err(e) => tracing::warn!(error = %e, "keeping the previous TLS certificate"),
            }
        }
        current.2.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2 and 1.3 with ring, HTTP/1.1 and HTTP/2 by ALPN.
pub fn server_config(cert: ReloadingCert) -> crate::Result<rustls::ServerConfig> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::Error::Config(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
