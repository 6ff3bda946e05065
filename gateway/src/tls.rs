//! TLS termination for the predict listener: OpenSSL through Pingora
//! (Debian's libssl, as nginx uses here), HTTP/2 and HTTP/1.1 offered by
//! ALPN. The certificate is handed to each handshake from memory, so that
//! replacing the files on disk takes effect without a restart: a background
//! task checks them every second and swaps a new pair in once both parse
//! and match; a broken pair is logged and the old one keeps serving.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::tls::ext;
use pingora_core::tls::pkey::{PKey, Private};
use pingora_core::tls::x509::X509;

/// How often the certificate and key files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not chained: it would print twice).
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// A file is not valid PEM of its kind.
    #[error("{path}: not a valid PEM {what}: {error}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Certificate or private key.
        what: &'static str,
        /// OpenSSL's reason.
        error: pingora_core::tls::error::ErrorStack,
    },
    /// The key is not the certificate's.
    #[error("{key} is not the private key of the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Pingora refused the TLS settings.
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// A certificate chain and its key, parsed.
struct Pair {
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Pair {
    fn read(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|error| TlsError::Read {
                path: path.to_owned(),
                error,
            })
        };
        let mut certs = X509::stack_from_pem(&read(cert)?).map_err(|error| TlsError::Pem {
            path: cert.to_owned(),
            what: "certificate",
            error,
        })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let leaf = certs.remove(0);
        let private = PKey::private_key_from_pem(&read(key)?).map_err(|error| TlsError::Pem {
            path: key.to_owned(),
            what: "private key",
            error,
        })?;
        let matches = leaf
            .public_key()
            .is_ok_and(|public| public.public_eq(&private));
        if !matches {
            return Err(TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(Self {
            leaf,
            chain: certs,
            key: private,
        })
    }
}

/// The certificate the TLS listener serves, kept current with its files.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Pair>,
    /// The files' modification times when `current` was read.
    stamp: ArcSwap<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the pair at `cert` and `key`; an error names the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamp = stamps(cert, key);
        let pair = Pair::read(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            stamp: ArcSwap::from_pointee(stamp),
        }))
    }

    /// TLS settings for a listener serving these certificates, with HTTP/2
    /// preferred over HTTP/1.1 by ALPN.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, TlsError> {
        let mut settings = TlsSettings::with_callbacks(Box::new(Handshake(Arc::clone(self))))
            .map_err(|e| TlsError::Settings(e.to_string()))?;
        settings.enable_h2();
        Ok(settings)
    }

    /// Reads the files again if either changed since the last read; a pair
    /// that fails to load is reported and the current one stays.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamp = stamps(&self.cert, &self.key);
        if **self.stamp.load() == stamp {
            return None;
        }
        self.stamp.store(Arc::new(stamp));
        Some(Pair::read(&self.cert, &self.key).map(|pair| self.current.store(Arc::new(pair))))
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// Hands the current certificate to each handshake.
struct Handshake(Arc<Certificates>);

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let pair = self.0.current.load();
        let used = ext::ssl_use_certificate(ssl, &pair.leaf)
            .and_then(|()| ext::ssl_use_private_key(ssl, &pair.key))
            .and_then(|()| {
                pair.chain
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = used {
            // The handshake then fails for want of a certificate.
            log::error!("TLS: cannot use the certificate: {e}");
        }
    }
}

/// Checks the certificate files every second until shutdown.
#[derive(Debug)]
pub struct Reloader(pub Arc<Certificates>);

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::shutdown::every(RELOAD_CHECK, shutdown, || {
            match self.0.reload_if_changed() {
                Some(Ok(())) => log::info!(
                    "TLS: reloaded the certificate from {}",
                    self.0.cert.display()
                ),
                Some(Err(e)) => log::error!("TLS: keeping the current certificate: {e}"),
                None => {}
            }
        })
        .await;
    }
}
