//! TLS with rustls and the ring provider, for SMPP binds (client side), the simulated SMSC and
//! the north API (server side). The provider is passed explicitly everywhere, so the
//! process-wide default never matters; only the configured CA file is trusted, never the
//! system roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// TLS settings of a bind: whom to trust and which name the SMSC's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientSettings {
    /// PEM file of the CA certificates trusted for the SMSC (the system roots are not used).
    pub ca_file: PathBuf,
    /// DNS name or IP address checked against the SMSC's certificate (and sent as SNI).
    pub server_name: String,
}

/// Why TLS settings could not be turned into a rustls configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// rustls refused the material (e.g. a key not matching the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem_err = |message: String| TlsSetupError::Pem {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The ring provider, chosen explicitly so the process-wide default never matters.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration from a PEM certificate chain and key (no client auth).
pub fn tls_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let certs = load_pem_certs(cert_file)?;
    let key = load_pem_key(key_file)?;
    let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

impl TlsClientSettings {
    /// The rustls connector and checked server name these settings describe.
    pub fn connector(
        &self,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_pem_certs(&self.ca_file)? {
            roots.add(cert)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|_| TlsSetupError::ServerName(self.server_name.clone()))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}
