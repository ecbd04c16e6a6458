//! TLS for the simulator's `wss` listener: a self-signed certificate for `localhost` and
//! `127.0.0.1`, made fresh at start with rcgen and written out as PEM so clients can trust it,
//! and the rustls configurations (ring provider) of both ends.
//!
//! Where it sits: `Simulator::start` calls [`SimCert::generate`] once, writes the certificate to
//! the configured path and hands [`SimCert::server_config`] to the `wss` listener. Tests and the
//! gatherer's tests build their client side with [`client_config_from_pem`] (or
//! [`client_config_from_pem_file`]) so nothing but this one certificate is trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names the certificate is valid for: the simulator only ever listens on loopback.
pub const CERT_SUBJECT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Largest certificate file read back by [`client_config_from_pem_file`]. A single self-signed
/// certificate is under 1 KiB of PEM; a bigger file is not ours.
pub const CERT_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why TLS material could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to make the key pair or certificate.
    #[error("could not generate the simulator's self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("rustls refused the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate file could not be written or read.
    #[error("certificate file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text holds no usable certificate.
    #[error("{origin} holds no PEM certificate ({detail})")]
    Pem {
        /// Where the text came from.
        origin: String,
        /// What the PEM reader said.
        detail: String,
    },
    /// The certificate file is larger than [`CERT_FILE_BYTES_MAX`].
    #[error("certificate file {path} is {len} bytes, more than the {CERT_FILE_BYTES_MAX} accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

/// A freshly generated self-signed certificate and its private key.
pub struct SimCert {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pkcs8_der: Vec<u8>,
}

impl std::fmt::Debug for SimCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCert").field("names", &CERT_SUBJECT_NAMES).finish_non_exhaustive()
    }
}

impl SimCert {
    /// A new key pair (ECDSA P-256, rcgen's default) and a certificate for
    /// [`CERT_SUBJECT_NAMES`].
    pub fn generate() -> Result<Self, TlsError> {
        let names: Vec<String> = CERT_SUBJECT_NAMES.iter().map(|s| (*s).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(Self {
            cert_der: certified.cert.der().clone(),
            cert_pem: certified.cert.pem(),
            key_pkcs8_der: certified.signing_key.serialize_der(),
        })
    }

    /// The certificate as PEM text (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the certificate (public; never the key) as PEM to `path`.
    pub fn write_pem(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, self.cert_pem.as_bytes())
            .map_err(|source| TlsError::File { path: path.to_owned(), source })
    }

    /// The server side: this certificate and key, TLS 1.2 and 1.3, ring provider.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![self.cert_der.clone()], key)?;
        Ok(Arc::new(config))
    }
}

/// A client configuration trusting exactly the certificate(s) in `pem` (ring provider).
pub fn client_config_from_pem(pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config(pem.as_bytes(), "certificate PEM text")
}

/// A client configuration trusting exactly the certificate(s) in the PEM file at `path` (e.g.
/// `SimHandle::cert_pem_path`).
pub fn client_config_from_pem_file(path: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let file_error = |source| TlsError::File { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(file_error)?.len();
    if len > CERT_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge { path: path.to_owned(), len });
    }
    let bytes = std::fs::read(path).map_err(file_error)?;
    client_config(&bytes, &format!("certificate file {}", path.display()))
}

fn client_config(pem: &[u8], origin: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pem_error = |detail: String| TlsError::Pem { origin: origin.to_owned(), detail };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| pem_error(e.to_string()))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(pem_error("no CERTIFICATE section".to_owned()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_round_trips_through_pem() {
        let cert = SimCert::generate().expect("generate");
        assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        cert.server_config().expect("server config");
        client_config_from_pem(cert.cert_pem()).expect("client config");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.pem");
        cert.write_pem(&path).expect("write");
        client_config_from_pem_file(&path).expect("client config from file");
    }

    #[test]
    fn pem_without_certificate_is_refused() {
        let err = client_config_from_pem("not a pem").expect_err("must fail");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    }
}
