//! The gateway as an HTTP client (native callbacks, Keycloak callbacks, the realm's JWKS):
//! HTTP/1.1 over rustls, trusting the system's roots plus the CA files the configuration adds,
//! with plain `http://` refused unless the configuration allows it (tests, a loopback sidecar).
//!
//! A target can have its own trust: `[[outbound.targets]]` names a host and the CA file that
//! alone is trusted for it (a realm or a relying party on a private CA). The system's roots
//! and the shared `ca_files` do not count for that host, so a certificate from any public CA
//! cannot stand in for it.
//!
//! One place builds the connector, so every outgoing call gets the same trust and the same
//! scheme rule; [`check_scheme`] is the rule as a plain function, for the callers that refuse a
//! URL before they queue anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::tls::{crypto_provider, load_pem_certs, TlsSetupError};

/// Trust and scheme settings of every outgoing HTTP call (`[outbound]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundSettings {
    /// PEM files of CA certificates trusted beside the system's roots (a private CA of the
    /// OIDC provider or of a relying party).
    pub ca_files: Vec<PathBuf>,
    /// Whether plain `http://` targets are allowed (off: only `https://`).
    pub allow_http: bool,
    /// Skip the system's roots (trust only `ca_files`): for tests that must prove a certificate
    /// from an unknown CA is refused on a machine whose roots are not under their control.
    pub without_system_roots: bool,
    /// Hosts with a trust of their own: for each, only its CA file's certificates.
    pub targets: Vec<TargetTrust>,
}

/// The trust of one target host (`[[outbound.targets]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTrust {
    /// Host name or IP address as it appears in the URLs (case does not matter).
    pub host: String,
    /// PEM file of the CA certificates trusted for this host, and only those.
    pub ca_file: PathBuf,
}

/// The client type every outgoing call uses.
pub type OutboundClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Builds a pooled client under `settings`; `connect_timeout` bounds the TCP connect. Fails
/// only when a configured CA file cannot be read or holds no certificate.
pub fn client<B>(
    settings: &OutboundSettings,
    connect_timeout: Duration,
) -> Result<OutboundClient<B>, TlsSetupError>
where
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
{
    let roots = roots(settings)?;
    let config = if settings.targets.is_empty() {
        tls_config().with_root_certificates(roots)
    } else {
        let verifier = PerHostVerifier::new(roots, &settings.targets)?;
        tls_config()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    client_with_config(
        config.with_no_client_auth(),
        settings.allow_http,
        connect_timeout,
    )
}

fn tls_config(
) -> tokio_rustls::rustls::ConfigBuilder<ClientConfig, tokio_rustls::rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("the ring provider supports the default versions"))
}

/// The trust anchors `settings` ask for.
fn roots(settings: &OutboundSettings) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if !settings.without_system_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "a system root certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system roots loaded for outgoing HTTPS");
    }
    for file in &settings.ca_files {
        for cert in load_pem_certs(file)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// Verifies a server's certificate against its host's own CA when it has one, against the
/// shared roots otherwise.
#[derive(Debug)]
struct PerHostVerifier {
    /// `None`: no shared roots at all (every host without its own trust is refused).
    shared: Option<Arc<WebPkiServerVerifier>>,
    by_host: HashMap<String, Arc<WebPkiServerVerifier>>,
}

impl PerHostVerifier {
    fn new(shared_roots: RootCertStore, targets: &[TargetTrust]) -> Result<Self, TlsSetupError> {
        let verifier = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider()).build()
        };
        let shared = if shared_roots.is_empty() {
            None
        } else {
            Some(verifier(shared_roots).map_err(|e| {
                TlsSetupError::Rustls(tokio_rustls::rustls::Error::General(e.to_string()))
            })?)
        };
        let mut by_host = HashMap::new();
        for target in targets {
            let mut roots = RootCertStore::empty();
            for cert in load_pem_certs(&target.ca_file)? {
                roots.add(cert)?;
            }
            let v = verifier(roots).map_err(|e| TlsSetupError::Pem {
                path: target.ca_file.clone(),
                message: e.to_string(),
            })?;
            by_host.insert(normalized_host(&target.host), v);
        }
        Ok(Self { shared, by_host })
    }

    fn for_name(&self, name: &ServerName<'_>) -> Option<&Arc<WebPkiServerVerifier>> {
        let host = match name {
            ServerName::DnsName(d) => normalized_host(d.as_ref()),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => String::new(),
        };
        self.by_host.get(&host).or(self.shared.as_ref())
    }

    /// Any verifier, for the signature checks (they do not depend on the trust anchors).
    fn any(&self) -> &Arc<WebPkiServerVerifier> {
        match &self.shared {
            Some(v) => v,
            None => self
                .by_host
                .values()
                .next()
                .unwrap_or_else(|| unreachable!("built with at least one target")),
        }
    }
}

/// A host name as the targets table keys it: lower case, without the brackets of an IPv6
/// literal and without a trailing dot.
fn normalized_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl ServerCertVerifier for PerHostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        match self.for_name(server_name) {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(tokio_rustls::rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.any().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.any().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any().supported_verify_schemes()
    }
}

/// A client with the TLS `config`.
fn client_with_config<B>(
    config: ClientConfig,
    allow_http: bool,
    connect_timeout: Duration,
) -> Result<OutboundClient<B>, TlsSetupError>
where
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder = HttpsConnectorBuilder::new().with_tls_config(config);
    let connector = if allow_http {
        builder.https_or_http().enable_http1().wrap_connector(http)
    } else {
        builder.https_only().enable_http1().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// An error with its causes, `outer: inner: innermost`: the client's own error says only
/// "client error (Connect)", the cause says which certificate was refused and why.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Whether `uri` may be called: absolute, with a host, `https://` (or `http://` when allowed).
pub fn check_scheme(uri: &Uri, allow_http: bool) -> Result<(), String> {
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(_)) if allow_http => Ok(()),
        (Some("http"), Some(_)) => Err(
            "plain http:// is refused (https:// only; `[outbound] allow_http = true` allows it)"
                .into(),
        ),
        _ => Err("the URL must be absolute https://".into()),
    }
}

/// Whether `url` is allowed by a client's callback allow-list: an entry that is a URL prefix
/// (`https://rp.example/cb/`) must start the URL; a bare host name (`rp.example`) must equal its
/// host. An empty list allows nothing.
pub fn callback_allowed(url: &Uri, allow: &[String]) -> bool {
    let text = url.to_string();
    let host = url.host().unwrap_or_default();
    allow.iter().any(|entry| {
        if entry.contains("://") {
            // A prefix that ends mid-host must not match a longer host: `https://rp.example`
            // must not allow `https://rp.example.evil/`.
            text.starts_with(entry.as_str())
                && (entry.ends_with('/')
                    || matches!(
                        text.as_bytes().get(entry.len()),
                        None | Some(b'/' | b':' | b'?')
                    ))
        } else {
            host.eq_ignore_ascii_case(entry)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn https_is_allowed_and_http_only_when_the_setting_says_so() {
        assert!(check_scheme(&uri("https://rp.example/cb"), false).is_ok());
        assert!(check_scheme(&uri("http://rp.example/cb"), false).is_err());
        assert!(check_scheme(&uri("http://127.0.0.1:9/cb"), true).is_ok());
        assert!(check_scheme(&uri("/relative"), true).is_err());
        assert!(check_scheme(&uri("ftp://rp.example/x"), true).is_err());
    }

    #[test]
    fn allow_list_entries_are_prefixes_or_hosts_and_a_prefix_never_matches_a_longer_host() {
        let allow = vec![
            "https://rp.example/callbacks/".to_owned(),
            "https://other.example".to_owned(),
            "bank.example".to_owned(),
        ];
        assert!(callback_allowed(
            &uri("https://rp.example/callbacks/1"),
            &allow
        ));
        assert!(!callback_allowed(&uri("https://rp.example/admin"), &allow));
        assert!(callback_allowed(&uri("https://other.example/x"), &allow));
        assert!(callback_allowed(
            &uri("https://other.example:8443/x"),
            &allow
        ));
        assert!(!callback_allowed(
            &uri("https://other.example.evil/x"),
            &allow
        ));
        assert!(callback_allowed(&uri("https://BANK.example/any"), &allow));
        assert!(!callback_allowed(
            &uri("https://169.254.169.254/latest"),
            &allow
        ));
        assert!(!callback_allowed(
            &uri("https://rp.example/callbacks/1"),
            &[]
        ));
    }
}
