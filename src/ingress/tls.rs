//! Server TLS: certificates from PEM files or, for development, generated
//! at start with rcgen. ALPN offers `h2` and `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why TLS could not be set up. Names files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("cannot load certificate chain from {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("cannot load private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate and key do not make a TLS config: {0}")]
    Config(String),
    /// rcgen could not make a self-signed certificate.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// Reads a PEM certificate chain and private key.
pub fn load_pem_files(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = crate::pem::certificates(cert).map_err(|reason| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A certificate for `names` signed by itself (development only).
pub fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(certified.key_pair.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok((vec![certified.cert.der().clone()], key))
}

/// The rustls server config for `tls`, with ALPN `h2` then `http/1.1`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = match (&tls.cert, &tls.key, &tls.self_signed) {
        (Some(cert), Some(key), _) => load_pem_files(cert, key)?,
        (_, _, Some(names)) => {
            tracing::warn!(
                names = ?names,
                "TLS uses a self-signed certificate generated at start: for development only"
            );
            self_signed(names)?
        }
        _ => return Err(TlsError::Config("no certificate configured".into())),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
